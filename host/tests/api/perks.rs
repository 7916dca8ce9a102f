//! Perks end to end over HTTP with the real example plugins: earn at the restaurant, see and
//! redeem the cinema perk, apply its coupon at the cinema counter, buy, refund; stock under
//! 200 concurrent redemptions; per-member, per-tier and per-period limits; plugin refusals.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{
    cinema_template, create_brand, create_key, idem, install_plugin as install, member_id,
};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;

async fn balance(app: &TestApp, member: &str) -> i64 {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["balance"].as_i64().expect("balance")
}

async fn scalar(app: &TestApp, sql: &str, arg: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(arg)
        .fetch_one(app.state.store.read())
        .await
        .expect("query");
    n
}

async fn set_inventory(app: &TestApp, key: &str, plugin: &str, perk: &str, body: Value) {
    let (status, inv) = app
        .call(
            reqwest::Method::PUT,
            &format!("/perks/{plugin}/{perk}/inventory"),
            Some(key),
            Some(&idem()),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{inv}");
}

async fn buy(
    app: &TestApp,
    counter: &str,
    brand: &str,
    member: &str,
    order: &str,
    cents: i64,
) -> Value {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            counter,
            &idem(),
            &json!({ "order_id": order, "member_id": member, "lines": [
                { "line_id": "1", "sku": "set", "category": "dining", "quantity": 1,
                  "unit_price_cents": cents } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// The mall and parking brands with free parking offered at every tier; returns the parking
/// counter's key.
async fn free_parking(app: &TestApp) -> String {
    create_brand(app, "mall").await;
    create_brand(app, "parking").await;
    let parking = create_key(app, "counter", Some("parking"), None).await;
    install(app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
    parking
}

/// Redeems free parking for `member` at the parking counter; returns the redemption.
async fn redeem_parking(app: &TestApp, parking: &str, member: &str) -> Value {
    let (status, redeemed) = app
        .post(
            &format!("/members/{member}/perks/parking-perk/parking-2h/redeem"),
            parking,
            &idem(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{redeemed}");
    redeemed
}

fn redeem_path(member: &str) -> String {
    format!("/members/{member}/perks/cinema-dinner/cinema-ticket-half/redeem")
}

async fn event_value(app: &TestApp, kind: &str, subject: &str) -> (i64, i64, String, String) {
    let (points, value, funding, honouring): (i64, i64, String, String) = sqlx::query_as(
        "SELECT points, value_cents, funding_brand, honouring_brand FROM settle_events
         WHERE kind = $1 AND subject_id = $2",
    )
    .bind(kind)
    .bind(subject)
    .fetch_one(app.state.store.read())
    .await
    .unwrap_or_else(|err| panic!("no {kind} event for {subject}: {err}"));
    (points, value, funding, honouring)
}

both_backends!(
    earn_at_restaurant_redeem_cinema_perk_use_coupon_and_refund,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let restaurant_office = create_key(&app, "brand", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        let member = member_id(&app, "+8613900000001", "Ann").await;
        let member_key = create_key(&app, "member", None, Some(&member)).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        set_inventory(
            &app,
            &restaurant_office,
            "cinema-dinner",
            "cinema-ticket-half",
            json!({ "funding_brand": "restaurant", "total_stock": 10, "per_member_limit": 2 }),
        )
        .await;

        // Dinner for 600.00 earns 600 points and unlocks the perk.
        buy(&app, &restaurant, "restaurant", &member, "R-1", 60_000).await;
        assert_eq!(balance(&app, &member).await, 600);
        let (status, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{perks}");
        let list = perks["perks"].as_array().expect("perks");
        assert_eq!(list.len(), 1, "{perks}");
        assert_eq!(list[0]["id"], "cinema-ticket-half");
        assert_eq!(list[0]["remaining_stock"], 10);
        assert_eq!(list[0]["redemptions_left"], 2);

        // Redeem: 500 points, one coupon, one unit of stock; the retry is applied once.
        let key = idem();
        let body = json!({ "expected_cost_points": 500, "device_id": "app-1" });
        let (status, redeemed) = app
            .post(&redeem_path(&member), &member_key, &key, &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{redeemed}");
        assert_eq!(redeemed["points"], 500);
        assert_eq!(redeemed["balance_after"], 100);
        assert_eq!(redeemed["remaining_stock"], 9);
        assert_eq!(redeemed["device_id"], "app-1");
        let code = redeemed["coupon"]["code"]
            .as_str()
            .expect("code")
            .to_owned();
        assert_eq!(code.len(), 16);
        let (status, again) = app
            .post(&redeem_path(&member), &member_key, &key, &body)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again, redeemed);
        assert_eq!(balance(&app, &member).await, 100);
        let redemption = redeemed["id"].as_str().expect("id").to_owned();
        // The funding brand's list shows it with its coupon; a member key may not list.
        let (status, lines) = app.get("/perks/redemptions", &restaurant_office).await;
        assert_eq!(status, StatusCode::OK, "{lines}");
        assert_eq!(lines.as_array().map(Vec::len), Some(1), "{lines}");
        assert_eq!(lines[0]["id"], redemption.as_str());
        assert_eq!(lines[0]["coupon_code"], code.as_str());
        assert_eq!(lines[0]["honouring_brand"], "cinema");
        let (status, _) = app
            .get("/perks/redemptions?brand_id=cinema", &restaurant_office)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, by_cinema) = app
            .get("/perks/redemptions?brand_id=cinema", &app.admin_key)
            .await;
        assert_eq!(by_cinema.as_array().map(Vec::len), Some(1), "{by_cinema}");
        let (_, by_mall) = app
            .get("/perks/redemptions?brand_id=mall", &app.admin_key)
            .await;
        assert_eq!(by_mall.as_array().map(Vec::len), Some(0), "{by_mall}");
        let (status, _) = app.get("/perks/redemptions", &member_key).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions WHERE member_id = $1",
                &member
            )
            .await,
            1
        );
        assert_eq!(
            event_value(&app, "perk-redeemed", &redemption).await,
            (500, 4000, "restaurant".into(), "cinema".into())
        );
        let (_, receipts) = app
            .get(
                &format!("/receipts?subject_kind=redemption&subject_id={redemption}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(receipts[0]["hook"], "redeem-perk", "{receipts}");

        // 100 points left: the 500-point perk is no longer shown, unless asked for.
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(
            perks["perks"].as_array().expect("perks").len(),
            0,
            "{perks}"
        );
        let (_, perks) = app
            .get(
                &format!("/members/{member}/perks?include_unaffordable=true"),
                &member_key,
            )
            .await;
        assert_eq!(perks["perks"][0]["affordable"], false, "{perks}");
        assert_eq!(perks["perks"][0]["remaining_stock"], 9, "{perks}");

        // The coupon: the member sees it; the cinema counter can look it up, the restaurant's not.
        let (_, coupons) = app
            .get(&format!("/members/{member}/coupons"), &member_key)
            .await;
        assert_eq!(coupons[0]["code"], code.as_str(), "{coupons}");
        assert_eq!(coupons[0]["status"], "issued");
        let (status, _) = app
            .get(&format!("/brands/cinema/coupons/{code}"), &cinema)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app
            .get(&format!("/brands/restaurant/coupons/{code}"), &restaurant)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // At the cinema: two tickets at 50.00 and popcorn; 50% off tickets, capped at 40.00.
        let lines = json!([
            { "line_id": "t", "sku": "ticket-2d", "category": "ticket", "quantity": 2,
              "unit_price_cents": 5000 },
            { "line_id": "p", "sku": "popcorn", "category": "snacks", "quantity": 1,
              "unit_price_cents": 1200 }
        ]);
        let (status, checkout) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "lines": lines, "coupon_codes": [code] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        assert_eq!(checkout["discount_cents"], 4000, "{checkout}");
        assert_eq!(checkout["payable_cents"], 7200);
        assert_eq!(checkout["lines"][0]["discount_cents"], 4000);
        assert_eq!(checkout["lines"][1]["discount_cents"], 0);
        assert_eq!(checkout["max_points_payable"], 100, "balance caps it");
        let checkout_id = checkout["id"].as_str().expect("id").to_owned();
        // The coupon is reserved: a second checkout cannot take it.
        let (status, second) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "lines": lines, "coupon_codes": [code] }),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{second}");
        assert_eq!(second["code"], "coupon_reserved");

        // The purchase redeems it; 100 points pay 1.00; 71.00 paid in money earns 71.
        let (status, purchase) = app
            .post(
                "/brands/cinema/purchases",
                &cinema,
                &idem(),
                &json!({ "order_id": "CIN-1", "member_id": member, "lines": lines,
                         "points_spent": 100, "checkout_id": checkout_id }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{purchase}");
        assert_eq!(purchase["discount_cents"], 4000);
        assert_eq!(purchase["cash_cents"], 7100);
        assert_eq!(purchase["base_points"], 71);
        assert_eq!(balance(&app, &member).await, 71);
        let (_, coupon) = app
            .get(&format!("/brands/cinema/coupons/{code}"), &cinema)
            .await;
        assert_eq!(coupon["status"], "redeemed", "{coupon}");
        assert_eq!(coupon["discount_cents"], 4000);
        assert_eq!(
            event_value(&app, "coupon-honoured", &code).await,
            (0, 4000, "restaurant".into(), "cinema".into())
        );
        // A checkout completes one purchase only.
        let (status, reused) = app
            .post(
                "/brands/cinema/purchases",
                &cinema,
                &idem(),
                &json!({ "order_id": "CIN-2", "member_id": member, "lines": lines,
                         "checkout_id": checkout_id }),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{reused}");
        assert_eq!(reused["code"], "checkout_completed");

        // Full refund: the coupon is voided, the perk's 500 points and its stock come back,
        // the 100 points paid come back, the 71 earned are clawed back.
        let (status, refund) = app
            .post(
                "/brands/cinema/purchases/CIN-1/refunds",
                &cinema,
                &idem(),
                &json!({ "refund_id": "RF-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{refund}");
        assert_eq!(refund["coupons_voided"], json!([code]), "{refund}");
        assert_eq!(refund["perk_points_restored"], 500);
        assert_eq!(refund["cash_refund_cents"], 7100);
        assert_eq!(balance(&app, &member).await, 600);
        let (_, coupon) = app
            .get(&format!("/brands/cinema/coupons/{code}"), &cinema)
            .await;
        assert_eq!(coupon["status"], "voided", "{coupon}");
        let (_, history) = app
            .get(&format!("/members/{member}/redemptions"), &member_key)
            .await;
        assert_eq!(history[0]["status"], "reversed", "{history}");
        let (_, inventory) = app.get("/perks/inventory", &app.admin_key).await;
        assert_eq!(inventory[0]["remaining"], 10, "{inventory}");
        assert_eq!(
            event_value(&app, "refund", &code).await,
            (0, 4000, "restaurant".into(), "cinema".into())
        );
        assert_eq!(
            event_value(&app, "refund", &redemption).await,
            (500, 4000, "restaurant".into(), "cinema".into())
        );
        // The perk can be redeemed again (two per member; the reversed one does not count).
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(perks["perks"][0]["redemptions_left"], 2, "{perks}");
        // Settlement sees the same month as the ledger: the purchases, the perk, the coupon and
        // their refunds all settle, and every reconciliation check passes (the perk's points
        // are redeemed on the funding brand's account in both).
        let (status, run) = app
            .post("/settlement/run", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["held"], 0, "{run}");
        let (status, report) = app
            .get("/settlement/periods/2026-03/reconciliation", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["ok"], true, "{report}");
        app.stop().await;
    }
);

both_backends!(
    two_hundred_concurrent_redemptions_of_fifty_in_stock,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        set_inventory(
            &app,
            &app.admin_key,
            "cinema-dinner",
            "cinema-ticket-half",
            json!({ "funding_brand": "restaurant", "total_stock": 50 }),
        )
        .await;
        let mut members = Vec::new();
        for i in 0..100 {
            let id = member_id(&app, &format!("+86139100{i:05}"), "M").await;
            // 1,000.00 at the restaurant: 1,000 points, enough for two perks.
            buy(
                &app,
                &restaurant,
                "restaurant",
                &id,
                &format!("R-{i}"),
                100_000,
            )
            .await;
            members.push(id);
        }
        let admin = app.admin_key.clone();
        let mut tasks = Vec::new();
        for attempt in 0..200 {
            let member = members[attempt % 100].clone();
            let client = app.client.clone();
            let url = format!("{}{}", app.base, redeem_path(&member));
            let admin = admin.clone();
            tasks.push(tokio::spawn(async move {
                let key = idem();
                let resp = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .header("Idempotency-Key", &key)
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("send");
                let status = resp.status();
                let body: Value = resp.json().await.expect("json");
                (member, key, status, body)
            }));
        }
        let mut won = Vec::new();
        for task in tasks {
            let (member, key, status, body) = task.await.expect("task");
            match status {
                StatusCode::CREATED => won.push((member, key, body)),
                StatusCode::CONFLICT => assert_eq!(body["code"], "perk_sold_out", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(won.len(), 50, "exactly the stock is redeemed");
        let (_, inventory) = app.get("/perks/inventory", &admin).await;
        assert_eq!(inventory[0]["remaining"], 0, "{inventory}");
        let redemptions = scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions WHERE perk_id = $1",
            "cinema-ticket-half",
        )
        .await;
        assert_eq!(redemptions, 50);
        let coupons = scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM coupons WHERE template_id = $1",
            "cinema-ticket-half",
        )
        .await;
        assert_eq!(coupons, 50);
        // Every balance is 1,000 minus 500 per redemption it won; nothing else moved.
        let mut total = 0;
        for member in &members {
            let wins = won.iter().filter(|(m, ..)| m == member).count() as i64;
            let b = balance(&app, member).await;
            assert_eq!(b, 1_000 - 500 * wins, "member {member}");
            total += b;
        }
        assert_eq!(total, 100 * 1_000 - 50 * 500);

        // A winner's retry with its key replays the same redemption and changes nothing.
        let (member, key, first) = &won[0];
        let (status, replay) = app
            .post(&redeem_path(member), &admin, key, &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&replay, first);
        let again = scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions WHERE perk_id = $1",
            "cinema-ticket-half",
        )
        .await;
        assert_eq!(again, 50);
        app.stop().await;
    }
);

both_backends!(
    one_balance_is_never_overdrawn_by_concurrent_redemptions,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        cinema_template(&app).await;
        let member = member_id(&app, "+8613900000002", "Bo").await;
        // 1,200 points: two perks, not three; no inventory row, so only the balance limits.
        buy(&app, &restaurant, "restaurant", &member, "R-1", 120_000).await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let client = app.client.clone();
            let url = format!("{}{}", app.base, redeem_path(&member));
            let admin = app.admin_key.clone();
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .header("Idempotency-Key", idem())
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("send");
                let status = resp.status();
                (status, resp.json::<Value>().await.expect("json"))
            }));
        }
        let mut ok = 0;
        for task in tasks {
            let (status, body) = task.await.expect("task");
            if status == StatusCode::CREATED {
                ok += 1;
            } else {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
                // The plugin sees the locked balance and refuses, or the debit is refused.
                assert!(
                    body["code"] == "perk_refused" || body["code"] == "insufficient_points",
                    "{body}"
                );
            }
        }
        assert_eq!(ok, 2);
        assert_eq!(balance(&app, &member).await, 200);
        app.stop().await;
    }
);

both_backends!(
    tier_and_period_limits_hold_and_hide_the_perk,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "parking").await;
        let parking = create_key(&app, "counter", Some("parking"), None).await;
        let mall_counter = create_key(&app, "counter", Some("mall"), None).await;
        install(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        let member = member_id(&app, "+8613900000003", "Cy").await;
        let (_, m) = app.get(&format!("/members/{member}"), &app.admin_key).await;
        let tier = m["tier"].as_str().expect("tier").to_owned();
        // Once a day, and twice in all at the member's tier (the member limit is 5).
        set_inventory(
            &app,
            &app.admin_key,
            "parking-perk",
            "parking-2h",
            json!({ "funding_brand": "mall", "per_member_limit": 5,
                    "tier_limits": { tier.clone(): 2 }, "period": "day", "per_period_limit": 1 }),
        )
        .await;
        let path = format!("/members/{member}/perks/parking-perk/parking-2h/redeem");
        // Free parking is handed over by parking: the mall's counter may not redeem it.
        let (status, body) = app.post(&path, &mall_counter, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body["grant"],
            json!({ "kind": "free_item", "value": "parking-2h" })
        );
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "perk_period_limit_reached");
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &app.admin_key)
            .await;
        assert_eq!(
            perks["perks"].as_array().expect("perks").len(),
            0,
            "{perks}"
        );

        app.clock.advance_ms(DAY_MS);
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &app.admin_key)
            .await;
        assert_eq!(perks["perks"][0]["redemptions_left"], 1, "{perks}");
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.clock.advance_ms(DAY_MS);
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "perk_limit_reached");
        app.stop().await;
    }
);

both_backends!(
    plugin_refusal_and_stacking_rules_change_nothing,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        let member = member_id(&app, "+8613900000004", "Di").await;
        let member_key = create_key(&app, "member", None, Some(&member)).await;
        // 150.00 is under the plugin's 200.00 threshold: refused, nothing moves.
        buy(&app, &restaurant, "restaurant", &member, "R-1", 15_000).await;
        let (status, body) = app
            .post(&redeem_path(&member), &member_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "perk_refused");
        assert!(
            body["detail"].as_str().expect("detail").contains("200.00"),
            "{body}"
        );
        assert_eq!(balance(&app, &member).await, 150);
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM coupons WHERE member_id = $1",
                &member
            )
            .await,
            0
        );

        // Two coupons, one exclusive: refused before any plugin runs, nothing reserved.
        buy(&app, &restaurant, "restaurant", &member, "R-2", 100_000).await;
        let mut codes = Vec::new();
        for _ in 0..2 {
            let (status, r) = app
                .post(&redeem_path(&member), &member_key, &idem(), &json!({}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{r}");
            codes.push(r["coupon"]["code"].as_str().expect("code").to_owned());
        }
        sqlx::query("UPDATE coupon_templates SET exclusive = 1 WHERE id = 'cinema-ticket-half'")
            .execute(app.state.store.write())
            .await
            .expect("exclusive");
        let cart = json!([{ "line_id": "t", "sku": "ticket", "category": "ticket",
                            "quantity": 4, "unit_price_cents": 5000 }]);
        let (status, body) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "lines": cart, "coupon_codes": codes }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupons_not_combinable");
        // A cart without tickets: the plugin rejects the coupon with its reason.
        let popcorn = json!([{ "line_id": "p", "sku": "popcorn", "category": "snacks",
                               "quantity": 1, "unit_price_cents": 1200 }]);
        let (status, body) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "lines": popcorn, "coupon_codes": [codes[0]] }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupon_rejected");
        let reserved = scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM coupons WHERE member_id = $1 AND status <> 'issued'",
            &member,
        )
        .await;
        assert_eq!(reserved, 0);
        // A purchase whose cart differs from its checkout's is refused.
        let (status, checkout) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "lines": cart, "coupon_codes": [codes[0]] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        let (status, body) = app
            .post(
                "/brands/cinema/purchases",
                &cinema,
                &idem(),
                &json!({ "order_id": "CIN-1", "member_id": member, "lines": popcorn,
                         "checkout_id": checkout["id"] }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "checkout_mismatch");
        app.stop().await;
    }
);

both_backends!(
    a_lapsed_checkout_releases_its_coupon_and_cannot_complete,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        let member = member_id(&app, "+8613900000005", "Ed").await;
        buy(&app, &restaurant, "restaurant", &member, "R-1", 60_000).await;
        let (status, r) = app
            .post(&redeem_path(&member), &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        let code = r["coupon"]["code"].as_str().expect("code").to_owned();
        let cart = json!([{ "line_id": "t", "sku": "ticket", "category": "ticket",
                            "quantity": 1, "unit_price_cents": 5000 }]);
        let checkout = |key: String| {
            let body = json!({ "member_id": member, "lines": cart, "coupon_codes": [code] });
            let app = &app;
            let cinema = cinema.clone();
            async move {
                app.post("/brands/cinema/checkouts", &cinema, &key, &body)
                    .await
            }
        };
        let first_key = idem();
        let (status, first) = checkout(first_key.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["discount_cents"], 2500, "{first}");
        // The same request retried replays the checkout instead of tripping on its own hold.
        let (status, replay) = checkout(first_key).await;
        assert_eq!(status, StatusCode::CREATED, "{replay}");
        assert_eq!(replay, first);
        // Sixteen minutes later the 15-minute reservation has lapsed: another checkout takes it.
        app.clock.advance_ms(16 * 60 * 1000);
        let (status, second) = checkout(idem()).await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        let purchase = |checkout_id: Value, order: &str| {
            let body = json!({ "order_id": order, "member_id": member, "lines": cart,
                               "checkout_id": checkout_id });
            let app = &app;
            let cinema = cinema.clone();
            async move {
                app.post("/brands/cinema/purchases", &cinema, &idem(), &body)
                    .await
            }
        };
        let (status, body) = purchase(first["id"].clone(), "CIN-1").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "checkout_expired");
        let (status, body) = purchase(second["id"].clone(), "CIN-2").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["discount_cents"], 2500);
        assert_eq!(body["cash_cents"], 2500);
        app.stop().await;
    }
);

both_backends!(
    free_parking_is_handed_over_against_a_coupon_at_the_parking_counter,
    |app| async move {
        let parking = free_parking(&app).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let member = member_id(&app, "+8613900000031", "Pat").await;
        set_inventory(
            &app,
            &app.admin_key,
            "parking-perk",
            "parking-2h",
            json!({ "funding_brand": "mall", "total_stock": 10 }),
        )
        .await;
        let redeemed = redeem_parking(&app, &parking, &member).await;
        assert_eq!(
            redeemed["grant"],
            json!({ "kind": "free_item", "value": "parking-2h" })
        );
        // The free item comes with a code the member shows at the parking counter.
        let code = redeemed["coupon"]["code"]
            .as_str()
            .expect("a coupon for the free item")
            .to_owned();
        let redemption = redeemed["id"].as_str().expect("id").to_owned();
        let (_, history) = app
            .get(&format!("/members/{member}/redemptions"), &app.admin_key)
            .await;
        assert_eq!(history[0]["coupon"]["code"], code.as_str(), "{history}");

        let wash = json!({ "line_id": "w", "sku": "car-wash", "category": "services",
                           "quantity": 1, "unit_price_cents": 3_000 });
        let park = json!({ "line_id": "p", "sku": "parking-2h", "category": "parking",
                           "quantity": 2, "unit_price_cents": 800 });
        // Only parking hands it over; a cart without the item gets nothing off.
        let (status, body) = app
            .post(
                "/brands/mall/checkouts",
                &mall,
                &idem(),
                &json!({ "member_id": member, "coupon_codes": [code], "lines": [park] }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupon_not_honoured_here", "{body}");
        let (status, body) = app
            .post(
                "/brands/parking/checkouts",
                &parking,
                &idem(),
                &json!({ "member_id": member, "coupon_codes": [code], "lines": [wash] }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupon_rejected", "{body}");

        // One unit of the parking line is free; the wash is paid in full.
        let lines = json!([wash, park]);
        let (status, checkout) = app
            .post(
                "/brands/parking/checkouts",
                &parking,
                &idem(),
                &json!({ "member_id": member, "coupon_codes": [code], "lines": lines }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        assert_eq!(checkout["discount_cents"], 800, "{checkout}");
        assert_eq!(
            checkout["coupons"][0]["lines"],
            json!([{ "line_id": "p", "discount_cents": 800 }])
        );
        let (status, purchase) = app
            .post(
                "/brands/parking/purchases",
                &parking,
                &idem(),
                &json!({ "order_id": "PK-1", "member_id": member, "lines": lines,
                         "checkout_id": checkout["id"] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{purchase}");
        assert_eq!(purchase["discount_cents"], 800);
        assert_eq!(purchase["cash_cents"], 3_800);
        let (_, coupon) = app
            .get(&format!("/brands/parking/coupons/{code}"), &parking)
            .await;
        assert_eq!(coupon["status"], "redeemed", "{coupon}");
        // Honouring it is governed by the perk's plugin, which already settled the perk.
        let (plugin,): (String,) = sqlx::query_as(
            "SELECT plugin FROM settle_events WHERE kind = 'coupon-honoured' AND subject_id = $1",
        )
        .bind(&code)
        .fetch_one(app.state.store.read())
        .await
        .expect("event");
        assert_eq!(plugin, "parking-perk");

        // A full refund voids the coupon and reverses the perk: its stock comes back.
        let (status, refund) = app
            .post(
                "/brands/parking/purchases/PK-1/refunds",
                &parking,
                &idem(),
                &json!({ "refund_id": "PK-RF-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{refund}");
        assert_eq!(refund["coupons_voided"], json!([code]), "{refund}");
        let (_, inventory) = app.get("/perks/inventory", &app.admin_key).await;
        assert_eq!(inventory[0]["remaining"], 10, "{inventory}");
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions
                 WHERE id = $1 AND status = 'reversed'",
                &redemption
            )
            .await,
            1
        );
        // Every event settles (none held) and the month reconciles.
        let (status, run) = app
            .post("/settlement/run", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["held"], 0, "{run}");
        let (status, report) = app
            .get("/settlement/periods/2026-03/reconciliation", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["ok"], true, "{report}");
        app.stop().await;
    }
);

both_backends!(
    a_cancelled_checkout_releases_its_coupons_at_once,
    |app| async move {
        let parking = free_parking(&app).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let member = member_id(&app, "+8613900000032", "Cas").await;
        let redeemed = redeem_parking(&app, &parking, &member).await;
        let code = redeemed["coupon"]["code"]
            .as_str()
            .expect("code")
            .to_owned();
        let body = json!({ "member_id": member, "coupon_codes": [code], "lines": [
            { "line_id": "p", "sku": "parking-2h", "category": "parking", "quantity": 1,
              "unit_price_cents": 800 } ] });
        let (status, first) = app
            .post("/brands/parking/checkouts", &parking, &idem(), &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let first_id = first["id"].as_str().expect("id").to_owned();
        let (status, taken) = app
            .post("/brands/parking/checkouts", &parking, &idem(), &body)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{taken}");
        assert_eq!(taken["code"], "coupon_reserved");

        // Another brand's counter cannot see it; the parking counter cancels it.
        let cancel = format!("/brands/parking/checkouts/{first_id}/cancel");
        let (status, _) = app
            .post(
                &format!("/brands/mall/checkouts/{first_id}/cancel"),
                &mall,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let cancel_key = idem();
        let (status, cancelled) = app
            .post(
                &cancel,
                &parking,
                &cancel_key,
                &json!({ "reason": "customer left" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(cancelled["coupons_released"], json!([code]));
        // A retry replays; a second cancellation answers the first one.
        let (status, replay) = app
            .post(
                &cancel,
                &parking,
                &cancel_key,
                &json!({ "reason": "customer left" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(replay, cancelled);
        let (status, again) = app.post(&cancel, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["cancelled_at_ms"], cancelled["cancelled_at_ms"]);

        // The coupon is free again at once, and the cancelled checkout completes nothing.
        let (status, second) = app
            .post("/brands/parking/checkouts", &parking, &idem(), &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        let purchase = |checkout: Value, order: &'static str| {
            let mut p = body.clone();
            p.as_object_mut().expect("object").remove("coupon_codes");
            p["order_id"] = json!(order);
            p["checkout_id"] = checkout;
            p
        };
        let (status, refused) = app
            .post(
                "/brands/parking/purchases",
                &parking,
                &idem(),
                &purchase(json!(first_id), "PK-C1"),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert_eq!(refused["code"], "checkout_cancelled");
        let (status, paid) = app
            .post(
                "/brands/parking/purchases",
                &parking,
                &idem(),
                &purchase(second["id"].clone(), "PK-C2"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{paid}");
        assert_eq!(paid["discount_cents"], 800);
        // A completed checkout is refunded, not cancelled.
        let (status, body) = app
            .post(
                &format!(
                    "/brands/parking/checkouts/{}/cancel",
                    second["id"].as_str().expect("id")
                ),
                &parking,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "checkout_completed");
        app.stop().await;
    }
);

both_backends!(
    an_unused_perk_coupon_is_given_back_for_its_points,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        let member = member_id(&app, "+8613900000041", "Ret").await;
        let member_key = create_key(&app, "member", None, Some(&member)).await;
        let other = member_id(&app, "+8613900000042", "Oth").await;
        let other_key = create_key(&app, "member", None, Some(&other)).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        set_inventory(
            &app,
            &app.admin_key,
            "cinema-dinner",
            "cinema-ticket-half",
            json!({ "funding_brand": "restaurant", "total_stock": 10, "per_member_limit": 2 }),
        )
        .await;
        buy(&app, &restaurant, "restaurant", &member, "R-41", 120_000).await;
        assert_eq!(balance(&app, &member).await, 1_200);
        let mut codes = Vec::new();
        for _ in 0..2 {
            let (status, redeemed) = app
                .post(&redeem_path(&member), &member_key, &idem(), &json!({}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{redeemed}");
            codes.push(
                redeemed["coupon"]["code"]
                    .as_str()
                    .expect("code")
                    .to_owned(),
            );
        }
        assert_eq!(balance(&app, &member).await, 200);
        let ret = |code: &str| format!("/members/{member}/coupons/{code}/return");

        // Not another member's to give back, nor a counter's.
        let (status, _) = app
            .post(&ret(&codes[0]), &other_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .post(&ret(&codes[0]), &cinema, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = app
            .post(
                &format!("/members/{other}/coupons/{}/return", codes[0]),
                &other_key,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        // The first coupon goes back: points, stock and the perk's settlement are reversed.
        let key = idem();
        let (status, returned) = app
            .post(&ret(&codes[0]), &member_key, &key, &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{returned}");
        assert_eq!(returned["status"], "voided");
        assert_eq!(returned["points_restored"], 500);
        assert_eq!(balance(&app, &member).await, 700);
        let (status, replay) = app
            .post(&ret(&codes[0]), &member_key, &key, &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(replay, returned);
        assert_eq!(balance(&app, &member).await, 700);
        let (status, body) = app
            .post(&ret(&codes[0]), &member_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "coupon_voided");
        let (_, inventory) = app.get("/perks/inventory", &app.admin_key).await;
        assert_eq!(inventory[0]["remaining"], 9, "{inventory}");
        let redemption = returned["redemption_id"].as_str().expect("id");
        assert_eq!(
            event_value(&app, "refund", redemption).await,
            (500, 4000, "restaurant".into(), "cinema".into())
        );

        // The second is held by an open checkout: refused until the checkout is cancelled.
        let (status, checkout) = app
            .post(
                "/brands/cinema/checkouts",
                &cinema,
                &idem(),
                &json!({ "member_id": member, "coupon_codes": [codes[1]], "lines": [
                    { "line_id": "t", "sku": "ticket-2d", "category": "ticket", "quantity": 1,
                      "unit_price_cents": 5000 } ] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        let (status, body) = app
            .post(&ret(&codes[1]), &member_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "coupon_reserved");
        let (status, _) = app
            .post(
                &format!(
                    "/brands/cinema/checkouts/{}/cancel",
                    checkout["id"].as_str().expect("id")
                ),
                &cinema,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // Once expired it is the member's loss (breakage), not a refund.
        app.clock.advance_ms(31 * DAY_MS);
        let (status, body) = app
            .post(&ret(&codes[1]), &member_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupon_expired");

        // A coupon not bought with points has nothing to give back.
        let mut tx = app.state.store.begin().await.expect("begin");
        let gift = coalition::domain::coupons::issue(
            &mut tx,
            "cinema-ticket-half",
            &member,
            "admin",
            "goodwill-1",
            coalition::foundation::clock::Clock::now_ms(app.clock.as_ref()),
        )
        .await
        .expect("issue");
        tx.commit().await.expect("commit");
        let (status, body) = app
            .post(&ret(&gift.code), &member_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "coupon_not_returnable");
        app.stop().await;
    }
);

both_backends!(
    a_perk_coupon_honoured_offline_settles_under_the_perk_once,
    |app| async move {
        let parking = free_parking(&app).await;
        let member = member_id(&app, "+8613900000051", "Off").await;
        let redeemed = redeem_parking(&app, &parking, &member).await;
        let code = redeemed["coupon"]["code"]
            .as_str()
            .expect("code")
            .to_owned();
        let (status, pass) = app
            .get(&format!("/members/{member}/pass"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{pass}");
        let now = coalition::foundation::clock::Clock::now_ms(app.clock.as_ref());
        let (status, synced) = app
            .post(
                "/brands/parking/offline-purchases",
                &parking,
                &idem(),
                &json!({ "device_id": "gate-2", "purchases": [{
                    "pass": pass["token"], "taken_at_ms": now + 1_000, "coupon_codes": [code],
                    "order": { "order_id": "GATE-1", "member_id": member, "lines": [
                        { "line_id": "p", "sku": "parking-2h", "category": "parking",
                          "quantity": 1, "unit_price_cents": 1_000 } ] } }] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{synced}");
        assert_eq!(
            synced["items"][0]["coupons_redeemed"],
            json!([code]),
            "{synced}"
        );
        // The perk's plugin governs it (the host-made template has no plugin of its own), and
        // the coupon records what it took off.
        let (plugin, value): (String, i64) = sqlx::query_as(
            "SELECT plugin, value_cents FROM settle_events
             WHERE kind = 'coupon-honoured' AND subject_id = $1",
        )
        .bind(&code)
        .fetch_one(app.state.store.read())
        .await
        .expect("event");
        assert_eq!(plugin, "parking-perk");
        assert_eq!(value, 1_000);
        let (_, coupon) = app
            .get(&format!("/brands/parking/coupons/{code}"), &parking)
            .await;
        assert_eq!(coupon["status"], "redeemed", "{coupon}");
        assert_eq!(coupon["discount_cents"], 1_000, "{coupon}");
        // Nothing is held, and the mall pays parking for the perk once, not again for the
        // coupon: the month's lines are the perk's two (parking's share and the commission).
        let (status, run) = app
            .post("/settlement/run", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["held"], 0, "{run}");
        let (paid,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM settlement_lines
             WHERE payer = 'mall' AND payee = 'parking'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("lines");
        assert_eq!(paid, 950, "face value 10.00 less 5% commission, once");
        app.stop().await;
    }
);

both_backends!(
    the_expiry_job_marks_unused_coupons_expired,
    |app| async move {
        let parking = free_parking(&app).await;
        let member = member_id(&app, "+8613900000061", "Exp").await;
        let mut codes = Vec::new();
        for _ in 0..2 {
            let redeemed = redeem_parking(&app, &parking, &member).await;
            codes.push(
                redeemed["coupon"]["code"]
                    .as_str()
                    .expect("code")
                    .to_owned(),
            );
        }
        let stored = |code: String| {
            let app = &app;
            async move {
                let (status,): (String,) =
                    sqlx::query_as("SELECT status FROM coupons WHERE code = $1")
                        .bind(code)
                        .fetch_one(app.state.store.read())
                        .await
                        .expect("coupon");
                status
            }
        };
        // Before the expiry nothing changes.
        let (status, report) = app
            .post("/jobs/expiry", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["coupons"], 0, "{report}");
        // One is used; after 30 days (the grant's validity) the other is marked expired, once.
        let (status, checkout) = app
            .post(
                "/brands/parking/checkouts",
                &parking,
                &idem(),
                &json!({ "member_id": member, "coupon_codes": [codes[0]], "lines": [
                    { "line_id": "p", "sku": "parking-2h", "category": "parking",
                      "quantity": 1, "unit_price_cents": 800 } ] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        let (status, body) = app
            .post(
                "/brands/parking/purchases",
                &parking,
                &idem(),
                &json!({ "order_id": "EXP-1", "member_id": member, "checkout_id": checkout["id"],
                         "lines": [{ "line_id": "p", "sku": "parking-2h", "category": "parking",
                                     "quantity": 1, "unit_price_cents": 800 }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.clock.advance_ms(31 * DAY_MS);
        let (status, report) = app
            .post("/jobs/expiry", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["coupons"], 1, "{report}");
        assert_eq!(stored(codes[0].clone()).await, "redeemed");
        assert_eq!(stored(codes[1].clone()).await, "expired");
        let (_, report) = app
            .post("/jobs/expiry", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(report["coupons"], 0, "{report}");
        app.stop().await;
    }
);

both_backends!(
    counter_of_another_brand_gets_403_before_sold_out_refused_or_blocked,
    |app| async move {
        // Free parking: funded by the mall, honoured by parking. The mall's counter is a party
        // to the plugin but does not honour the perk; a rival's counter has nothing to do with it.
        let parking = free_parking(&app).await;
        create_brand(&app, "rival").await;
        let mall_counter = create_key(&app, "counter", Some("mall"), None).await;
        let rival_counter = create_key(&app, "counter", Some("rival"), None).await;
        let member = member_id(&app, "+8613900000031", "Sol").await;
        let path = format!("/members/{member}/perks/parking-perk/parking-2h/redeem");
        set_inventory(
            &app,
            &app.admin_key,
            "parking-perk",
            "parking-2h",
            json!({ "funding_brand": "mall", "total_stock": 1 }),
        )
        .await;
        redeem_parking(&app, &parking, &member).await;

        // Regression: sold out answered 409 `perk_sold_out` to counters that may not redeem it.
        for counter in [&mall_counter, &rival_counter] {
            let (status, body) = app.post(&path, counter, &idem(), &json!({})).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "perk_sold_out");

        // Paused, and a blocked member: still 403 first.
        set_inventory(
            &app,
            &app.admin_key,
            "parking-perk",
            "parking-2h",
            json!({ "funding_brand": "mall", "status": "paused" }),
        )
        .await;
        let (status, body) = app.post(&path, &mall_counter, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = app
            .post(
                &format!("/members/{member}/block"),
                &app.admin_key,
                &idem(),
                &json!({ "reason": "test" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for counter in [&mall_counter, &rival_counter] {
            let (status, body) = app.post(&path, counter, &idem(), &json!({})).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        let (status, body) = app.post(&path, &parking, &idem(), &json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "member_blocked");
        app.stop().await;
    }
);

both_backends!(
    counter_of_the_funding_brand_gets_403_before_the_plugin_refuses,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        let member = member_id(&app, "+8613900000032", "Tam").await;
        // 150.00 is under the plugin's 200.00 threshold: the plugin refuses the perk.
        buy(&app, &restaurant, "restaurant", &member, "R-1", 15_000).await;
        // Regression: the restaurant's counter got 422 `perk_refused` (with the member's spend in
        // the reason) for a perk the cinema honours.
        let (status, body) = app
            .post(&redeem_path(&member), &restaurant, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(!body.to_string().contains("150.00"), "{body}");
        // The perk is not offered to the member, so no counter may redeem it.
        let (status, body) = app
            .post(&redeem_path(&member), &cinema, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

        // Offered (600.00 spent) but unaffordable after the member spent the points: the
        // cinema's counter hears the plugin's refusal; the restaurant's still only 403.
        buy(&app, &restaurant, "restaurant", &member, "R-2", 45_000).await;
        let (status, body) = app
            .post(
                &format!("/members/{member}/points/adjustments"),
                &app.admin_key,
                &idem(),
                &json!({ "points": -200, "reason": "test" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = app
            .post(&redeem_path(&member), &restaurant, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = app
            .post(&redeem_path(&member), &cinema, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "perk_refused");
        app.stop().await;
    }
);

both_backends!(
    a_brand_cannot_set_the_inventory_of_another_brands_perk,
    |app| async move {
        free_parking(&app).await;
        create_brand(&app, "rival").await;
        let rival = create_key(&app, "brand", Some("rival"), None).await;
        let parking = create_key(&app, "brand", Some("parking"), None).await;
        let mall = create_key(&app, "brand", Some("mall"), None).await;
        let put = |key: String, body: Value| {
            let app = &app;
            async move {
                app.call(
                    reqwest::Method::PUT,
                    "/perks/parking-perk/parking-2h/inventory",
                    Some(&key),
                    Some(&idem()),
                    Some(&body),
                )
                .await
            }
        };
        // Regression: a brand outside the plugin could claim to fund its perk and pause it, or
        // sell it out, for everyone.
        let (status, body) = put(
            rival.clone(),
            json!({ "funding_brand": "rival", "total_stock": 0, "status": "paused" }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_inventory WHERE plugin = $1",
                "parking-perk"
            )
            .await,
            0
        );
        let (status, body) = put(
            mall.clone(),
            json!({ "funding_brand": "mall", "total_stock": 5 }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Funded by the mall: parking (also named by the plugin) may not take it over; that was
        // a 409 `perk_funding_brand_mismatch` after validation.
        let (status, body) = put(
            parking.clone(),
            json!({ "funding_brand": "parking", "total_stock": 0 }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = put(
            parking,
            json!({ "funding_brand": "mall", "total_stock": 0 }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        app.stop().await;
    }
);

both_backends!(
    a_counters_retried_redemption_replays_after_the_perk_is_no_longer_offered,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let restaurant = create_key(&app, "counter", Some("restaurant"), None).await;
        let cinema = create_key(&app, "counter", Some("cinema"), None).await;
        install(&app, "cinema-dinner", json!({})).await;
        install(&app, "coupon-logic", json!({})).await;
        cinema_template(&app).await;
        let member = member_id(&app, "+8613900000033", "Uma").await;
        buy(&app, &restaurant, "restaurant", &member, "R-1", 60_000).await;
        let key = idem();
        let (status, first) = app
            .post(&redeem_path(&member), &cinema, &key, &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        // A week later the dinner no longer unlocks the perk, so the cinema's counter could not
        // redeem it now; the retry of the answered redemption still replays it.
        app.clock.advance_ms(8 * DAY_MS);
        let (status, again) = app
            .post(&redeem_path(&member), &cinema, &key, &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{again}");
        assert_eq!(again, first);
        let (status, body) = app
            .post(&redeem_path(&member), &cinema, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        app.stop().await;
    }
);
