//! Offline purchase sync: a batch synced twice is applied once, coupons used elsewhere are
//! reported as conflicts (the purchase stands), and items with a bad pass are rejected with
//! their own codes and change nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::{blacklist, idem, line, pass, sql_coupon, sql_coupon_template};
use crate::counter_test;
use crate::helpers::{TestApp, T0_MS};
use crate::ledger::{brand, key, member, points};

const MINUTE_MS: i64 = 60_000;

async fn sync(app: &TestApp, counter: &str, idem_key: &str, body: &Value) -> (StatusCode, Value) {
    app.post("/brands/cafe/offline-purchases", counter, idem_key, body)
        .await
}

fn item(pass: &str, order_id: &str, member: &str, taken_at_ms: i64, coupons: &[&str]) -> Value {
    json!({
        "pass": pass,
        "taken_at_ms": taken_at_ms,
        "order": { "order_id": order_id, "member_id": member,
                   "lines": [line("1", 1, 10_000)] },
        "coupon_codes": coupons,
    })
}

async fn purchases_of(app: &TestApp, member: &str) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM purchases WHERE member_id = $1")
            .bind(member)
            .fetch_one(app.state.store.read())
            .await
            .expect("count");
    n
}

async fn coupon_status(app: &TestApp, code: &str) -> String {
    let (status,): (String,) = sqlx::query_as("SELECT status FROM coupons WHERE code = $1")
        .bind(code)
        .fetch_one(app.state.store.read())
        .await
        .expect("coupon");
    status
}

counter_test!(
    offline_batch_synced_twice_is_applied_once,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        let token = pass(&app, &m).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let coupon = sql_coupon(&app, "latte-free", &m, "gift-1").await;
        // The counter was offline for an hour; the pass has long expired by the time it syncs,
        // but it was valid when the purchases were taken.
        app.clock.advance_ms(60 * MINUTE_MS);
        let batch = json!({ "device_id": "till-3", "purchases": [
            item(&token, "o-1", &m, T0_MS + MINUTE_MS, &[&coupon]),
            item(&token, "o-2", &m, T0_MS + 2 * MINUTE_MS, &[]),
        ]});
        let first_key = idem();
        let (status, first) = sync(&app, &counter, &first_key, &batch).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["applied"], 2, "{first}");
        assert_eq!(first["items"][0]["status"], "applied");
        assert_eq!(first["items"][0]["points_earned"], 100);
        assert_eq!(first["items"][0]["coupons_redeemed"], json!([coupon]));
        assert_eq!(first["items"][1]["status"], "applied");
        assert_eq!(points(&app, &m).await["balance"], 200);
        assert_eq!(coupon_status(&app, &coupon).await, "redeemed");

        // The counter did not see the answer and syncs the same batch again, under a new key.
        let (status, second) = sync(&app, &counter, &idem(), &batch).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_eq!(second["applied"], 0);
        assert_eq!(second["duplicates"], 2);
        for (i, it) in second["items"]
            .as_array()
            .expect("items")
            .iter()
            .enumerate()
        {
            assert_eq!(it["status"], "duplicate", "{it}");
            assert_eq!(it["purchase_id"], first["items"][i]["purchase_id"]);
            assert!(it["conflicts"].as_array().expect("conflicts").is_empty());
        }
        assert_eq!(purchases_of(&app, &m).await, 2);
        assert_eq!(points(&app, &m).await["balance"], 200);
        let (offline_rows,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM offline_purchases")
                .fetch_one(app.state.store.read())
                .await
                .expect("count");
        assert_eq!(offline_rows, 2);
        // The same key replays the first answer.
        let (status, replay) = sync(&app, &counter, &first_key, &batch).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(replay, first);
        // A purchase recorded online is also a duplicate offline.
        let (status, body) = app
            .post(
                "/brands/cafe/purchases",
                &counter,
                &idem(),
                &json!({ "order_id": "o-online", "member_id": m, "lines": [line("1", 1, 100)] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, dup) = sync(
            &app,
            &counter,
            &idem(),
            &json!({ "purchases": [item(&token, "o-online", &m, T0_MS + MINUTE_MS, &[])] }),
        )
        .await;
        assert_eq!(dup["items"][0]["status"], "duplicate", "{dup}");
    }
);

counter_test!(
    coupons_that_cannot_be_redeemed_are_conflicts_and_the_purchase_stands,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        brand(&app, "cinema", &[], &[]).await;
        sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500).await;
        sql_coupon_template(&app, "latte-1day", "cafe", "cafe", 1, 500).await;
        sql_coupon_template(&app, "ticket-half", "cinema", "cinema", 30, 2_000).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        let other = member(&app).await;
        let used = sql_coupon(&app, "latte-free", &m, "gift-1").await;
        let short = sql_coupon(&app, "latte-1day", &m, "gift-2").await;
        let cinema = sql_coupon(&app, "ticket-half", &m, "gift-3").await;
        let theirs = sql_coupon(&app, "latte-free", &other, "gift-4").await;
        // The pass is renewed while the member shops; one is issued two days in.
        app.clock.advance_ms(2 * 24 * 60 * MINUTE_MS);
        let token = pass(&app, &m).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let now = T0_MS + 2 * 24 * 60 * MINUTE_MS;
        // `used` was redeemed at another counter before the sync.
        let (status, first) = sync(
            &app,
            &counter,
            &idem(),
            &json!({ "purchases": [item(&token, "o-1", &m, now, &[&used])] }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["items"][0]["status"], "applied", "{first}");
        let (status, report) = sync(
            &app,
            &counter,
            &idem(),
            &json!({ "purchases": [item(&token, "o-2", &m, now + MINUTE_MS,
                &[&used, "NOSUCHCODE000000", &theirs, &short, &cinema])] }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let it = &report["items"][0];
        assert_eq!(it["status"], "applied_with_conflicts", "{it}");
        assert!(it["purchase_id"].is_string());
        assert_eq!(it["points_earned"], 100);
        let codes: Vec<(&str, &str)> = it["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .map(|c| {
                (
                    c["coupon_code"].as_str().unwrap_or_default(),
                    c["code"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                (used.as_str(), "coupon_already_used"),
                ("NOSUCHCODE000000", "coupon_not_found"),
                (theirs.as_str(), "coupon_not_owned"),
                (short.as_str(), "coupon_expired"),
                (cinema.as_str(), "coupon_not_honoured_here"),
            ]
        );
        assert_eq!(report["conflicts"], 5);
        // The purchase is recorded; the coupons are untouched.
        assert_eq!(purchases_of(&app, &m).await, 2);
        assert_eq!(coupon_status(&app, &theirs).await, "issued");
        assert_eq!(coupon_status(&app, &cinema).await, "issued");
        // The brand sees them to resolve.
        let (status, listed) = app.get("/brands/cafe/offline-conflicts", &counter).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        assert_eq!(listed["conflicts"].as_array().expect("list").len(), 5);
        let cinema_counter = key(&app, "counter", Some("cinema"), None).await;
        let (status, _) = app
            .get("/brands/cafe/offline-conflicts", &cinema_counter)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
);

counter_test!(
    offline_items_with_a_bad_pass_are_rejected_with_their_own_codes,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        let counter = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        let other = member(&app).await;
        let banned = member(&app).await;
        let token = pass(&app, &m).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let banned_token = pass(&app, &banned).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        blacklist(&app, "member", &banned).await;
        let (payload, signature) = token.split_once('.').expect("dot");
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        claims["expires_at_ms"] = json!(T0_MS + 30 * 24 * 60 * MINUTE_MS);
        let tampered = format!(
            "{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"))
        );
        app.clock.advance_ms(30 * MINUTE_MS);
        let batch = json!({ "purchases": [
            item(&token, "late", &m, T0_MS + 11 * MINUTE_MS, &[]),
            item(&token, "wrong-member", &other, T0_MS + MINUTE_MS, &[]),
            item(&token, "future", &m, T0_MS + 40 * MINUTE_MS, &[]),
            item(&tampered, "tampered", &m, T0_MS + 20 * MINUTE_MS, &[]),
            item("not-a-pass", "garbage", &m, T0_MS + MINUTE_MS, &[]),
            item(&banned_token, "banned", &banned, T0_MS + MINUTE_MS, &[]),
            item(&token, "fine", &m, T0_MS + MINUTE_MS, &[]),
        ]});
        let (status, report) = sync(&app, &counter, &idem(), &batch).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let outcome: Vec<(&str, &str)> = report["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|it| {
                (
                    it["status"].as_str().unwrap_or_default(),
                    it["problem"]["code"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            outcome,
            vec![
                ("rejected", "pass_expired"),
                ("rejected", "pass_member_mismatch"),
                ("rejected", "taken_at_in_future"),
                ("rejected", "pass_bad_signature"),
                ("rejected", "pass_malformed"),
                ("rejected", "member_blacklisted"),
                ("applied", ""),
            ]
        );
        assert_eq!(report["rejected"], 6);
        assert_eq!(purchases_of(&app, &m).await, 1);
        assert_eq!(purchases_of(&app, &other).await, 0);
        assert_eq!(purchases_of(&app, &banned).await, 0);

        // Only the brand's counter (or an admin) syncs, and batches are bounded.
        let other_brand = {
            brand(&app, "cinema", &[], &[]).await;
            key(&app, "counter", Some("cinema"), None).await
        };
        let (status, _) = sync(&app, &other_brand, &idem(), &batch).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let too_many: Vec<Value> = (0..=coalition::workflows::offline::MAX_OFFLINE_BATCH)
            .map(|i| item(&token, &format!("bulk-{i}"), &m, T0_MS + MINUTE_MS, &[]))
            .collect();
        let (status, problem) =
            sync(&app, &counter, &idem(), &json!({ "purchases": too_many })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["code"], "validation_failed");
    }
);
