//! Stored value over HTTP on both databases: top-up limits and real-name verification, retries,
//! concurrent top-ups and payments that never pass a limit or overdraw, a purchase paid with
//! points, stored value and cash refunded in two parts, settlement between the brand holding
//! the money and the brand that accepted it, and the liability report against the balances.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;
use crate::settlement::run_settlement;

const DAY_MS: i64 = 86_400_000;

async fn topup(
    app: &TestApp,
    key: &str,
    brand: &str,
    member: &str,
    cents: i64,
) -> (StatusCode, Value) {
    app.post(
        &format!("/brands/{brand}/stored-value/topups"),
        key,
        &idem(),
        &json!({ "topup_id": format!("T-{}", idem()), "member_id": member, "amount_cents": cents }),
    )
    .await
}

async fn balance(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/stored-value"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn fund(view: &Value, brand: &str) -> i64 {
    view["funds"]
        .as_array()
        .expect("funds")
        .iter()
        .find(|f| f["brand_id"] == brand)
        .map_or(0, |f| f["balance_cents"].as_i64().expect("cents"))
}

/// Every member's wallet equals its funds and its `member` postings; every entry's postings sum
/// to zero.
async fn assert_books_balance(app: &TestApp) {
    let pool = app.state.store.read();
    let off: Vec<(String,)> = sqlx::query_as(
        "SELECT w.member_id FROM stored_value_wallets w
         WHERE w.balance <> CAST(COALESCE((SELECT SUM(f.balance) FROM stored_value_funds f
                WHERE f.member_id = w.member_id), 0) AS BIGINT)
            OR w.balance <> CAST(COALESCE((SELECT SUM(p.amount) FROM stored_value_postings p
                WHERE p.member_id = w.member_id AND p.account = 'member'), 0) AS BIGINT)",
    )
    .fetch_all(pool)
    .await
    .expect("wallets");
    assert!(off.is_empty(), "wallets out of balance: {off:?}");
    let unbalanced: Vec<(String,)> = sqlx::query_as(
        "SELECT entry_id FROM stored_value_postings GROUP BY entry_id
         HAVING CAST(SUM(amount) AS BIGINT) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("entries");
    assert!(
        unbalanced.is_empty(),
        "entries not summing to zero: {unbalanced:?}"
    );
}

both_backends!(
    top_ups_hold_limits_verification_and_retries,
    |app| async move {
        create_brand(&app, "coffee").await;
        create_brand(&app, "mall").await;
        let coffee = create_key(&app, "counter", Some("coffee"), None).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let office = create_key(&app, "brand", Some("coffee"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;

        // Above the verification threshold (500.00) an unverified member is refused.
        let (status, body) = topup(&app, &coffee, "coffee", &ann, 50_001).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "real_name_required");

        // A retry with the same key replays the answer; the same top-up id under a new key is a
        // conflict; neither adds money.
        let key = idem();
        let req = json!({ "topup_id": "T-1", "member_id": ann, "amount_cents": 50_000 });
        let (status, first) = app
            .post("/brands/coffee/stored-value/topups", &coffee, &key, &req)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["balance_after_cents"], 50_000);
        let (status, again) = app
            .post("/brands/coffee/stored-value/topups", &coffee, &key, &req)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again, first);
        let (status, body) = app
            .post("/brands/coffee/stored-value/topups", &coffee, &idem(), &req)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "topup_exists");

        let (status, body) = topup(&app, &mall, "mall", &ann, 50_000).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // 1,000.00 is the unverified limit: one more cent is refused, with the numbers.
        let (status, body) = topup(&app, &coffee, "coffee", &ann, 100).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "stored_value_limit_exceeded");
        assert_eq!(body["extra"]["balance_cents"], 100_000);
        assert_eq!(body["extra"]["limit_cents"], 100_000);

        // Real-name verified, the member may hold 5,000.00 and top up more at once.
        let (status, body) = app
            .post(
                &format!("/members/{ann}/verification"),
                &office,
                &idem(),
                &json!({ "reference": "ID-CHECK-1" }),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let (status, body) = topup(&app, &coffee, "coffee", &ann, 400_000).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = topup(&app, &coffee, "coffee", &ann, 1).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "below the smallest top-up: {body}"
        );
        let (status, body) = topup(&app, &coffee, "coffee", &ann, 100).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["extra"]["limit_cents"], 500_000);

        let view = balance(&app, &ann).await;
        assert_eq!(view["balance_cents"], 500_000);
        assert_eq!(view["verified"], true);
        assert_eq!(
            (fund(&view, "coffee"), fund(&view, "mall")),
            (450_000, 50_000)
        );
        assert_eq!(view["entries"].as_array().expect("entries").len(), 3);

        // Who may: another brand's counter may not top up here; the member reads their own.
        let (status, _) = topup(&app, &mall, "coffee", &ann, 100).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = topup(&app, &coffee, "coffee", "no-such-member", 100).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = app
            .post(
                "/brands/coffee/stored-value/topups",
                &coffee,
                &idem(),
                &json!({ "topup_id": "T-x", "member_id": ann, "amount_cents": "10" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "invalid_body");
        assert_books_balance(&app).await;
        app.stop().await;
    }
);

both_backends!(
    concurrent_top_ups_and_payments_never_pass_a_limit_or_overdraw,
    |app| async move {
        create_brand(&app, "coffee").await;
        let coffee = create_key(&app, "counter", Some("coffee"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let app = std::sync::Arc::new(app);

        // 20 top-ups of 100.00 at once against the 1,000.00 limit: exactly 10 land.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let app = app.clone();
            let (coffee, ann) = (coffee.clone(), ann.clone());
            tasks.push(tokio::spawn(async move {
                topup(&app, &coffee, "coffee", &ann, 10_000).await
            }));
        }
        let mut landed = 0;
        for task in tasks {
            let (status, body) = task.await.expect("task");
            match status {
                StatusCode::CREATED => landed += 1,
                StatusCode::UNPROCESSABLE_ENTITY => {
                    assert_eq!(body["code"], "stored_value_limit_exceeded")
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(landed, 10);
        assert_eq!(balance(&app, &ann).await["balance_cents"], 100_000);

        // 25 purchases paying 50.00 each at once from 1,000.00: exactly 20 are paid.
        let mut tasks = Vec::new();
        for i in 0..25 {
            let app = app.clone();
            let (coffee, ann) = (coffee.clone(), ann.clone());
            tasks.push(tokio::spawn(async move {
                app.post(
                    "/brands/coffee/purchases",
                    &coffee,
                    &idem(),
                    &json!({ "order_id": format!("O-{i}"), "member_id": ann,
                    "stored_value_cents": 5_000,
                    "lines": [{ "line_id": "1", "sku": "latte", "quantity": 1,
                        "unit_price_cents": 5_000 }] }),
                )
                .await
            }));
        }
        let mut paid = 0;
        for task in tasks {
            let (status, body) = task.await.expect("task");
            match status {
                StatusCode::CREATED => {
                    paid += 1;
                    assert_eq!(body["stored_value_cents"], 5_000);
                    assert_eq!(body["cash_cents"], 0);
                    assert_eq!(body["points_earned"], 50, "stored value earns like cash");
                }
                StatusCode::UNPROCESSABLE_ENTITY => {
                    assert_eq!(body["code"], "insufficient_stored_value", "{body}")
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(paid, 20);
        let view = balance(&app, &ann).await;
        assert_eq!(view["balance_cents"], 0);
        let (orders,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM purchases WHERE member_id = $1")
                .bind(&ann)
                .fetch_one(app.state.store.read())
                .await
                .expect("count");
        assert_eq!(orders, 20, "a refused payment leaves no purchase behind");
        assert_books_balance(&app).await;
        if let Some(app) = std::sync::Arc::into_inner(app) {
            app.stop().await;
        }
    }
);

both_backends!(
    a_mixed_purchase_refunded_in_two_parts_returns_each_currency_exactly,
    |app| async move {
        create_brand(&app, "coffee").await;
        create_brand(&app, "mall").await;
        let coffee = create_key(&app, "counter", Some("coffee"), None).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        // 1,000 points to spend, from an earlier purchase at the mall (1 point per 1.00).
        let (status, body) = app
            .post(
                "/brands/mall/purchases",
                &mall,
                &idem(),
                &json!({ "order_id": "EARN", "member_id": ann, "lines": [
                    { "line_id": "1", "sku": "tv", "quantity": 1, "unit_price_cents": 100_000 }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // Stored value: 100.00 held by the coffee chain, 50.00 by the mall.
        assert_eq!(
            topup(&app, &coffee, "coffee", &ann, 10_000).await.0,
            StatusCode::CREATED
        );
        assert_eq!(
            topup(&app, &mall, "mall", &ann, 5_000).await.0,
            StatusCode::CREATED
        );

        // 3 × 77.77 = 233.31 at the mall: 1,000 points (10.00), 120.00 of stored value (the
        // mall's own 50.00 first, then 70.00 of the coffee chain's), the rest in cash.
        let (status, p) = app
            .post(
                "/brands/mall/purchases",
                &mall,
                &idem(),
                &json!({ "order_id": "MIX", "member_id": ann, "points_spent": 1_000,
                    "stored_value_cents": 12_000,
                    "lines": [{ "line_id": "a", "sku": "shirt", "quantity": 3,
                        "unit_price_cents": 7_777 }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        assert_eq!(p["total_cents"], 23_331);
        assert_eq!(p["points_value_cents"], 1_000);
        assert_eq!(p["stored_value_cents"], 12_000);
        assert_eq!(p["cash_cents"], 23_331 - 1_000 - 12_000);
        assert_eq!(
            p["eligible_cents"], 22_331,
            "stored value and cash earn; points do not"
        );
        let view = balance(&app, &ann).await;
        assert_eq!(view["balance_cents"], 3_000);
        assert_eq!((fund(&view, "mall"), fund(&view, "coffee")), (0, 3_000));
        let (_, points_mid) = app
            .get(&format!("/members/{ann}/points"), &app.admin_key)
            .await;

        // Refund 1 of 3, then the rest: the parts add up to exactly what was paid.
        let mut back = (0i64, 0i64, 0i64);
        for (refund_id, lines) in [
            ("R1", json!([{ "line_id": "a", "quantity": 1 }])),
            ("R2", json!([])),
        ] {
            let (status, r) = app
                .post(
                    "/brands/mall/purchases/MIX/refunds",
                    &mall,
                    &idem(),
                    &json!({ "refund_id": refund_id, "lines": lines }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{r}");
            back.0 += r["points_restored"].as_i64().expect("points");
            back.1 += r["stored_value_refund_cents"].as_i64().expect("sv");
            back.2 += r["cash_refund_cents"].as_i64().expect("cash");
            if refund_id == "R1" {
                assert_eq!(r["stored_value_refund_cents"], 4_000, "a third of 120.00");
                assert_eq!(r["points_restored"], 333);
                assert_eq!(
                    r["cash_refund_cents"], 3_443,
                    "a third of 103.31, rounded down"
                );
            }
        }
        assert_eq!(back, (1_000, 12_000, 10_331));
        // The stored value went back to the funds it came from, exactly once.
        let view = balance(&app, &ann).await;
        assert_eq!(view["balance_cents"], 15_000);
        assert_eq!(
            (fund(&view, "mall"), fund(&view, "coffee")),
            (5_000, 10_000)
        );
        let (status, body) = app
            .post(
                "/brands/mall/purchases/MIX/refunds",
                &mall,
                &idem(),
                &json!({ "refund_id": "R3" }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing left: {body}"
        );
        let (_, points_after) = app
            .get(&format!("/members/{ann}/points"), &app.admin_key)
            .await;
        assert_eq!(
            points_after["balance"].as_i64().expect("balance"),
            points_mid["balance"].as_i64().expect("balance") + 1_000 - 223,
            "the points spent come back; the 223 earned go"
        );
        let (_, read) = app.get("/brands/mall/purchases/MIX", &mall).await;
        assert_eq!(read["stored_value_cents"], 12_000);
        assert_eq!(read["refunds"][0]["stored_value_refund_cents"], 4_000);
        assert_eq!(read["lines"][0]["stored_value_alloc"], 12_000);

        // Settlement: the coffee chain held the 70.00 the mall accepted, so it pays the mall,
        // and the refunds reverse exactly that.
        run_settlement(&app).await;
        let lines: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT payer, payee, amount_cents, category FROM settlement_lines
             WHERE category = 'stored-value' ORDER BY amount_cents DESC, payer",
        )
        .fetch_all(app.state.store.read())
        .await
        .expect("lines");
        let paid: i64 = lines
            .iter()
            .filter(|l| l.0 == "coffee" && l.1 == "mall")
            .map(|l| l.2)
            .sum();
        let reversed: i64 = lines
            .iter()
            .filter(|l| l.0 == "mall" && l.1 == "coffee")
            .map(|l| l.2)
            .sum();
        assert_eq!((paid, reversed), (7_000, 7_000), "{lines:?}");
        assert_books_balance(&app).await;
        app.stop().await;
    }
);

both_backends!(the_liability_report_equals_the_balances, |app| async move {
    create_brand(&app, "coffee").await;
    create_brand(&app, "mall").await;
    let coffee = create_key(&app, "counter", Some("coffee"), None).await;
    let mall = create_key(&app, "counter", Some("mall"), None).await;
    let coffee_office = create_key(&app, "brand", Some("coffee"), None).await;
    let ann = member_id(&app, "+8613900000001", "Ann").await;
    let bob = member_id(&app, "+8613900000002", "Bob").await;
    topup(&app, &coffee, "coffee", &ann, 30_000).await;
    topup(&app, &coffee, "coffee", &bob, 20_001).await;
    topup(&app, &mall, "mall", &bob, 7_000).await;
    // Bob spends 80.00 at the mall: 70.00 of the mall's fund, then 10.00 of the coffee chain's.
    let (status, body) = app
        .post(
            "/brands/mall/purchases",
            &mall,
            &idem(),
            &json!({ "order_id": "M1", "member_id": bob, "stored_value_cents": 8_000,
                "lines": [{ "line_id": "1", "sku": "x", "quantity": 1,
                    "unit_price_cents": 8_000 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, report) = app.get("/stored-value/liability", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let sum = balance(&app, &ann).await["balance_cents"]
        .as_i64()
        .expect("ann")
        + balance(&app, &bob).await["balance_cents"]
            .as_i64()
            .expect("bob");
    assert_eq!(report["total_outstanding_cents"], sum);
    assert_eq!(sum, 30_000 + 20_001 + 7_000 - 8_000);
    let row = |r: &Value, b: &str| {
        r["brands"]
            .as_array()
            .expect("brands")
            .iter()
            .find(|l| l["brand_id"] == b)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let c = row(&report, "coffee");
    assert_eq!(c["outstanding_cents"], 30_000 + 20_001 - 1_000);
    assert_eq!(c["members"], 2);
    assert_eq!(c["reserve_percent"], 30);
    assert_eq!(
        c["reserve_required_cents"], 14_701,
        "30% of 490.01, rounded up"
    );
    assert_eq!(c["topped_up_cents"], 50_001);
    assert_eq!(c["spent_cents"], 1_000);
    assert_eq!(row(&report, "mall")["outstanding_cents"], 0);
    assert_eq!(report["total_dormant_cents"], 0);

    // An admin sets the coffee chain's reserve to 40%; the audit log keeps why.
    let (status, line) = app
        .call(
            reqwest::Method::PUT,
            "/brands/coffee/stored-value/reserve",
            Some(&app.admin_key),
            Some(&idem()),
            Some(&json!({ "reserve_percent": 40, "reason": "regulator letter 2026-11" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{line}");
    assert_eq!(
        line["reserve_required_cents"], 19_601,
        "40% of 490.01, rounded up"
    );
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            "/brands/coffee/stored-value/reserve",
            Some(&coffee_office),
            Some(&idem()),
            Some(&json!({ "reserve_percent": 0, "reason": "mine" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins set reserves");

    // A year and a day without activity: both balances are dormant.
    app.clock.advance_ms(366 * DAY_MS);
    let (_, report) = app
        .get("/stored-value/liability?brand_id=coffee", &app.admin_key)
        .await;
    assert_eq!(report["brands"].as_array().expect("brands").len(), 1);
    assert_eq!(row(&report, "coffee")["dormant_cents"], 49_001);
    assert_eq!(row(&report, "coffee")["dormant_members"], 2);

    // A brand sees its own line only; a counter key sees none.
    let (status, own) = app.get("/stored-value/liability", &coffee_office).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["brands"].as_array().expect("brands").len(), 1);
    let (status, _) = app
        .get("/stored-value/liability?brand_id=mall", &coffee_office)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/stored-value/liability", &coffee).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_books_balance(&app).await;
    app.stop().await;
});

/// Runs `coalition stored-value …` (the real binary) against the test's database.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
        .env("COALITION_DATABASE_URL", app.state.config.database_url())
        .env_remove("COALITION_CONFIG")
        .arg("stored-value")
        .args(args)
        .output()
        .expect("run coalition")
}

both_backends!(
    the_command_line_tops_up_once_and_reports,
    |app| async move {
        create_brand(&app, "coffee").await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let topup_args = [
            "topup",
            "--brand",
            "coffee",
            "--member",
            &ann,
            "--amount-cents",
            "5000",
            "--topup-id",
            "CLI-1",
        ];
        let out = cli(&app, &topup_args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(view["balance_after_cents"], 5_000);
        // Run again after, say, a lost answer: refused by the top-up id, not doubled.
        let again = cli(&app, &topup_args);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("topup_exists"));
        assert_eq!(balance(&app, &ann).await["balance_cents"], 5_000);

        let out = cli(&app, &["liability"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["total_outstanding_cents"], 5_000);
        let out = cli(
            &app,
            &[
                "reserve",
                "--brand",
                "coffee",
                "--percent",
                "20",
                "--reason",
                "board",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(line["reserve_required_cents"], 1_000);
        let out = cli(&app, &["balance", &ann]);
        let view: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(view["funds"][0]["brand_id"], "coffee");
        app.stop().await;
    }
);
