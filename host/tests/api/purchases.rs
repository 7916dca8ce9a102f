//! Purchases and refunds: earn on eligible spend only, order uniqueness, refunds after partial
//! spend, partial refunds that never exceed or repeat.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends_no_jobs;
use crate::helpers::TestApp;
use crate::ledger::{adjust, brand, check_invariants, credit, key, member, points};

/// Records a purchase with a counter key.
pub async fn purchase(
    app: &TestApp,
    counter: &str,
    brand: &str,
    body: &Value,
) -> (StatusCode, Value) {
    app.post(
        &format!("/brands/{brand}/purchases"),
        counter,
        &uuid::Uuid::new_v4().to_string(),
        body,
    )
    .await
}

/// Refunds with a counter key.
pub async fn refund(
    app: &TestApp,
    counter: &str,
    brand: &str,
    order: &str,
    body: &Value,
) -> (StatusCode, Value) {
    app.post(
        &format!("/brands/{brand}/purchases/{order}/refunds"),
        counter,
        &uuid::Uuid::new_v4().to_string(),
        body,
    )
    .await
}

fn line(id: &str, sku: &str, category: &str, quantity: i64, unit: i64) -> Value {
    json!({ "line_id": id, "sku": sku, "category": category, "quantity": quantity,
            "unit_price_cents": unit })
}

both_backends_no_jobs!(
    excluded_lines_and_points_paid_part_earn_nothing,
    |app| async move {
        brand(&app, "store", &["GIFTCARD"], &["delivery"]).await;
        let counter = key(&app, "counter", Some("store"), None).await;
        let m = member(&app).await;
        credit(&app, &m, 2_000).await;
        // 16,000 cents; 1,600 points (= 1,600 cents, the Bronze cap of 10%) pay 10:5:1 across lines.
        let (status, body) = purchase(
            &app,
            &counter,
            "store",
            &json!({ "order_id": "o-1", "member_id": m, "points_spent": 1_600, "lines": [
                line("1", "SHOE", "apparel", 1, 10_000),
                line("2", "GIFTCARD", "gifts", 1, 5_000),
                line("3", "SHIP", "delivery", 1, 1_000),
            ]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["total_cents"], 16_000);
        assert_eq!(body["points_value_cents"], 1_600);
        assert_eq!(body["cash_cents"], 14_400);
        // Only the shoe's money part earns: 10,000 − 1,000 = 9,000 cents → 90 points.
        assert_eq!(body["eligible_cents"], 9_000);
        assert_eq!(body["base_points"], 90);
        let lines = body["lines"].as_array().expect("lines");
        let alloc: Vec<(i64, i64, i64)> = lines
            .iter()
            .map(|l| {
                (
                    l["points_cents_alloc"].as_i64().unwrap_or(-1),
                    l["eligible_cents"].as_i64().unwrap_or(-1),
                    l["earned_points"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(alloc, vec![(1_000, 9_000, 90), (500, 0, 0), (100, 0, 0)]);
        assert_eq!(points(&app, &m).await["available"], 2_000 - 1_600 + 90);
        // The per-line allocation is stored and read back.
        let (status, read) = app.get("/brands/store/purchases/o-1", &counter).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["lines"], body["lines"]);
        // Paying more than the Bronze share with points is refused.
        let (status, body) = purchase(
            &app,
            &counter,
            "store",
            &json!({ "order_id": "o-2", "member_id": m, "points_spent": 101,
                 "lines": [line("1", "SHOE", "apparel", 1, 1_000)] }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "points_payment_over_limit");
        check_invariants(&app).await;
        app.stop().await;
    }
);

both_backends_no_jobs!(
    orders_are_unique_per_brand_and_idempotent,
    |app| async move {
        brand(&app, "coffee", &[], &[]).await;
        brand(&app, "tea", &[], &[]).await;
        let coffee = key(&app, "counter", Some("coffee"), None).await;
        let tea = key(&app, "counter", Some("tea"), None).await;
        let m = member(&app).await;
        let order =
            json!({ "order_id": "A1", "member_id": m, "lines": [line("1", "LATTE", "", 2, 450)] });
        let (s1, b1) = app
            .post("/brands/coffee/purchases", &coffee, "k1", &order)
            .await;
        assert_eq!(s1, StatusCode::CREATED, "{b1}");
        assert_eq!(b1["points_earned"], 9);
        // The same key replays the same body; a new key for the same order is refused.
        let (s2, b2) = app
            .post("/brands/coffee/purchases", &coffee, "k1", &order)
            .await;
        assert_eq!((s2, &b2), (StatusCode::CREATED, &b1));
        let (s3, b3) = app
            .post("/brands/coffee/purchases", &coffee, "k2", &order)
            .await;
        assert_eq!(s3, StatusCode::CONFLICT);
        assert_eq!(b3["code"], "order_exists");
        // Another brand may use the same order id; a counter can't record at another brand.
        let (s4, _) = app.post("/brands/tea/purchases", &tea, "k1", &order).await;
        assert_eq!(s4, StatusCode::CREATED);
        let (s5, _) = app
            .post("/brands/tea/purchases", &coffee, "k9", &order)
            .await;
        assert_eq!(s5, StatusCode::FORBIDDEN);
        assert_eq!(points(&app, &m).await["available"], 18);
        // Unknown member: 404, nothing recorded.
        let ghost = json!({ "order_id": "A2", "member_id": "ghost", "lines": [line("1", "X", "", 1, 100)] });
        let (s6, b6) = app
            .post("/brands/coffee/purchases", &coffee, "k3", &ghost)
            .await;
        assert_eq!(s6, StatusCode::NOT_FOUND, "{b6}");
        // Bounds: too many lines, absurd quantity.
        let many: Vec<Value> = (0..501)
            .map(|i| line(&i.to_string(), "X", "", 1, 1))
            .collect();
        let (s7, b7) = purchase(
            &app,
            &coffee,
            "coffee",
            &json!({ "order_id": "A3", "member_id": m, "lines": many }),
        )
        .await;
        assert_eq!(
            (s7, b7["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("validation_failed"))
        );
        let (s8, _) = purchase(
            &app,
            &coffee,
            "coffee",
            &json!({ "order_id": "A4", "member_id": m, "lines": [line("1", "X", "", 10_001, 1)] }),
        )
        .await;
        assert_eq!(s8, StatusCode::BAD_REQUEST);
        check_invariants(&app).await;
        app.stop().await;
    }
);

both_backends_no_jobs!(refund_after_partial_spend, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    // Earn 500 points, then spend 400 of them elsewhere.
    let (status, body) = purchase(
        &app,
        &counter,
        "store",
        &json!({ "order_id": "big", "member_id": m, "lines": [line("1", "TV", "", 1, 50_000)] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["points_earned"], 500);
    let (status, _) = adjust(&app, &m, -400, "spend-400").await;
    assert_eq!(status, StatusCode::CREATED);
    // The full refund reverses 500: the 100 still there are clawed back, 400 become debt; the
    // balance never goes negative.
    let (status, r) = refund(
        &app,
        &counter,
        "store",
        "big",
        &json!({ "refund_id": "r1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["points_reversed"], 500);
    assert_eq!(r["points_clawed_back"], 100);
    assert_eq!(r["shortfall_points"], 400);
    assert_eq!(r["cash_refund_cents"], 50_000);
    let view = points(&app, &m).await;
    assert_eq!(
        (view["available"].as_i64(), view["debt"].as_i64()),
        (Some(0), Some(400))
    );
    check_invariants(&app).await;
    // The next points earned pay the debt first.
    let (status, body) = purchase(&app, &counter, "store",
        &json!({ "order_id": "next", "member_id": m, "lines": [line("1", "CABLE", "", 1, 30_000)] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["debt_settled"], 300);
    let view = points(&app, &m).await;
    assert_eq!(
        (view["available"].as_i64(), view["debt"].as_i64()),
        (Some(0), Some(100))
    );
    credit(&app, &m, 150).await;
    let view = points(&app, &m).await;
    assert_eq!(
        (view["available"].as_i64(), view["debt"].as_i64()),
        (Some(50), Some(0))
    );
    check_invariants(&app).await;
    app.stop().await;
});

/// (available, debt) of a member.
async fn available_and_debt(app: &TestApp, m: &str) -> (Option<i64>, Option<i64>) {
    let view = points(app, m).await;
    (view["available"].as_i64(), view["debt"].as_i64())
}

both_backends_no_jobs!(
    restored_points_pay_refund_debt_before_they_can_be_spent,
    |app| async move {
        brand(&app, "store", &[], &[]).await;
        let counter = key(&app, "counter", Some("store"), None).await;
        let m = member(&app).await;
        // A earns 1000; B spends 600 of them (and earns 54 on its cash part).
        let (status, a) = purchase(
            &app,
            &counter,
            "store",
            &json!({ "order_id": "A", "member_id": m, "lines": [line("1", "TV", "", 1, 100_000)] }),
        )
        .await;
        assert_eq!(
            (status, a["points_earned"].as_i64()),
            (StatusCode::CREATED, Some(1000))
        );
        let (status, b) = purchase(
            &app,
            &counter,
            "store",
            &json!({ "order_id": "B", "member_id": m, "points_spent": 600,
                     "lines": [line("1", "LAMP", "", 1, 6_000)] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        assert_eq!(b["points_earned"], 54, "{b}");
        assert_eq!(available_and_debt(&app, &m).await, (Some(454), Some(0)));
        // Refund A: 454 clawed back, 546 become debt.
        let (status, r) = refund(&app, &counter, "store", "A", &json!({ "refund_id": "rA" })).await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(available_and_debt(&app, &m).await, (Some(0), Some(546)));
        // Refund B: 600 restored, 54 clawed back; the 546 left pay the debt first. Before the
        // debt rule moved into the ledger the member had 546 to spend and 546 of debt.
        let (status, r) = refund(&app, &counter, "store", "B", &json!({ "refund_id": "rB" })).await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(available_and_debt(&app, &m).await, (Some(0), Some(0)));
        check_invariants(&app).await;
        app.stop().await;
    }
);

both_backends_no_jobs!(
    a_released_hold_pays_refund_debt_before_it_can_be_spent,
    |app| async move {
        brand(&app, "store", &[], &[]).await;
        let counter = key(&app, "counter", Some("store"), None).await;
        let m = member(&app).await;
        let (status, _) = purchase(
            &app,
            &counter,
            "store",
            &json!({ "order_id": "A", "member_id": m, "lines": [line("1", "TV", "", 1, 100_000)] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        // Hold all 1000; the refund cannot claw held points back, so all of it is debt.
        let (status, hold) = app
            .post(
                &format!("/members/{m}/points/holds"),
                &app.admin_key,
                &uuid::Uuid::new_v4().to_string(),
                &json!({ "points": 1000, "ttl_ms": 3_600_000 }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        let (status, r) = refund(&app, &counter, "store", "A", &json!({ "refund_id": "rA" })).await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(available_and_debt(&app, &m).await, (Some(0), Some(1000)));
        // Releasing the hold gives the 1000 back, and they pay the debt.
        let id = hold["id"].as_str().expect("hold id");
        let (status, body) = app
            .post(
                &format!("/holds/{id}/release"),
                &app.admin_key,
                &uuid::Uuid::new_v4().to_string(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(available_and_debt(&app, &m).await, (Some(0), Some(0)));
        check_invariants(&app).await;
        app.stop().await;
    }
);

both_backends_no_jobs!(partial_refunds_never_exceed_or_repeat, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    credit(&app, &m, 1_000).await;
    // 3 lines × 3 units: 3×1,000 + 3×700 + 3×333 = 6,099 cents; 600 points pay 600 cents.
    let (status, p) = purchase(
        &app,
        &counter,
        "store",
        &json!({
        "order_id": "p", "member_id": m, "points_spent": 600, "lines": [
            line("a", "A", "", 3, 1_000), line("b", "B", "", 3, 700), line("c", "C", "", 3, 333),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let earned = p["points_earned"].as_i64().expect("earned");
    assert_eq!(earned, 54); // (6,099 − 600) / 100
    let after_purchase = 1_000 - 600 + earned;
    assert_eq!(points(&app, &m).await["available"], after_purchase);

    let (s, r1) = refund(
        &app,
        &counter,
        "store",
        "p",
        &json!({ "refund_id": "r1", "lines": [{ "line_id": "a", "quantity": 2 }] }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r1}");
    // Line a: 3,000 of 6,099 cents → 295 of the 600 points; 2 of 3 units give back 196.
    let a = &p["lines"][0];
    assert_eq!(a["points_alloc"], 295);
    assert_eq!(r1["points_restored"], 196);
    // 2 more of line a would exceed what was bought.
    let (s, body) = refund(
        &app,
        &counter,
        "store",
        "p",
        &json!({ "refund_id": "r2", "lines": [{ "line_id": "a", "quantity": 2 }] }),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "refund_exceeds_purchase");
    assert_eq!(body["extra"]["refundable"], 1);
    // The same refund id again (new key) is refused; the same key replays.
    let (s, body) = refund(
        &app,
        &counter,
        "store",
        "p",
        &json!({ "refund_id": "r1", "lines": [{ "line_id": "b", "quantity": 1 }] }),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["code"], "refund_exists");
    let req = json!({ "refund_id": "r3", "lines": [{ "line_id": "a", "quantity": 1 },
                                                   { "line_id": "c", "quantity": 2 }] });
    let (s, r3) = app
        .post("/brands/store/purchases/p/refunds", &counter, "same", &req)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r3}");
    let (s, again) = app
        .post("/brands/store/purchases/p/refunds", &counter, "same", &req)
        .await;
    assert_eq!((s, &again), (StatusCode::CREATED, &r3));
    // Everything left: b × 3 and c × 1.
    let (s, last) = refund(&app, &counter, "store", "p", &json!({ "refund_id": "r4" })).await;
    assert_eq!(s, StatusCode::CREATED, "{last}");
    let (s, body) = refund(&app, &counter, "store", "p", &json!({ "refund_id": "r5" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "refund_exceeds_purchase");

    // Across all refunds: exactly what was spent is restored, exactly what was earned reversed.
    let (_, read) = app.get("/brands/store/purchases/p", &counter).await;
    let refunds = read["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 3);
    let sum = |field: &str| -> i64 { refunds.iter().map(|r| r[field].as_i64().unwrap_or(0)).sum() };
    assert_eq!(sum("points_restored"), 600);
    assert_eq!(sum("points_reversed"), earned);
    assert_eq!(sum("cash_refund_cents"), 6_099 - 600);
    for l in read["lines"].as_array().expect("lines") {
        assert_eq!(l["refunded_quantity"], l["quantity"]);
    }
    assert_eq!(points(&app, &m).await["available"], 1_000);
    // Restored points keep their lot's expiry (a year out), never less than 30 days.
    let view = points(&app, &m).await;
    for lot in view["lots"].as_array().expect("lots") {
        assert!(
            lot["expires_at_ms"].as_i64().unwrap_or(0)
                >= app.state.now_ms() + 30 * coalition::foundation::clock::DAY_MS
        );
    }
    check_invariants(&app).await;
    app.stop().await;
});

both_backends_no_jobs!(
    concurrent_refunds_of_one_line_never_exceed,
    |app| async move {
        brand(&app, "store", &[], &[]).await;
        let counter = key(&app, "counter", Some("store"), None).await;
        let m = member(&app).await;
        let (status, _) = purchase(
            &app,
            &counter,
            "store",
            &json!({
        "order_id": "x", "member_id": m, "lines": [line("a", "A", "", 5, 1_000)] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (app, counter) = (app.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
            refund(&app, &counter, "store", "x",
                &json!({ "refund_id": format!("r{i}"), "lines": [{ "line_id": "a", "quantity": 1 }] }))
                .await
                .0
        }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.expect("task") == StatusCode::CREATED {
                ok += 1;
            }
        }
        assert_eq!(ok, 5);
        assert_eq!(points(&app, &m).await["available"], 0);
        check_invariants(&app).await;
        if let Ok(app) = std::sync::Arc::try_unwrap(app) {
            app.stop().await;
        }
    }
);

both_backends_no_jobs!(blocked_member_may_not_purchase, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    let (status, _) = app
        .post(
            &format!("/members/{m}/block"),
            &app.admin_key,
            "b",
            &json!({ "reason": "fraud" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = purchase(
        &app,
        &counter,
        "store",
        &json!({ "order_id": "o", "member_id": m, "lines": [line("1", "A", "", 1, 1_000)] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "member_blocked");
    let (status, _) = app.get("/brands/store/purchases/o", &counter).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
});
