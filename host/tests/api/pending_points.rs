//! Pending points over HTTP on both databases: at a brand with a return window the earn is
//! visible but not spendable, a refund inside the window cancels it without debt, the release
//! job credits what is left once (and counts it for tiers then), and a refund after the release
//! claws back as usual.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;

async fn points(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn release(app: &TestApp) -> Value {
    let (status, body) = app
        .post("/jobs/pending-points", &app.admin_key, &idem(), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn buy(app: &TestApp, counter: &str, member: &str, order: &str, qty: i64) -> Value {
    let (status, body) = app
        .post(
            "/brands/shoes/purchases",
            counter,
            &idem(),
            &json!({ "order_id": order, "member_id": member, "lines": [
                { "line_id": "1", "sku": "sneaker", "quantity": qty, "unit_price_cents": 10_000 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn refund(app: &TestApp, counter: &str, order: &str, id: &str, qty: Option<i64>) -> Value {
    let lines = qty.map_or(json!([]), |q| json!([{ "line_id": "1", "quantity": q }]));
    let (status, body) = app
        .post(
            &format!("/brands/shoes/purchases/{order}/refunds"),
            counter,
            &idem(),
            &json!({ "refund_id": id, "lines": lines }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn set_window(app: &TestApp, days: i64) {
    let (status, body) = app
        .call(
            Method::PATCH,
            "/brands/shoes",
            Some(&app.admin_key),
            Some(&idem()),
            Some(&json!({ "return_window_days": days })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["return_window_days"], days);
}

both_backends!(
    points_wait_out_the_return_window_and_refunds_inside_it_leave_no_debt,
    |app| async move {
        create_brand(&app, "shoes").await;
        set_window(&app, 14).await;
        let counter = create_key(&app, "counter", Some("shoes"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;

        // 3 pairs at 100.00: 300 points, pending for 14 days.
        let p = buy(&app, &counter, &ann, "S-1", 3).await;
        assert_eq!(p["points_earned"], 300);
        assert_eq!(p["points_pending"], 300);
        assert!(p["points_expire_at_ms"].is_null(), "{p}");
        let view = points(&app, &ann).await;
        assert_eq!(
            (&view["available"], &view["pending"]),
            (&json!(0), &json!(300))
        );
        assert_eq!(view["pending_earns"][0]["points"], 300);
        // Pending points cannot be spent.
        let (status, body) = app
            .post(
                &format!("/members/{ann}/points/holds"),
                &app.admin_key,
                &idem(),
                &json!({ "points": 100, "brand_id": "shoes" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "insufficient_points");
        // Nothing qualifies for tiers yet.
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(tier["qualifying"], 0, "{tier}");

        // A refund of one pair inside the window: 100 pending points cancelled, no debt, nothing
        // moved in the ledger.
        let r = refund(&app, &counter, "S-1", "R-1", Some(1)).await;
        assert_eq!(r["pending_cancelled"], 100);
        assert_eq!(r["points_clawed_back"], 0);
        assert_eq!(r["shortfall_points"], 0);
        assert!(r["entry_id"].is_null(), "{r}");
        let view = points(&app, &ann).await;
        assert_eq!((&view["pending"], &view["debt"]), (&json!(200), &json!(0)));

        // Not yet due: the job releases nothing.
        app.clock.advance_ms(13 * DAY_MS);
        assert_eq!(release(&app).await["purchases"], 0);
        // Past the window: 200 points become available, once.
        app.clock.advance_ms(DAY_MS + 1);
        let report = release(&app).await;
        assert_eq!(
            (&report["purchases"], &report["points"]),
            (&json!(1), &json!(200))
        );
        assert_eq!(
            release(&app).await["purchases"],
            0,
            "a second run releases nothing"
        );
        let view = points(&app, &ann).await;
        assert_eq!(
            (&view["available"], &view["pending"]),
            (&json!(200), &json!(0))
        );
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(
            tier["qualifying"], 20_000,
            "the two pairs kept now qualify: {tier}"
        );
        let (_, read) = app.get("/brands/shoes/purchases/S-1", &counter).await;
        assert_eq!(read["points_pending"], 0);
        assert!(read["points_expire_at_ms"].is_i64(), "{read}");

        // After the release a refund claws back as usual: the rest of the purchase, 200 points.
        let r = refund(&app, &counter, "S-1", "R-2", None).await;
        assert_eq!(
            (&r["pending_cancelled"], &r["points_clawed_back"]),
            (&json!(0), &json!(200))
        );
        let view = points(&app, &ann).await;
        assert_eq!((&view["available"], &view["debt"]), (&json!(0), &json!(0)));
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(tier["qualifying"], 0, "{tier}");
        app.stop().await;
    }
);

both_backends!(
    a_full_refund_inside_the_window_releases_nothing_and_owes_nothing,
    |app| async move {
        create_brand(&app, "shoes").await;
        set_window(&app, 7).await;
        let counter = create_key(&app, "counter", Some("shoes"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        buy(&app, &counter, &ann, "S-1", 2).await;
        // The member spends nothing meanwhile and cannot: nothing is available.
        let r = refund(&app, &counter, "S-1", "R-1", None).await;
        assert_eq!(r["pending_cancelled"], 200);
        app.clock.advance_ms(8 * DAY_MS);
        let report = release(&app).await;
        assert_eq!(
            (&report["purchases"], &report["points"]),
            (&json!(1), &json!(0))
        );
        let view = points(&app, &ann).await;
        assert_eq!(
            (&view["available"], &view["pending"], &view["debt"]),
            (&json!(0), &json!(0), &json!(0))
        );
        let (issued,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM settle_events WHERE kind = 'points-issued'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
        assert_eq!(issued, 0, "nothing was issued, so nothing settles");
        // Out of range windows are refused.
        let (status, body) = app
            .call(
                Method::PATCH,
                "/brands/shoes",
                Some(&app.admin_key),
                Some(&idem()),
                Some(&json!({ "return_window_days": 366 })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        app.stop().await;
    }
);
