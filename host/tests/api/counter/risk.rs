//! Risk controls: the blacklist refuses earning (through the purchase API) and redeeming; the
//! redemption checks — blacklisted member or device, per-member and per-device frequency, real
//! name above the threshold — each refuse with their own code, through the dry-run endpoint and
//! through `risk::check_redemption` against the real database.

use coalition::domain::risk::{self, RedemptionAttempt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::support::{blacklist, idem, line};
use crate::counter_test;
use crate::helpers::TestApp;
use crate::ledger::{brand, key, member, points};

const HOUR_MS: i64 = 3_600_000;

async fn check(app: &TestApp, caller: &str, body: &Value) -> Value {
    let (status, verdict) = app.post("/risk/check", caller, &idem(), body).await;
    assert_eq!(status, StatusCode::OK, "{verdict}");
    verdict
}

fn refusal(verdict: &Value) -> &str {
    verdict["problem"]["code"].as_str().unwrap_or("allowed")
}

/// Records accepted redemptions the way the redemption endpoint does, in a transaction.
async fn record(app: &TestApp, member: &str, device: Option<&str>, n: usize) {
    let mut tx = app.state.store.begin().await.expect("begin");
    for _ in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        risk::record_redemption(
            &mut tx,
            &RedemptionAttempt {
                member_id: member,
                device_id: device,
                value_cents: 500,
                what: "perk:test/coffee",
                redemption_id: &id,
            },
            app.clock_now(),
        )
        .await
        .expect("record");
    }
    tx.commit().await.expect("commit");
}

trait Now {
    fn clock_now(&self) -> i64;
}

impl Now for TestApp {
    fn clock_now(&self) -> i64 {
        use coalition::foundation::clock::Clock;
        self.clock.now_ms()
    }
}

counter_test!(
    blacklisted_member_cannot_earn_until_removed,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        blacklist(&app, "member", &m).await;
        let order =
            |id: &str| json!({ "order_id": id, "member_id": m, "lines": [line("1", 1, 10_000)] });
        let (status, problem) = app
            .post("/brands/cafe/purchases", &counter, &idem(), &order("o-1"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        assert_eq!(problem["code"], "member_blacklisted");
        assert_eq!(points(&app, &m).await["balance"], 0);

        let (status, list) = app.get("/risk/blacklist?kind=member", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["entries"][0]["subject"], json!(m));
        assert_eq!(list["entries"][0]["reason"], "coupon abuse");
        let (status, _) = app.get("/risk/blacklist", &counter).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let (status, removed) = app
            .call(
                Method::DELETE,
                &format!("/risk/blacklist/member/{m}"),
                Some(&app.admin_key),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{removed}");
        assert_eq!(removed["subject"], json!(m));
        let (status, body) = app
            .post("/brands/cafe/purchases", &counter, &idem(), &order("o-2"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(points(&app, &m).await["balance"], 100);
        // Both decisions are in the audit log.
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action LIKE 'risk.blacklist_%'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("audit");
        assert_eq!(n, 2);
    }
);

counter_test!(
    redemption_refusals_have_distinct_codes,
    config = |c| {
        c.risk.member_redemptions_per_hour = 3;
        c.risk.member_redemptions_per_day = 5;
        c.risk.device_redemptions_per_hour = 4;
        c.risk.real_name_above_cents = 10_000;
    },
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        let small = json!({ "member_id": m, "device_id": "phone-1", "value_cents": 500 });
        assert_eq!(check(&app, &counter, &small).await["allowed"], true);

        // Real name above the threshold, until verified.
        let big = json!({ "member_id": m, "value_cents": 10_001 });
        let verdict = check(&app, &counter, &big).await;
        assert_eq!(refusal(&verdict), "real_name_required", "{verdict}");
        assert_eq!(verdict["problem"]["status"], 422);
        let brand_key = key(&app, "brand", Some("cafe"), None).await;
        let (status, problem) = app
            .post(
                &format!("/members/{m}/verification"),
                &counter,
                &idem(),
                &json!({ "reference": "idv-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        let (status, verification) = app
            .post(
                &format!("/members/{m}/verification"),
                &brand_key,
                &idem(),
                &json!({ "reference": "idv-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{verification}");
        assert_eq!(verification["verified_by_brand"], "cafe");
        let (status, fetched) = app
            .get(&format!("/members/{m}/verification"), &counter)
            .await;
        assert_eq!(status, StatusCode::OK, "{fetched}");
        assert_eq!(fetched["reference"], "idv-1");
        assert_eq!(check(&app, &counter, &big).await["allowed"], true);

        // Per member: 3 an hour, 5 a day, with a retry hint.
        record(&app, &m, Some("phone-1"), 3).await;
        let verdict = check(&app, &counter, &small).await;
        assert_eq!(
            refusal(&verdict),
            "redemption_rate_limited_member",
            "{verdict}"
        );
        assert_eq!(verdict["problem"]["status"], 429);
        assert_eq!(verdict["problem"]["extra"]["retry_after_ms"], HOUR_MS);
        assert_eq!(verdict["problem"]["extra"]["limit"], 3);
        app.clock.advance_ms(HOUR_MS);
        assert_eq!(check(&app, &counter, &small).await["allowed"], true);
        record(&app, &m, None, 2).await;
        let verdict = check(&app, &counter, &small).await;
        assert_eq!(
            refusal(&verdict),
            "redemption_rate_limited_member",
            "{verdict}"
        );
        assert_eq!(verdict["problem"]["extra"]["window_ms"], 24 * HOUR_MS);
        assert_eq!(verdict["problem"]["extra"]["retry_after_ms"], 23 * HOUR_MS);

        // Per device: a fourth redemption from phone-1 within the hour, by anyone.
        let others: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..2 {
                v.push(member(&app).await);
            }
            v
        };
        record(&app, &others[0], Some("phone-1"), 3).await;
        record(&app, &others[1], Some("phone-1"), 1).await;
        let fresh = member(&app).await;
        let verdict = check(
            &app,
            &counter,
            &json!({ "member_id": fresh, "device_id": "phone-1", "value_cents": 500 }),
        )
        .await;
        assert_eq!(
            refusal(&verdict),
            "redemption_rate_limited_device",
            "{verdict}"
        );
        let elsewhere = json!({ "member_id": fresh, "device_id": "phone-2", "value_cents": 500 });
        assert_eq!(check(&app, &counter, &elsewhere).await["allowed"], true);

        // Blacklisted device, then blacklisted member (checked first).
        blacklist(&app, "device", "phone-2").await;
        let verdict = check(&app, &counter, &elsewhere).await;
        assert_eq!(refusal(&verdict), "device_blacklisted", "{verdict}");
        assert_eq!(verdict["problem"]["status"], 403);
        blacklist(&app, "member", &fresh).await;
        assert_eq!(
            refusal(&check(&app, &counter, &elsewhere).await),
            "member_blacklisted"
        );

        // The function itself, inside a transaction as the redemption endpoint calls it.
        let mut tx = app.state.store.begin().await.expect("begin");
        let err = risk::check_redemption(
            &mut tx,
            &app.state.settings.risk,
            &RedemptionAttempt {
                member_id: &fresh,
                device_id: None,
                value_cents: 1,
                what: "perk:test/coffee",
                redemption_id: "r-1",
            },
            app.clock_now(),
        )
        .await
        .expect_err("blacklisted");
        assert_eq!(err.code, "member_blacklisted");
        let err = risk::check_earning(&mut tx, &app.state.settings.risk, &fresh, app.clock_now())
            .await
            .expect_err("blacklisted");
        assert_eq!(err.code, "member_blacklisted");
        let ok = risk::check_earning(
            &mut tx,
            &app.state.settings.risk,
            &others[0],
            app.clock_now(),
        )
        .await;
        assert!(ok.is_ok());
        tx.rollback().await.expect("rollback");

        // Members may not use the dry check.
        let own = key(&app, "member", None, Some(&m)).await;
        let (status, _) = app.post("/risk/check", &own, &idem(), &small).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
);

counter_test!(
    concurrent_redemptions_never_exceed_the_member_limit,
    config = |c| {
        c.risk.member_redemptions_per_hour = 5;
    },
    |app| async move {
        let m = member(&app).await;
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let app = app.clone();
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = app.state.store.begin().await.expect("begin");
                let id = format!("r-{i}");
                let attempt = RedemptionAttempt {
                    member_id: &m,
                    device_id: Some("kiosk"),
                    value_cents: 100,
                    what: "perk:test/coffee",
                    redemption_id: &id,
                };
                let now = app.clock_now();
                match risk::check_redemption(&mut tx, &app.state.settings.risk, &attempt, now).await
                {
                    Ok(()) => {
                        risk::record_redemption(&mut tx, &attempt, now)
                            .await
                            .expect("record");
                        tx.commit().await.expect("commit");
                        true
                    }
                    Err(err) => {
                        assert_eq!(err.code, "redemption_rate_limited_member");
                        false
                    }
                }
            }));
        }
        let mut accepted = 0;
        for task in tasks {
            if task.await.expect("task") {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 5);
    }
);

counter_test!(
    counter_phone_lookups_are_rate_limited_per_key,
    config = |c| c.risk.counter_phone_lookups_per_minute = 3,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let other = key(&app, "counter", Some("cafe"), None).await;
        let lookup = "/members?phone=%2B8613900000999";
        for _ in 0..3 {
            let (status, body) = app.get(lookup, &counter).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, problem) = app.get(lookup, &counter).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
        assert_eq!(problem["code"], "phone_lookup_rate_limited");
        assert_eq!(problem["extra"]["limit"], 3, "{problem}");
        assert!(problem["extra"]["retry_after_ms"]
            .as_i64()
            .is_some_and(|ms| ms > 0 && ms <= 60_000));
        // Per key: another counter and an admin are not affected.
        let (status, _) = app.get(lookup, &other).await;
        assert_eq!(status, StatusCode::OK);
        for _ in 0..5 {
            let (status, _) = app.get(lookup, &app.admin_key).await;
            assert_eq!(status, StatusCode::OK);
        }
        // The next minute the key may look up again.
        app.clock.advance_ms(60_000);
        let (status, body) = app.get(lookup, &counter).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
);
