//! The points ledger through the API: concurrency, idempotency, FIFO expiry, holds, history.
//! Also the fixtures the purchase, tier and property tests share.

use std::sync::atomic::{AtomicU64, Ordering};

use coalition::foundation::clock::DAY_MS;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Like `both_backends!`, with the periodic background jobs off: these tests run the jobs
/// explicitly and assert their reports, which a job firing on its own would race with.
#[macro_export]
macro_rules! both_backends_no_jobs {
    ($name:ident, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::helpers::TestApp) {
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                run($crate::ledger::spawn_quiet($crate::helpers::Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                run($crate::ledger::spawn_quiet($crate::helpers::Backend::Postgres).await).await;
            }
        }
    };
}

/// A test app whose background jobs are off.
pub async fn spawn_quiet(backend: crate::helpers::Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| config.jobs.enabled = false).await
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Creates a brand (1 point per 100 cents) with the given exclusions.
pub async fn brand(app: &TestApp, id: &str, skus: &[&str], categories: &[&str]) {
    let (status, body) = app
        .post(
            "/brands",
            &app.admin_key,
            &format!("brand-{id}"),
            &json!({ "id": id, "name": id, "earn_points": 1, "earn_unit_cents": 100,
                     "excluded_skus": skus, "excluded_categories": categories }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create brand: {body}");
}

static PHONE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Registers a member and returns its id.
pub async fn member(app: &TestApp) -> String {
    let n = PHONE_SEQ.fetch_add(1, Ordering::SeqCst);
    let salt = u64::from(uuid::Uuid::new_v4().as_fields().1) % 1000;
    let phone = format!("+86139{:05}{:03}", n % 100_000, salt);
    let (status, body) = app
        .post(
            "/members",
            &app.admin_key,
            &format!("member-{phone}"),
            &json!({ "phone": phone, "name": "Test Member" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "register member: {body}");
    body["id"].as_str().expect("member id").to_owned()
}

/// Creates a key and returns its secret.
pub async fn key(app: &TestApp, role: &str, brand: Option<&str>, member: Option<&str>) -> String {
    let (status, body) = app
        .post(
            "/keys",
            &app.admin_key,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "role": role, "brand_id": brand, "member_id": member, "label": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create key: {body}");
    body["secret"].as_str().expect("secret").to_owned()
}

/// Credits points by an admin adjustment.
pub async fn credit(app: &TestApp, member: &str, points: i64) -> Value {
    adjust(app, member, points, &uuid::Uuid::new_v4().to_string())
        .await
        .1
}

/// An admin adjustment with a given idempotency key.
pub async fn adjust(app: &TestApp, member: &str, points: i64, idem: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/members/{member}/points/adjustments"),
        &app.admin_key,
        idem,
        &json!({ "points": points, "reason": "test" }),
    )
    .await
}

/// The member's points view.
pub async fn points(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "points: {body}");
    body
}

/// Runs a job endpoint.
pub async fn run_job(app: &TestApp, job: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/jobs/{job}"),
            &app.admin_key,
            &uuid::Uuid::new_v4().to_string(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "job {job}: {body}");
    body
}

async fn scalar(app: &TestApp, sql: &str, bind: &str) -> i64 {
    let (v,): (i64,) = sqlx::query_as(sql)
        .bind(bind)
        .fetch_one(app.state.store.read())
        .await
        .expect("scalar query");
    v
}

/// The ledger's invariants over the whole database: every entry has ≥ 2 postings summing to
/// zero; every wallet's balance equals the sum of its postings and of its remaining lots; held
/// equals the held postings and the pending holds; debt equals minus the receivable postings;
/// nothing is negative.
pub async fn check_invariants(app: &TestApp) {
    let pool = app.state.store.read();
    let (total,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings")
            .fetch_one(pool)
            .await
            .expect("sum");
    assert_eq!(total, 0, "all postings must sum to zero");
    let bad: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT entry_id, CAST(SUM(amount) AS BIGINT), COUNT(*) FROM ledger_postings
         GROUP BY entry_id HAVING SUM(amount) <> 0 OR COUNT(*) < 2",
    )
    .fetch_all(pool)
    .await
    .expect("entries");
    assert!(bad.is_empty(), "unbalanced entries: {bad:?}");
    let (empty,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ledger_entries e
         WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id)",
    )
    .fetch_one(pool)
    .await
    .expect("empty entries");
    assert_eq!(empty, 0, "entries without postings");
    let wallets: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT member_id, balance, held, debt FROM point_wallets")
            .fetch_all(pool)
            .await
            .expect("wallets");
    for (m, balance, held, debt) in wallets {
        assert!(
            balance >= 0 && held >= 0 && debt >= 0,
            "negative wallet {m}"
        );
        // The debt rule: every credit pays debt first, so no committed write leaves spendable
        // points beside debt (`balance - debt` is what the member really has).
        assert!(
            balance == 0 || debt == 0,
            "wallet {m} has {balance} spendable points and {debt} of debt"
        );
        let postings = |account: &'static str| {
            let m = m.clone();
            async move {
                scalar(
                    app,
                    &format!(
                        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings
                         WHERE member_id = $1 AND account = '{account}'"
                    ),
                    &m,
                )
                .await
            }
        };
        assert_eq!(postings("wallet").await, balance, "wallet postings of {m}");
        assert_eq!(postings("held").await, held, "held postings of {m}");
        assert_eq!(
            -postings("receivable").await,
            debt,
            "receivable postings of {m}"
        );
        let lots = scalar(
            app,
            "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots WHERE member_id = $1",
            &m,
        )
        .await;
        assert_eq!(lots, balance, "remaining lots of {m}");
        let pending = scalar(
            app,
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM point_holds
             WHERE member_id = $1 AND status = 'pending'",
            &m,
        )
        .await;
        assert_eq!(pending, held, "pending holds of {m}");
    }
    let (negative,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM point_lots WHERE remaining < 0 OR remaining > amount")
            .fetch_one(pool)
            .await
            .expect("lots");
    assert_eq!(negative, 0);
}

// ---------------------------------------------------------------------------------------------
// Tests

both_backends_no_jobs!(concurrent_spends_never_overdraw, |app| async move {
    let m = member(&app).await;
    credit(&app, &m, 1_000).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            adjust(&app, &m, -30, &format!("spend-{i}")).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            StatusCode::CREATED => ok += 1,
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(body["code"], "insufficient_points"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        ok,
        1_000 / 30,
        "exactly floor(balance / amount) spends succeed"
    );
    let view = points(&app, &m).await;
    assert_eq!(view["available"], 1_000 - 30 * (1_000 / 30));
    check_invariants(&app).await;
    if let Ok(app) = std::sync::Arc::try_unwrap(app) {
        app.stop().await;
    }
});

both_backends_no_jobs!(concurrent_holds_never_overdraw, |app| async move {
    let m = member(&app).await;
    let mkey = key(&app, "member", None, Some(&m)).await;
    credit(&app, &m, 500).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (app, m, mkey) = (app.clone(), m.clone(), mkey.clone());
        tasks.push(tokio::spawn(async move {
            app.post(
                &format!("/members/{m}/points/holds"),
                &mkey,
                &format!("hold-{i}"),
                &json!({ "points": 70 }),
            )
            .await
            .0
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.expect("task") == StatusCode::CREATED {
            ok += 1;
        }
    }
    assert_eq!(ok, 500 / 70);
    let view = points(&app, &m).await;
    assert_eq!(view["held"], 70 * (500 / 70));
    assert_eq!(view["available"], 500 - 70 * (500 / 70));
    check_invariants(&app).await;
    if let Ok(app) = std::sync::Arc::try_unwrap(app) {
        app.stop().await;
    }
});

both_backends_no_jobs!(same_key_twenty_times_posts_once, |app| async move {
    let m = member(&app).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, m) = (app.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            adjust(&app, &m, 100, "one-key").await
        }));
    }
    let mut entries = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        // Concurrent duplicates wait for the first request's commit and replay its response.
        assert_eq!(status, StatusCode::CREATED, "{body}");
        entries.insert(body["entry_id"].as_str().expect("entry").to_owned());
    }
    assert_eq!(entries.len(), 1, "every response is the original one");
    assert_eq!(points(&app, &m).await["available"], 100);
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ledger_entries WHERE member_id = $1 AND kind = 'adjustment'",
    )
    .bind(&m)
    .fetch_one(app.state.store.read())
    .await
    .expect("count");
    assert_eq!(count, 1);
    // The same key with a different request is refused.
    let (status, body) = adjust(&app, &m, 101, "one-key").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "idempotency_key_reused");
    // A replay carries the marker header and the same body.
    let resp = app
        .client
        .post(format!("{}/members/{m}/points/adjustments", app.base))
        .bearer_auth(&app.admin_key)
        .header("Idempotency-Key", "one-key")
        .json(&json!({ "points": 100, "reason": "test" }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    check_invariants(&app).await;
    if let Ok(app) = std::sync::Arc::try_unwrap(app) {
        app.stop().await;
    }
});

both_backends_no_jobs!(expiry_is_fifo_across_many_lots, |app| async move {
    let m = member(&app).await;
    // Ten lots of 10 points, one a day (default policy: 365 days after earning).
    let mut lot_expiry = Vec::new();
    for _ in 0..10 {
        let body = credit(&app, &m, 10).await;
        lot_expiry.push(body["expires_at_ms"].as_i64().expect("expiry"));
        app.clock.advance_ms(DAY_MS);
    }
    // Spending 25 draws the oldest lots first: 10 + 10 + 5.
    let (status, body) = adjust(&app, &m, -25, "spend-25").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let draws: Vec<(i64, i64)> = body["draws"]
        .as_array()
        .expect("draws")
        .iter()
        .map(|d| {
            (
                d["expires_at_ms"].as_i64().unwrap_or(0),
                d["points"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        draws,
        vec![(lot_expiry[0], 10), (lot_expiry[1], 10), (lot_expiry[2], 5)]
    );
    // Move to just after the fourth lot's expiry: lots 3 (5 left) and 4 (10) are due.
    app.clock.set_ms(lot_expiry[3] + 1);
    let view = points(&app, &m).await;
    assert_eq!(view["available"], 60, "due lots never count as available");
    assert_eq!(view["upcoming_expiry"][0]["expires_at_ms"], lot_expiry[4]);
    let report = run_job(&app, "expiry").await;
    assert_eq!(report["points"], 15);
    assert_eq!(report["lots"], 2);
    let again = run_job(&app, "expiry").await;
    assert_eq!(again["points"], 0, "running the job twice expires once");
    let (expired,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings
         WHERE account = 'expiry'",
    )
    .fetch_one(app.state.store.read())
    .await
    .expect("expired");
    assert_eq!(expired, 15);
    assert_eq!(points(&app, &m).await["available"], 60);
    // Everything left expires after the last lot's date, even without the job: a spend first
    // expires what is due.
    app.clock.set_ms(lot_expiry[9] + 1);
    let (status, body) = adjust(&app, &m, -1, "late-spend").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "insufficient_points");
    assert_eq!(run_job(&app, "expiry").await["points"], 60);
    check_invariants(&app).await;
    app.stop().await;
});

both_backends_no_jobs!(holds_capture_release_and_timeout, |app| async move {
    brand(&app, "cinema", &[], &[]).await;
    let m = member(&app).await;
    let mkey = key(&app, "member", None, Some(&m)).await;
    let counter = key(&app, "counter", Some("cinema"), None).await;
    let other = member(&app).await;
    let other_key = key(&app, "member", None, Some(&other)).await;
    credit(&app, &m, 100).await;
    let hold_path = format!("/members/{m}/points/holds");

    // Reserve 40: available drops, held rises.
    let (status, hold) = app
        .post(
            &hold_path,
            &mkey,
            "h1",
            &json!({ "points": 40, "brand_id": "cinema" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let h1 = hold["id"].as_str().expect("id").to_owned();
    let view = points(&app, &m).await;
    assert_eq!(
        (view["available"].as_i64(), view["held"].as_i64()),
        (Some(60), Some(40))
    );
    assert_eq!(view["balance"], 100);
    // Another member may not touch it; the brand's counter may capture 30 of it.
    let (status, _) = app
        .post(
            &format!("/holds/{h1}/capture"),
            &other_key,
            "c1",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, captured) = app
        .post(
            &format!("/holds/{h1}/capture"),
            &counter,
            "c1",
            &json!({ "points": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["captured"], 30);
    // The capture is points redeemed at the cinema: one settle event, for the captured 30.
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT brand_id, points FROM settle_events
         WHERE kind = 'points-redeemed' AND subject_kind = 'hold' AND subject_id = $1",
    )
    .bind(&h1)
    .fetch_all(app.state.store.read())
    .await
    .expect("events");
    assert_eq!(events, [("cinema".to_owned(), 30)]);
    let view = points(&app, &m).await;
    assert_eq!(
        (view["available"].as_i64(), view["held"].as_i64()),
        (Some(70), Some(0))
    );
    let (status, body) = app
        .post(&format!("/holds/{h1}/release"), &mkey, "r1", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "hold_not_pending");

    // Release gives the points back with their original expiry.
    let before: Vec<i64> = view["lots"]
        .as_array()
        .expect("lots")
        .iter()
        .map(|l| l["expires_at_ms"].as_i64().unwrap_or(0))
        .collect();
    let (_, hold) = app
        .post(&hold_path, &mkey, "h2", &json!({ "points": 20 }))
        .await;
    let h2 = hold["id"].as_str().expect("id").to_owned();
    let (status, released) = app
        .post(&format!("/holds/{h2}/release"), &mkey, "r2", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["status"], "released");
    let view = points(&app, &m).await;
    assert_eq!(view["available"], 70);
    for lot in view["lots"].as_array().expect("lots") {
        assert_eq!(lot["expires_at_ms"].as_i64(), before.first().copied());
    }

    // A hold past its time can't be captured; the job releases it.
    let (_, hold) = app
        .post(
            &hold_path,
            &mkey,
            "h3",
            &json!({ "points": 10, "ttl_ms": 60_000 }),
        )
        .await;
    let h3 = hold["id"].as_str().expect("id").to_owned();
    app.clock.advance_ms(61_000);
    let (status, body) = app
        .post(&format!("/holds/{h3}/capture"), &mkey, "c3", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "hold_expired");
    let report = run_job(&app, "holds").await;
    assert_eq!(report["holds"], 1);
    assert_eq!(report["points"], 10);
    let (_, hold) = app.get(&format!("/holds/{h3}"), &mkey).await;
    assert_eq!(hold["status"], "expired");
    assert_eq!(run_job(&app, "holds").await["holds"], 0);
    assert_eq!(points(&app, &m).await["available"], 70);

    // More than available is refused.
    let (status, body) = app
        .post(&hold_path, &mkey, "h4", &json!({ "points": 71 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "insufficient_points");
    assert_eq!(body["extra"]["available"], 70);
    // Someone else's key may not hold this member's points.
    let (status, _) = app
        .post(&hold_path, &other_key, "h5", &json!({ "points": 1 }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    check_invariants(&app).await;
    app.stop().await;
});

both_backends_no_jobs!(unknown_and_blocked_members, |app| async move {
    let (status, body) = app
        .get("/members/nosuchmember/points", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = adjust(&app, "nosuchmember", 5, "k1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let m = member(&app).await;
    credit(&app, &m, 50).await;
    let (status, body) = app
        .post(
            &format!("/members/{m}/block"),
            &app.admin_key,
            "block",
            &json!({ "reason": "abuse" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/members/{m}/points/holds"),
            &app.admin_key,
            "hold",
            &json!({ "points": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "member_blocked");
    assert_eq!(points(&app, &m).await["available"], 50);
    app.stop().await;
});

both_backends_no_jobs!(history_is_paged_newest_first, |app| async move {
    let m = member(&app).await;
    for i in 1..=5 {
        credit(&app, &m, i).await;
    }
    let (status, page) = app
        .get(
            &format!("/members/{m}/points/history?limit=2"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let amounts = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["points"].as_i64().unwrap_or(0))
            .collect()
    };
    assert_eq!(amounts(&page), vec![5, 4]);
    let mut seen = amounts(&page);
    let mut cursor = page["next_before"].as_str().map(str::to_owned);
    while let Some(before) = cursor {
        let (_, page) = app
            .get(
                &format!("/members/{m}/points/history?limit=2&before={before}"),
                &app.admin_key,
            )
            .await;
        seen.extend(amounts(&page));
        cursor = page["next_before"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    app.stop().await;
});

/// The periodic runner started by `server::run` expires lots and releases holds on its own, and
/// stops with the server (`stop` would hang otherwise).
async fn background_jobs_run_and_stop(backend: crate::helpers::Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.jobs.holds_interval_ms = 1_000;
        config.jobs.expiry_interval_ms = 1_000;
    })
    .await;
    let m = member(&app).await;
    credit(&app, &m, 100).await;
    let (status, _) = app
        .post(
            &format!("/members/{m}/points/holds"),
            &app.admin_key,
            "bg-hold",
            &json!({ "points": 40, "ttl_ms": 60_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Past both the hold's timeout and the lot's expiry.
    app.clock.advance_ms(366 * DAY_MS);
    // The runner ticks on real time (1 s here); wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let expired = scalar(
            &app,
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings
             WHERE account = 'expiry' AND $1 <> ''",
            "x",
        )
        .await;
        let view = points(&app, &m).await;
        if expired == 100 && view["held"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not run: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    check_invariants(&app).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("the server and its jobs stop on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_jobs_run_and_stop_sqlite() {
    background_jobs_run_and_stop(crate::helpers::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_jobs_run_and_stop_postgres() {
    background_jobs_run_and_stop(crate::helpers::Backend::Postgres).await;
}

both_backends_no_jobs!(openapi_documents_ledger_endpoints, |app| async move {
    let (status, doc) = app
        .call(reqwest::Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/members/{member_id}/points", "get"),
        ("/members/{member_id}/points/history", "get"),
        ("/members/{member_id}/points/holds", "post"),
        ("/members/{member_id}/points/adjustments", "post"),
        ("/holds/{hold_id}/capture", "post"),
        ("/holds/{hold_id}/release", "post"),
        ("/brands/{brand_id}/purchases", "post"),
        ("/brands/{brand_id}/purchases/{order_id}", "get"),
        ("/brands/{brand_id}/purchases/{order_id}/refunds", "post"),
        ("/tiers", "put"),
        ("/tiers/evaluate", "post"),
        ("/members/{member_id}/tier", "get"),
        ("/jobs/expiry", "post"),
        ("/jobs/holds", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    for schema in [
        "PointsView",
        "Hold",
        "PurchaseView",
        "RefundView",
        "TierView",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    app.stop().await;
});
