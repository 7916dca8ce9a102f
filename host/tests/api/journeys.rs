//! Journeys over HTTP on both databases: a welcome journey issues its coupon once however
//! often and concurrently it runs; a silent-member journey grants points funded by a brand
//! (with the brand's settle event); per-member and total caps; the start/end window; dry runs
//! that match the real run and write nothing; bought-at-A-not-at-B; who may create what; and
//! problem documents for bad input.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{
    assert_problem, count, create_brand, create_key, get, idem, member_id, send_json,
};
use crate::helpers::TestApp;
use crate::stages::{purchase, run_stages};

const DAY_MS: i64 = 86_400_000;

async fn template(app: &TestApp, id: &str, brand: &str) {
    let (status, body) = app
        .post(
            "/coupon-templates",
            &app.admin_key,
            &idem(),
            &json!({ "id": id, "title": "5 off", "funding_brand": brand,
                "honouring_brand": brand, "plugin": "coupon-logic",
                "params": { "kind": "fixed-off", "cents": "500" },
                "validity_days": 30, "value_cents": 500 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn create(app: &TestApp, key: &str, body: Value) -> String {
    let (status, journey) = app.post("/journeys", key, &idem(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{journey}");
    journey["id"].as_str().expect("id").to_owned()
}

async fn run_journeys(app: &TestApp, journey: Option<&str>) -> Value {
    let path = match journey {
        Some(id) => format!("/jobs/journeys?journey_id={id}"),
        None => "/jobs/journeys".to_owned(),
    };
    let (status, body) = app
        .call(
            Method::POST,
            &path,
            Some(&app.admin_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn dry_run(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/journeys/{id}/dry-run"),
            Some(key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn journey(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/journeys/{id}"), &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn journey_coupons(app: &TestApp, member: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM coupons WHERE source_kind = 'journey'
         AND member_id = $1",
    )
    .bind(member)
    .fetch_one(app.state.store.read())
    .await
    .expect("count");
    n
}

async fn available(app: &TestApp, member: &str) -> i64 {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["available"].as_i64().expect("available")
}

both_backends!(a_welcome_journey_issues_its_coupon_once, |app| async move {
    create_brand(&app, "shop").await;
    let shop = create_key(&app, "brand", Some("shop"), None).await;
    template(&app, "welcome-5", "shop").await;
    let a = member_id(&app, "+8613800000011", "A").await;
    let b = member_id(&app, "+8613800000012", "B").await;
    let id = create(
        &app,
        &shop,
        json!({ "title": "Welcome", "trigger": { "kind": "joined", "within_days": 30 },
            "actions": [{ "kind": "issue_coupon", "template_id": "welcome-5" }],
            "status": "active" }),
    )
    .await;

    let dry = dry_run(&app, &shop, &id).await;
    assert_eq!(dry["would_touch"], 2, "{dry}");
    assert_eq!(dry["runs_now"], true, "{dry}");
    let mut sample: Vec<String> = dry["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    sample.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(sample, both);
    assert_eq!(count(&app, "journey_touches").await, 0);
    assert_eq!(journey_coupons(&app, &a).await, 0);

    // Concurrent runs, then a repeated one: each member gets one coupon.
    let runs = (0..4).map(|_| run_journeys(&app, None));
    let reports = futures_util::future::join_all(runs).await;
    let touched: i64 = reports
        .iter()
        .map(|r| r["journeys"][0]["touched"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(touched, 2, "{reports:?}");
    let again = run_journeys(&app, Some(&id)).await;
    assert_eq!(again["journeys"][0]["touched"], 0, "{again}");
    assert_eq!(journey_coupons(&app, &a).await, 1);
    assert_eq!(journey_coupons(&app, &b).await, 1);
    let view = journey(&app, &id).await;
    assert_eq!(view["counts"]["touched"], 2, "{view}");
    assert_eq!(view["counts"]["issue_coupon"], 2, "{view}");
    assert_eq!(view["owner_brand"], "shop");

    // A member who joins later is welcomed by the next run; nothing else changes.
    let c = member_id(&app, "+8613800000013", "C").await;
    assert_eq!(dry_run(&app, &shop, &id).await["would_touch"], 1);
    assert_eq!(run_journeys(&app, None).await["journeys"][0]["touched"], 1);
    assert_eq!(journey_coupons(&app, &c).await, 1);
    assert_eq!(journey_coupons(&app, &a).await, 1);

    // The brand's own list has it; a paused journey does not run.
    let list = get(&app, "/journeys", &shop).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1), "{}", list.text);
    let paused = send_json(
        &app,
        Method::PATCH,
        &format!("/journeys/{id}"),
        &shop,
        &json!({ "status": "paused" }),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    member_id(&app, "+8613800000014", "D").await;
    assert_eq!(run_journeys(&app, None).await["journeys"], json!([]));
    assert_eq!(dry_run(&app, &shop, &id).await["runs_now"], false);
    app.stop().await;
});

both_backends!(
    a_silent_journey_grants_points_funded_by_a_brand,
    |app| async move {
        create_brand(&app, "shop").await;
        let counter = create_key(&app, "counter", Some("shop"), None).await;
        let m = member_id(&app, "+8613800000021", "Silent").await;
        let active = member_id(&app, "+8613800000022", "Busy").await;
        purchase(&app, &counter, "shop", &m, 3_000).await;
        app.clock.advance_ms(31 * DAY_MS);
        purchase(&app, &counter, "shop", &active, 3_000).await;
        run_stages(&app).await;

        let once = create(
            &app,
            &app.admin_key,
            json!({ "title": "Wake up", "trigger": { "kind": "stage_changed", "to": "silent" },
            "actions": [{ "kind": "grant_points", "funding_brand_id": "shop", "points": 100 }],
            "status": "active" }),
        )
        .await;
        let twice = create(
        &app,
        &app.admin_key,
        json!({ "title": "Wake up again", "trigger": { "kind": "stage_changed", "to": "silent" },
            "actions": [{ "kind": "grant_points", "funding_brand_id": "shop", "points": 10 }],
            "per_member_cap": 2, "status": "active" }),
    )
    .await;
        assert_eq!(dry_run(&app, &app.admin_key, &once).await["would_touch"], 1);
        let before = available(&app, &m).await;
        run_journeys(&app, None).await;
        assert_eq!(available(&app, &m).await, before + 110);
        let (events,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM settle_events
         WHERE subject_kind = 'journey' AND brand_id = 'shop' AND kind = 'points-issued'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("events");
        assert_eq!(events, 2);
        assert_eq!(journey(&app, &once).await["counts"]["grant_points"], 1);

        // Back to buying, then silent again: a new occurrence. The journey capped at one touch
        // per member leaves the member alone; the one capped at two acts again.
        purchase(&app, &counter, "shop", &m, 3_000).await;
        run_stages(&app).await;
        app.clock.advance_ms(31 * DAY_MS);
        run_stages(&app).await;
        let mid = available(&app, &m).await;
        run_journeys(&app, None).await;
        run_journeys(&app, None).await;
        assert_eq!(available(&app, &m).await, mid + 10);
        // The busy member fell silent meanwhile too: once for each journey.
        assert_eq!(journey(&app, &once).await["counts"]["touched"], 2);
        assert_eq!(journey(&app, &twice).await["counts"]["touched"], 3);
        assert_eq!(journey(&app, &twice).await["counts"]["members"], 2);
        app.stop().await;
    }
);

both_backends!(caps_windows_and_bought_at_not_at, |app| async move {
    create_brand(&app, "shop").await;
    create_brand(&app, "cafe").await;
    let shop_counter = create_key(&app, "counter", Some("shop"), None).await;
    let cafe_counter = create_key(&app, "counter", Some("cafe"), None).await;
    let cafe = create_key(&app, "brand", Some("cafe"), None).await;
    let x = member_id(&app, "+8613800000031", "X").await;
    let y = member_id(&app, "+8613800000032", "Y").await;
    let z = member_id(&app, "+8613800000033", "Z").await;
    purchase(&app, &shop_counter, "shop", &x, 1_000).await;
    purchase(&app, &shop_counter, "shop", &y, 1_000).await;
    purchase(&app, &cafe_counter, "cafe", &y, 1_000).await;

    // Bought at the shop, never at the cafe: only X; the cafe's own journey tells the cafe.
    let win_back = create(
        &app,
        &cafe,
        json!({ "title": "Try the cafe",
            "trigger": { "kind": "bought_at_not_at", "brand_a": "shop", "brand_b": "cafe" },
            "actions": [{ "kind": "grant_points", "funding_brand_id": "cafe", "points": 5 },
                        { "kind": "webhook", "brand_id": "cafe" }],
            "status": "active" }),
    )
    .await;
    let dry = dry_run(&app, &cafe, &win_back).await;
    assert_eq!(dry["would_touch"], 1, "{dry}");
    assert_eq!(dry["sample"], json!([x.clone()]), "{dry}");
    let report = run_journeys(&app, Some(&win_back)).await;
    assert_eq!(report["journeys"][0]["touched"], 1, "{report}");
    let view = journey(&app, &win_back).await;
    assert_eq!(view["counts"]["webhook"], 1, "{view}");
    assert_eq!(view["counts"]["grant_points"], 1, "{view}");

    // An RFM audience (the campaign segment's range): of the two buyers, Y spent more.
    let big = create(
        &app,
        &app.admin_key,
        json!({ "title": "Big spenders", "trigger": { "kind": "first_purchase" },
            "audience": { "rfm": { "monetary_min": 2 } },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }] }),
    )
    .await;
    let dry = dry_run(&app, &app.admin_key, &big).await;
    assert_eq!(dry["sample"], json!([y.clone()]), "{dry}");
    assert_eq!(dry["runs_now"], false, "{dry}");
    let resp = send_json(
        &app,
        Method::POST,
        "/journeys",
        &app.admin_key,
        &json!({ "title": "Bad", "trigger": { "kind": "first_purchase" },
            "audience": { "rfm": { "monetary_min": 6 } },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }] }),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_rfm_range");

    // A total cap of 2 over three joined members, however often it runs.
    let capped = create(
        &app,
        &app.admin_key,
        json!({ "title": "First two", "trigger": { "kind": "joined", "within_days": 30 },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }],
            "total_cap": 2, "status": "active" }),
    )
    .await;
    assert_eq!(
        dry_run(&app, &app.admin_key, &capped).await["would_touch"],
        2
    );
    let report = run_journeys(&app, Some(&capped)).await;
    assert_eq!(report["journeys"][0]["touched"], 2, "{report}");
    assert_eq!(report["journeys"][0]["cap_reached"], true, "{report}");
    run_journeys(&app, Some(&capped)).await;
    assert_eq!(journey(&app, &capped).await["counts"]["touched"], 2);
    assert_eq!(
        dry_run(&app, &app.admin_key, &capped).await["would_touch"],
        0
    );

    // A window: nothing before the start, the members after it, nothing after the end.
    let now = {
        use coalition::foundation::clock::Clock;
        app.clock.now_ms()
    };
    let windowed = create(
        &app,
        &app.admin_key,
        json!({ "title": "Later", "trigger": { "kind": "first_purchase" },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }],
            "starts_at_ms": now + DAY_MS, "ends_at_ms": now + 3 * DAY_MS,
            "status": "active" }),
    )
    .await;
    assert_eq!(
        run_journeys(&app, Some(&windowed)).await["journeys"][0]["touched"],
        0
    );
    app.clock.advance_ms(2 * DAY_MS);
    assert_eq!(
        run_journeys(&app, Some(&windowed)).await["journeys"][0]["touched"],
        2
    );
    purchase(&app, &shop_counter, "shop", &z, 1_000).await;
    app.clock.advance_ms(2 * DAY_MS);
    assert_eq!(
        run_journeys(&app, Some(&windowed)).await["journeys"][0]["touched"],
        0
    );
    assert_eq!(journey(&app, &windowed).await["counts"]["touched"], 2);
    app.stop().await;
});

both_backends!(who_may_create_journeys_and_bad_input, |app| async move {
    create_brand(&app, "shop").await;
    create_brand(&app, "cafe").await;
    template(&app, "cafe-5", "cafe").await;
    let shop = create_key(&app, "brand", Some("shop"), None).await;
    let cafe = create_key(&app, "brand", Some("cafe"), None).await;
    let counter = create_key(&app, "counter", Some("shop"), None).await;
    let welcome = |action: Value| {
        json!({ "title": "W", "trigger": { "kind": "joined", "within_days": 30 },
            "actions": [action] })
    };
    for action in [
        json!({ "kind": "grant_points", "funding_brand_id": "cafe", "points": 10 }),
        json!({ "kind": "issue_coupon", "template_id": "cafe-5" }),
        json!({ "kind": "webhook", "brand_id": "cafe" }),
    ] {
        let resp = send_json(&app, Method::POST, "/journeys", &shop, &welcome(action)).await;
        assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    }
    let grant = json!({ "kind": "grant_points", "funding_brand_id": "shop", "points": 10 });
    let resp = send_json(
        &app,
        Method::POST,
        "/journeys",
        &counter,
        &welcome(grant.clone()),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(count(&app, "journeys").await, 0);

    let id = create(&app, &shop, welcome(grant.clone())).await;
    assert_eq!(journey(&app, &id).await["status"], "draft");
    // Another brand neither reads, changes nor dry-runs it.
    assert_eq!(
        get(&app, &format!("/journeys/{id}"), &cafe).await.status,
        StatusCode::FORBIDDEN
    );
    let resp = send_json(
        &app,
        Method::PATCH,
        &format!("/journeys/{id}"),
        &cafe,
        &json!({ "status": "active" }),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::POST,
        &format!("/journeys/{id}/dry-run"),
        &cafe,
        &json!({}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(get(&app, "/journeys", &cafe).await.body, json!([]));
    let run = send_json(&app, Method::POST, "/jobs/journeys", &shop, &json!({})).await;
    assert_problem(&run, StatusCode::FORBIDDEN, "forbidden");

    // Ended is final.
    for (status, expected) in [("ended", StatusCode::OK), ("active", StatusCode::CONFLICT)] {
        let resp = send_json(
            &app,
            Method::PATCH,
            &format!("/journeys/{id}"),
            &shop,
            &json!({ "status": status }),
        )
        .await;
        assert_eq!(resp.status, expected, "{}", resp.text);
    }

    for (body, status, code) in [
        (
            welcome(json!({ "kind": "grant_points", "funding_brand_id": "shop", "points": 0 })),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "joined", "within_days": 0 },
            "actions": [grant.clone()] }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "joined", "within_days": 3 },
            "actions": [] }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": " ", "trigger": { "kind": "first_purchase" },
            "actions": [grant.clone()] }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "bought_at_not_at", "brand_a": "shop",
            "brand_b": "shop" }, "actions": [grant.clone()] }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "first_purchase" },
            "actions": [grant.clone()], "starts_at_ms": 10, "ends_at_ms": 5 }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "first_purchase" },
            "actions": [grant.clone()], "total_cap": 0 }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "first_purchase" },
            "actions": [grant.clone()], "audience": { "tiers": ["diamond"] } }),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "sometime" }, "actions": [grant.clone()] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "title": "W", "actions": [grant.clone()] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "title": "W", "trigger": { "kind": "stage_changed", "to": "asleep" },
            "actions": [grant.clone()] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let resp = send_json(&app, Method::POST, "/journeys", &shop, &body).await;
        assert_problem(&resp, status, code);
    }
    let resp = send_json(
        &app,
        Method::POST,
        "/journeys",
        &app.admin_key,
        &welcome(json!({ "kind": "grant_points", "funding_brand_id": "nobody", "points": 1 })),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unknown_brand");
    let resp = get(&app, "/journeys/no-such-journey", &app.admin_key).await;
    assert_problem(&resp, StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
});

/// Runs `coalition …` (the real binary) against the test's database; it runs on the wall
/// clock, so the journey below does not depend on time.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
        .env("COALITION_DATABASE_URL", app.state.config.database_url())
        .env_remove("COALITION_CONFIG")
        .args(args)
        .output()
        .expect("run coalition");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

both_backends!(the_command_line_runs_journeys_once, |app| async move {
    create_brand(&app, "shop").await;
    let counter = create_key(&app, "counter", Some("shop"), None).await;
    let m = member_id(&app, "+8613800000041", "Cli").await;
    purchase(&app, &counter, "shop", &m, 1_000).await;
    let id = create(
        &app,
        &app.admin_key,
        json!({ "title": "Thanks", "trigger": { "kind": "first_purchase" },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }], "status": "active" }),
    )
    .await;
    let dry = cli(&app, &["journeys", "dry-run", &id]);
    assert_eq!(dry["would_touch"], 1, "{dry}");
    let first = cli(&app, &["journeys", "run", "--journey", &id]);
    assert_eq!(first["journeys"][0]["touched"], 1, "{first}");
    assert_eq!(first["journeys"][0]["finished"], true, "{first}");
    let second = cli(&app, &["journeys", "run"]);
    assert_eq!(second["journeys"][0]["touched"], 0, "{second}");
    assert_eq!(journey(&app, &id).await["counts"]["webhook"], 1);
    let stages = cli(&app, &["jobs", "run", "member-stages"]);
    assert_eq!(stages["member_stages"]["finished"], true, "{stages}");
    assert_eq!(stages["member_stages"]["members"], 1, "{stages}");
    // The command runs on the system clock: every day from the purchase's (the test clock's
    // 2026-03-02) to yesterday is closed, in passes until none is left.
    let rollups = cli(&app, &["jobs", "run", "kpi-rollups"]);
    let closed = rollups["kpi_rollups"]["days_closed"]
        .as_i64()
        .expect("days");
    assert!(closed >= 2, "{rollups}");
    assert_eq!(rollups["kpi_rollups"]["more"], false, "{rollups}");
    let again = cli(&app, &["jobs", "run", "kpi-rollups"]);
    assert_eq!(
        again["kpi_rollups"]["closed_before_day"],
        rollups["kpi_rollups"]["closed_before_day"]
    );
    app.stop().await;
});

both_backends!(birthday_and_near_next_tier_triggers, |app| async move {
    create_brand(&app, "shop").await;
    let counter = create_key(&app, "counter", Some("shop"), None).await;
    let register = |phone: &'static str, birthday: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    "/members",
                    &app.admin_key,
                    &idem(),
                    &json!({ "phone": phone, "name": "B", "birthday": birthday }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_str().expect("id").to_owned()
        }
    };
    // The clock starts in March 2026.
    let march = register("+8613800000051", "1990-03-17").await;
    let may = register("+8613800000052", "1990-05-17").await;
    let birthday = create(
        &app,
        &app.admin_key,
        json!({ "title": "Happy birthday", "trigger": { "kind": "birthday_month" },
            "actions": [{ "kind": "grant_points", "funding_brand_id": "shop", "points": 50 }],
            "per_member_cap": 10, "status": "active" }),
    )
    .await;
    let dry = dry_run(&app, &app.admin_key, &birthday).await;
    assert_eq!(dry["sample"], json!([march.clone()]), "{dry}");
    run_journeys(&app, Some(&birthday)).await;
    run_journeys(&app, Some(&birthday)).await;
    assert_eq!(available(&app, &march).await, 50);
    assert_eq!(available(&app, &may).await, 0);

    // Silver needs 2,000.00 of spend in the window: 1,900.00 is within 200.00 of it, 1,000.00
    // is not.
    purchase(&app, &counter, "shop", &march, 190_000).await;
    purchase(&app, &counter, "shop", &may, 100_000).await;
    let near = create(
        &app,
        &app.admin_key,
        json!({ "title": "Almost silver",
            "trigger": { "kind": "near_next_tier", "within_points": 20_000 },
            "actions": [{ "kind": "webhook", "brand_id": "shop" }], "status": "active" }),
    )
    .await;
    let dry = dry_run(&app, &app.admin_key, &near).await;
    assert_eq!(dry["sample"], json!([march.clone()]), "{dry}");
    assert_eq!(
        run_journeys(&app, Some(&near)).await["journeys"][0]["touched"],
        1
    );
    assert_eq!(
        run_journeys(&app, Some(&near)).await["journeys"][0]["touched"],
        0
    );
    app.stop().await;
});
