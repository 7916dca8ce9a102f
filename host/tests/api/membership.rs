//! The paid membership card over HTTP on both databases: plan validation, buying with cash and
//! with stored value, retries and concurrent buys, renewal from the expiry, the points
//! multiplier and the tier floor while the card is in force (and not after), renewal notices
//! once per card and period, the pro-rata cancellation back into stored value, the revenue
//! report, and the fee settled between the selling brand and the plan's owner.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use coalition::foundation::clock::Clock;

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;
use crate::settlement::run_settlement;

const DAY_MS: i64 = 86_400_000;
const MONTH_MS: i64 = 30 * DAY_MS;

async fn create_plan(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/membership/plans", &app.admin_key, &idem(), &body)
        .await
}

fn plus_plan(id: &str, brand: &str, fee_cents: i64) -> Value {
    json!({ "id": id, "title": "Plus", "brand_id": brand, "fee_cents": fee_cents,
        "period": "month", "benefits": ["free-delivery", "lounge"],
        "points_multiplier_percent": 150, "tier_floor": "silver", "renewal_notice_days": 7 })
}

async fn buy(
    app: &TestApp,
    key: &str,
    member: &str,
    plan: &str,
    payment: &str,
    purchase_id: &str,
) -> (StatusCode, Value) {
    app.post(
        &format!("/members/{member}/membership"),
        key,
        &idem(),
        &json!({ "purchase_id": purchase_id, "plan_id": plan, "payment": payment }),
    )
    .await
}

async fn cancel(app: &TestApp, key: &str, member: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/members/{member}/membership/cancel"),
        Some(key),
        Some(&idem()),
        None,
    )
    .await
}

async fn stored_value(app: &TestApp, member: &str) -> i64 {
    let (status, body) = app
        .get(&format!("/members/{member}/stored-value"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["balance_cents"].as_i64().expect("balance")
}

async fn topup(app: &TestApp, key: &str, brand: &str, member: &str, cents: i64) {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/stored-value/topups"),
            key,
            &idem(),
            &json!({ "topup_id": format!("T-{}", idem()), "member_id": member,
                "amount_cents": cents }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn purchase(app: &TestApp, key: &str, brand: &str, member: &str, cents: i64) -> Value {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            key,
            &idem(),
            &json!({ "order_id": format!("O-{}", idem()), "member_id": member,
                "lines": [{ "line_id": "1", "sku": "x", "quantity": 1,
                    "unit_price_cents": cents }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn count(app: &TestApp, sql: &str, member: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(member)
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
    n
}

/// Every stored-value wallet equals its funds and its `member` postings.
async fn assert_stored_value_books_balance(app: &TestApp) {
    let off: Vec<(String,)> = sqlx::query_as(
        "SELECT w.member_id FROM stored_value_wallets w
         WHERE w.balance <> CAST(COALESCE((SELECT SUM(f.balance) FROM stored_value_funds f
                WHERE f.member_id = w.member_id), 0) AS BIGINT)
            OR w.balance <> CAST(COALESCE((SELECT SUM(p.amount) FROM stored_value_postings p
                WHERE p.member_id = w.member_id AND p.account = 'member'), 0) AS BIGINT)",
    )
    .fetch_all(app.state.store.read())
    .await
    .expect("wallets");
    assert!(off.is_empty(), "wallets out of balance: {off:?}");
}

both_backends!(plans_are_validated_with_stable_codes, |app| async move {
    create_brand(&app, "mall").await;
    let mall_office = create_key(&app, "brand", Some("mall"), None).await;
    for (change, code) in [
        (json!({ "fee_cents": 0 }), "invalid_fee"),
        (
            json!({ "points_multiplier_percent": 99 }),
            "invalid_multiplier",
        ),
        (
            json!({ "points_multiplier_percent": 501 }),
            "invalid_multiplier",
        ),
        (json!({ "benefits": ["Free Delivery"] }), "invalid_benefit"),
        (json!({ "benefits": ["a", "a"] }), "invalid_benefit"),
        (json!({ "tier_floor": "diamond" }), "unknown_tier"),
        (json!({ "title": " " }), "invalid_plan_title"),
        (json!({ "renewal_notice_days": 91 }), "invalid_notice_days"),
        (json!({ "brand_id": "nobody" }), "unknown_brand"),
    ] {
        let mut body = plus_plan("plus", "mall", 3_000);
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, problem) = create_plan(&app, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {problem}");
        assert_eq!(problem["code"], code, "{change}");
    }
    let (status, body) = create_plan(
        &app,
        json!({ "id": "p", "title": "P", "brand_id": "mall",
        "fee_cents": 100, "period": "week" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Only admins create plans.
    let (status, _) = app
        .post(
            "/membership/plans",
            &mall_office,
            &idem(),
            &plus_plan("x", "mall", 1),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, plan) = create_plan(&app, plus_plan("plus", "mall", 3_000)).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["benefits"], json!(["free-delivery", "lounge"]));
    let (status, body) = create_plan(&app, plus_plan("plus", "mall", 3_000)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "plan_exists");
    let (status, plan) = app
        .call(
            Method::PATCH,
            "/membership/plans/plus",
            Some(&app.admin_key),
            Some(&idem()),
            Some(&json!({ "fee_cents": 3_500, "tier_floor": "" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["fee_cents"], 3_500);
    assert_eq!(plan["tier_floor"], Value::Null);
    let (status, plans) = app.get("/membership/plans", &mall_office).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plans.as_array().expect("plans").len(), 1);
    app.stop().await;
});

both_backends!(
    buying_with_cash_and_stored_value_retries_and_renewal,
    |app| async move {
        create_brand(&app, "mall").await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let bob = member_id(&app, "+8613900000002", "Bob").await;
        create_plan(&app, plus_plan("plus", "mall", 3_000)).await;

        // Cash at the counter; a retry with the same key replays it, one card.
        let key = idem();
        let req = json!({ "purchase_id": "M-1", "plan_id": "plus", "payment": "cash" });
        let (status, first) = app
            .post(&format!("/members/{ann}/membership"), &mall, &key, &req)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["payment"]["kind"], "sale");
        assert_eq!(
            first["card"]["expires_at_ms"].as_i64(),
            Some(app.clock.now_ms() + MONTH_MS)
        );
        let (status, again) = app
            .post(&format!("/members/{ann}/membership"), &mall, &key, &req)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again, first);
        let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM membership_cards WHERE member_id = $1";
        assert_eq!(count(&app, sql, &ann).await, 1);
        // The same order id under another key is a conflict.
        let (status, body) = buy(&app, &mall, &ann, "plus", "cash", "M-1").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "membership_purchase_exists");

        // Renewal ten days in: one more month from the expiry, not from now.
        let expiry = first["card"]["expires_at_ms"].as_i64().expect("expiry");
        app.clock.advance_ms(10 * DAY_MS);
        let (status, renewed) = buy(&app, &mall, &ann, "plus", "cash", "M-2").await;
        assert_eq!(status, StatusCode::CREATED, "{renewed}");
        assert_eq!(renewed["payment"]["kind"], "renewal");
        assert_eq!(renewed["payment"]["period_start_ms"], expiry);
        assert_eq!(renewed["card"]["expires_at_ms"], expiry + MONTH_MS);
        assert_eq!(renewed["card"]["id"], first["card"]["id"]);

        // Stored value: not enough -> 422 and nothing recorded; enough -> the balance drops.
        topup(&app, &mall, "mall", &bob, 2_000).await;
        let (status, body) = buy(&app, &mall, &bob, "plus", "stored_value", "M-3").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "insufficient_stored_value");
        assert_eq!(
            count(&app, sql, &bob).await,
            0,
            "a refused payment leaves no card"
        );
        let fees = "SELECT CAST(COUNT(*) AS BIGINT) FROM membership_fees WHERE member_id = $1";
        assert_eq!(count(&app, fees, &bob).await, 0);
        assert_eq!(stored_value(&app, &bob).await, 2_000);
        topup(&app, &mall, "mall", &bob, 2_000).await;
        let (status, body) = buy(&app, &mall, &bob, "plus", "stored_value", "M-3").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(stored_value(&app, &bob).await, 1_000);

        // Another plan while one is in force is refused; a blocked member may not buy.
        create_plan(&app, plus_plan("gold-card", "mall", 9_000)).await;
        let (status, body) = buy(&app, &mall, &bob, "gold-card", "cash", "M-4").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "membership_active");

        let (status, view) = app
            .get(&format!("/members/{ann}/membership"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["card"]["in_force"], true);
        assert_eq!(view["benefits"], json!(["free-delivery", "lounge"]));
        assert_eq!(view["history"].as_array().expect("history").len(), 2);
        assert_stored_value_books_balance(&app).await;
        app.stop().await;
    }
);

both_backends!(
    concurrent_buys_never_create_two_active_cards,
    |app| async move {
        create_brand(&app, "mall").await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        create_plan(&app, plus_plan("plus", "mall", 3_000)).await;
        create_plan(&app, plus_plan("other", "mall", 3_000)).await;
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..12 {
            let app = app.clone();
            let (mall, ann) = (mall.clone(), ann.clone());
            let plan = if i % 2 == 0 { "plus" } else { "other" };
            tasks.push(tokio::spawn(async move {
                buy(&app, &mall, &ann, plan, "cash", &format!("C-{i}")).await
            }));
        }
        for task in tasks {
            let (status, body) = task.await.expect("task");
            assert!(
                status == StatusCode::CREATED || body["code"] == "membership_active",
                "{status}: {body}"
            );
        }
        let active = "SELECT CAST(COUNT(*) AS BIGINT) FROM membership_cards
                      WHERE member_id = $1 AND status = 'active'";
        assert_eq!(count(&app, active, &ann).await, 1);
        // Every paid period belongs to the one card, and the periods follow each other.
        let (status, view) = app
            .get(&format!("/members/{ann}/membership"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK);
        let sold = view["history"].as_array().expect("history").len() as i64;
        assert_eq!(
            view["card"]["expires_at_ms"].as_i64().expect("expiry"),
            app.clock.now_ms() + sold * MONTH_MS
        );
        if let Some(app) = std::sync::Arc::into_inner(app) {
            app.stop().await;
        }
    }
);

both_backends!(
    the_card_multiplies_base_earn_and_floors_the_tier_until_it_expires,
    |app| async move {
        create_brand(&app, "mall").await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        create_plan(&app, plus_plan("plus", "mall", 3_000)).await;

        let before = purchase(&app, &mall, "mall", &ann, 10_001).await;
        assert_eq!(before["base_points"], 100);
        assert_eq!(before["points_multiplier_percent"], 100);
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(tier["tier"]["code"], "bronze");

        let (status, body) = buy(&app, &mall, &ann, "plus", "cash", "M-1").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // ×1.5 of the base: 100.01 earns 100, ×1.5 = 150; 33.33 earns 33, ×1.5 = 49 (down).
        let p = purchase(&app, &mall, "mall", &ann, 10_001).await;
        assert_eq!(p["base_points"], 150, "{p}");
        assert_eq!(p["points_multiplier_percent"], 150);
        assert_eq!(p["lines"][0]["earned_points"], 150);
        assert_eq!(
            purchase(&app, &mall, "mall", &ann, 3_333).await["base_points"],
            49
        );
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(tier["tier"]["code"], "silver", "{tier}");
        assert_eq!(tier["earned_tier"]["code"], "bronze");
        assert_eq!(tier["points_pay_max_percent"], 15);
        let (_, member) = app.get(&format!("/members/{ann}"), &app.admin_key).await;
        assert_eq!(member["tier"], "silver", "the member view shows the floor");

        // Past the expiry: nothing.
        app.clock.advance_ms(MONTH_MS);
        let p = purchase(&app, &mall, "mall", &ann, 10_001).await;
        assert_eq!(p["base_points"], 100, "{p}");
        assert_eq!(p["points_multiplier_percent"], 100);
        let (_, tier) = app
            .get(&format!("/members/{ann}/tier"), &app.admin_key)
            .await;
        assert_eq!(tier["tier"]["code"], "bronze");
        let (_, member) = app.get(&format!("/members/{ann}"), &app.admin_key).await;
        assert_eq!(member["tier"], "bronze");
        let (_, view) = app
            .get(&format!("/members/{ann}/membership"), &app.admin_key)
            .await;
        assert_eq!(view["card"]["in_force"], false);
        assert_eq!(view["benefits"], json!([]));
        let (status, body) = cancel(&app, &app.admin_key, &ann).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "membership_expired");
        // Bought again after expiry: a new card, a sale.
        let (status, body) = buy(&app, &mall, &ann, "plus", "cash", "M-2").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["payment"]["kind"], "sale");
        app.stop().await;
    }
);

both_backends!(renewal_notices_once_per_card_and_period, |app| async move {
    create_brand(&app, "mall").await;
    let mall = create_key(&app, "counter", Some("mall"), None).await;
    let mall_office = create_key(&app, "brand", Some("mall"), None).await;
    let ann = member_id(&app, "+8613900000001", "Ann").await;
    let bob = member_id(&app, "+8613900000002", "Bob").await;
    create_plan(&app, plus_plan("plus", "mall", 3_000)).await;
    buy(&app, &mall, &ann, "plus", "cash", "M-1").await;
    app.clock.advance_ms(10 * DAY_MS);
    buy(&app, &mall, &bob, "plus", "cash", "M-2").await;

    let run = || async {
        let (status, body) = app
            .call(
                Method::POST,
                "/jobs/membership-renewals",
                Some(&app.admin_key),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["noticed"].as_i64().expect("noticed")
    };
    assert_eq!(run().await, 0, "nobody within 7 days of expiry yet");
    // Day 24: Ann's card (day 30) is within 7 days, Bob's (day 40) is not.
    app.clock.advance_ms(14 * DAY_MS);
    let (status, due) = app.get("/membership/renewals", &mall_office).await;
    assert_eq!(status, StatusCode::OK, "{due}");
    assert_eq!(due.as_array().expect("due").len(), 1);
    assert_eq!(due[0]["member_id"], ann.as_str());
    assert_eq!(due[0]["noticed_at_ms"], Value::Null);
    let (_, wide) = app
        .get("/membership/renewals?within_days=30", &app.admin_key)
        .await;
    assert_eq!(wide.as_array().expect("wide").len(), 2);
    assert_eq!(run().await, 1);
    assert_eq!(run().await, 0, "a second run records none");
    let (_, view) = app
        .get(&format!("/members/{ann}/membership"), &app.admin_key)
        .await;
    assert_eq!(view["notices"].as_array().expect("notices").len(), 1);
    // A renewal moves the expiry: the next period gets its own notice in time.
    buy(&app, &mall, &ann, "plus", "cash", "M-3").await;
    app.clock.advance_ms(MONTH_MS);
    assert_eq!(
        run().await,
        1,
        "Ann's renewed period (Bob's card has expired)"
    );
    app.stop().await;
});

both_backends!(
    pro_rata_cancellation_refunds_stored_value_exactly,
    |app| async move {
        create_brand(&app, "mall").await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let bob = member_id(&app, "+8613900000002", "Bob").await;
        create_plan(&app, plus_plan("plus", "mall", 1_000)).await;
        topup(&app, &mall, "mall", &ann, 5_000).await;
        let (status, body) = buy(&app, &mall, &ann, "plus", "stored_value", "M-1").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(stored_value(&app, &ann).await, 4_000);

        // Ten of thirty days used: 1,000 × 20/30 = 666.67 -> 666 back to stored value.
        app.clock.advance_ms(10 * DAY_MS);
        let (status, c) = cancel(&app, &mall, &ann).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert_eq!(c["refund_cents"], 666);
        assert_eq!(c["stored_value_refund_cents"], 666);
        assert_eq!(c["cash_refund_cents"], 0);
        assert_eq!(c["card"]["status"], "cancelled");
        assert_eq!(stored_value(&app, &ann).await, 4_666);
        // Idempotent: cancelling again answers the same, and gives nothing more.
        let (status, again) = cancel(&app, &app.admin_key, &ann).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["refund_cents"], 666);
        assert_eq!(stored_value(&app, &ann).await, 4_666);
        // Benefits stop at once.
        let p = purchase(&app, &mall, "mall", &ann, 10_000).await;
        assert_eq!(p["points_multiplier_percent"], 100);

        // Cash, renewed ahead: the current period pro rata, the paid-ahead one whole.
        buy(&app, &mall, &bob, "plus", "cash", "B-1").await;
        buy(&app, &mall, &bob, "plus", "cash", "B-2").await;
        app.clock.advance_ms(15 * DAY_MS);
        let (status, c) = cancel(&app, &app.admin_key, &bob).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert_eq!(c["cash_refund_cents"], 500 + 1_000);
        assert_eq!(c["refunds"].as_array().expect("refunds").len(), 2);

        // Revenue: 3 × 10.00 sold or renewed, 21.66 refunded.
        let (status, revenue) = app.get("/membership/revenue", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{revenue}");
        assert_eq!(revenue[0]["brand_id"], "mall");
        assert_eq!(revenue[0]["sales_cents"], 2_000);
        assert_eq!(revenue[0]["renewals_cents"], 1_000);
        assert_eq!(revenue[0]["refunds_cents"], 2_166);
        assert_eq!(revenue[0]["net_cents"], 3_000 - 2_166);
        assert_eq!(revenue[0]["active_cards"], 0);
        assert_stored_value_books_balance(&app).await;
        app.stop().await;
    }
);

both_backends!(
    a_card_sold_for_another_brand_settles_the_fee_to_its_owner,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "cinema").await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        let mall_office = create_key(&app, "brand", Some("mall"), None).await;
        let cinema_office = create_key(&app, "brand", Some("cinema"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        create_plan(&app, plus_plan("plus", "mall", 3_000)).await;
        let (status, body) = buy(&app, &cinema, &ann, "plus", "cash", "C-1").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (kind, funding, honouring, value): (String, String, String, i64) = sqlx::query_as(
            "SELECT kind, funding_brand, honouring_brand, value_cents FROM settle_events
             WHERE subject_kind = 'membership_payment'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("event");
        assert_eq!(
            (kind.as_str(), funding.as_str(), honouring.as_str(), value),
            ("membership-fee", "cinema", "mall", 3_000)
        );
        // Revenue belongs to the owner; the seller's key does not see it.
        let (_, revenue) = app.get("/membership/revenue", &mall_office).await;
        assert_eq!(revenue[0]["sold_by_others_cents"], 3_000);
        let (_, revenue) = app.get("/membership/revenue", &cinema_office).await;
        assert_eq!(revenue, json!([]));

        // Half the month used, cancelled: half the fee reverses.
        app.clock.advance_ms(15 * DAY_MS);
        let (status, c) = cancel(&app, &cinema, &ann).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert_eq!(c["cash_refund_cents"], 1_500);

        run_settlement(&app).await;
        let lines: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT payer, payee, amount_cents FROM settlement_lines
             WHERE category = 'membership-fee' ORDER BY amount_cents DESC",
        )
        .fetch_all(app.state.store.read())
        .await
        .expect("lines");
        let paid: i64 = lines
            .iter()
            .filter(|l| l.0 == "cinema" && l.1 == "mall")
            .map(|l| l.2)
            .sum();
        let reversed: i64 = lines
            .iter()
            .filter(|l| l.0 == "mall" && l.1 == "cinema")
            .map(|l| l.2)
            .sum();
        assert_eq!((paid, reversed), (3_000, 1_500), "{lines:?}");
        app.stop().await;
    }
);

/// Runs `coalition membership …` (the real binary) against the test's database. The command
/// line runs on the wall clock, so this test asserts only what does not depend on it.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
        .env("COALITION_DATABASE_URL", app.state.config.database_url())
        .env_remove("COALITION_CONFIG")
        .arg("membership")
        .args(args)
        .output()
        .expect("run coalition");
    if !out.status.success() {
        return json!({ "error": String::from_utf8_lossy(&out.stderr) });
    }
    serde_json::from_slice(&out.stdout).expect("json")
}

both_backends!(
    the_command_line_sells_once_shows_and_cancels,
    |app| async move {
        create_brand(&app, "mall").await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let plan = cli(
            &app,
            &[
                "create-plan",
                "--id",
                "plus",
                "--title",
                "Plus",
                "--brand",
                "mall",
                "--fee-cents",
                "3000",
                "--period",
                "month",
                "--benefit",
                "free-parking",
                "--multiplier-percent",
                "150",
            ],
        );
        assert_eq!(plan["benefits"], json!(["free-parking"]), "{plan}");
        assert_eq!(cli(&app, &["plans"])[0]["id"], "plus");
        let buy = [
            "buy",
            "--member",
            &ann,
            "--plan",
            "plus",
            "--purchase-id",
            "CLI-1",
        ];
        let sold = cli(&app, &buy);
        assert_eq!(sold["payment"]["kind"], "sale", "{sold}");
        assert_eq!(sold["payment"]["selling_brand"], "mall");
        // Run again after, say, a lost answer: refused by the purchase id, not sold twice.
        let again = cli(&app, &buy);
        assert!(
            again["error"]
                .as_str()
                .is_some_and(|e| e.contains("membership_purchase_exists")),
            "{again}"
        );
        let shown = cli(&app, &["show", &ann]);
        assert_eq!(shown["card"]["in_force"], true, "{shown}");
        assert_eq!(shown["history"].as_array().expect("history").len(), 1);
        let due = cli(&app, &["renewals", "--within-days", "31"]);
        assert_eq!(due.as_array().expect("due").len(), 1, "{due}");
        let cancelled = cli(&app, &["cancel", &ann]);
        assert_eq!(cancelled["card"]["status"], "cancelled", "{cancelled}");
        let revenue = cli(&app, &["revenue", "--brand", "mall"]);
        assert_eq!(revenue[0]["sales_cents"], 3_000, "{revenue}");
        assert_eq!(revenue[0]["refunds_cents"], cancelled["refund_cents"]);
        assert_eq!(revenue[0]["active_cards"], 0);
        app.stop().await;
    }
);
