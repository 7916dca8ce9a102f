//! Partner budgets over HTTP on both databases: 100 concurrent purchases whose plugin bonus
//! draws on a budget with room for 10 fund exactly 10, the rest say why; a bonus is cut to what
//! is left; a perk beyond its funding brand's budget is refused; usage resets with the period
//! and only the brand (or an admin) manages its budgets.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, install_plugin, member_id};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;

async fn budget(app: &TestApp, key: &str, brand: &str, body: Value) -> Value {
    let (status, view) = app
        .post(&format!("/brands/{brand}/budgets"), key, &idem(), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

async fn budgets(app: &TestApp, key: &str, brand: &str) -> Value {
    let (status, list) = app.get(&format!("/brands/{brand}/budgets"), key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list
}

/// 2 × 32.00 lattes at the coffee counter on a Monday: 64 base points, doubled by coffee-bonus.
fn latte_order(order: &str, member: &str) -> Value {
    json!({ "order_id": order, "member_id": member, "lines": [
        { "line_id": "1", "sku": "latte", "category": "coffee", "quantity": 2,
          "unit_price_cents": 3_200 }] })
}

both_backends!(
    concurrent_bonuses_never_spend_past_the_budget,
    |app| async move {
        create_brand(&app, "coffee").await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let office = create_key(&app, "brand", Some("coffee"), None).await;
        install_plugin(&app, "coffee-bonus", json!({})).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        // Room for exactly 10 bonuses of 64 this month; alert at 80%.
        let created = budget(
            &app,
            &office,
            "coffee",
            json!({ "kind": "bonus_points", "plugin": "coffee-bonus", "period": "month",
                "amount": 640, "alert_percent": 80, "label": "double-points Mondays" }),
        )
        .await;
        assert_eq!(
            (&created["used"], &created["remaining"]),
            (&json!(0), &json!(640))
        );

        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (app, counter, ann) = (app.clone(), counter.clone(), ann.clone());
            tasks.push(tokio::spawn(async move {
                app.post(
                    "/brands/coffee/purchases",
                    &counter,
                    &idem(),
                    &latte_order(&format!("C-{i}"), &ann),
                )
                .await
            }));
        }
        let (mut funded, mut refused) = (0, 0);
        for task in tasks {
            let (status, p) = task.await.expect("task");
            assert_eq!(
                status,
                StatusCode::CREATED,
                "a budget never refuses the purchase: {p}"
            );
            assert_eq!(p["base_points"], 64);
            match p["bonus_points"].as_i64() {
                Some(64) => funded += 1,
                Some(0) => {
                    refused += 1;
                    let skipped = &p["skipped_decisions"][0];
                    assert_eq!(skipped["code"], "budget_exhausted", "{p}");
                    assert_eq!(skipped["plugin"], "coffee-bonus", "{p}");
                }
                other => panic!("a bonus is whole or none here, got {other:?}: {p}"),
            }
        }
        assert_eq!((funded, refused), (10, 90));
        let list = budgets(&app, &office, "coffee").await;
        assert_eq!(
            (&list[0]["used"], &list[0]["remaining"]),
            (&json!(640), &json!(0))
        );
        assert_eq!(list[0]["used_bp"], 10_000);
        assert!(list[0]["alerted_at_ms"].is_i64(), "{list}");
        let (issued,): (i64,) =
            sqlx::query_as("SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM purchase_bonuses")
                .fetch_one(app.state.store.read())
                .await
                .expect("sum");
        assert_eq!(
            issued, 640,
            "the ledger holds exactly what the budget funded"
        );
        if let Some(app) = Arc::into_inner(app) {
            app.stop().await;
        }
    }
);

both_backends!(
    a_bonus_is_cut_to_what_is_left_and_the_period_rolls_over,
    |app| async move {
        create_brand(&app, "coffee").await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let office = create_key(&app, "brand", Some("coffee"), None).await;
        let other_office = {
            create_brand(&app, "mall").await;
            create_key(&app, "brand", Some("mall"), None).await
        };
        install_plugin(&app, "coffee-bonus", json!({})).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let b = budget(
            &app,
            &app.admin_key,
            "coffee",
            json!({ "kind": "bonus_points", "period": "day", "amount": 100 }),
        )
        .await;
        assert_eq!(b["alert_percent"], 80, "the default threshold");
        let post = |order: &'static str| {
            let (app, counter, ann) = (&app, counter.clone(), ann.clone());
            async move {
                let (status, p) = app
                    .post(
                        "/brands/coffee/purchases",
                        &counter,
                        &idem(),
                        &latte_order(order, &ann),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{p}");
                p
            }
        };
        assert_eq!(post("C-1").await["bonus_points"], 64);
        let cut = post("C-2").await;
        assert_eq!(cut["bonus_points"], 36, "cut to the 36 left: {cut}");
        assert_eq!(cut["skipped_decisions"][0]["code"], "budget_clipped");
        // The purchase keeps the reason: a member's question is answered from the record.
        let (_, read) = app.get("/brands/coffee/purchases/C-2", &counter).await;
        assert_eq!(read["skipped_decisions"][0]["code"], "budget_clipped");
        assert_eq!(post("C-3").await["bonus_points"], 0);
        // Monday has passed: a new day, a new budget (and coffee-bonus doubles on Mondays only, so
        // move on a week to see it fund again).
        app.clock.advance_ms(7 * DAY_MS);
        assert_eq!(post("C-4").await["bonus_points"], 64);
        let list = budgets(&app, &office, "coffee").await;
        assert_eq!(list[0]["used"], 64, "{list}");

        // Raising the amount applies at once; switching it off stops it applying.
        let (status, changed) = app
            .call(
                Method::PATCH,
                &format!("/brands/coffee/budgets/{}", b["id"].as_str().expect("id")),
                Some(&office),
                Some(&idem()),
                Some(&json!({ "active": false })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(changed["active"], false);
        assert_eq!(post("C-5").await["bonus_points"], 64);

        // Only the brand and admins see or set its budgets; bad input is refused clearly.
        let (status, _) = app.get("/brands/coffee/budgets", &other_office).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.get("/brands/coffee/budgets", &counter).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = app
            .post(
                "/brands/coffee/budgets",
                &office,
                &idem(),
                &json!({ "kind": "bonus_points", "period": "day", "amount": -1 }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = app
            .post(
                "/brands/coffee/budgets",
                &office,
                &idem(),
                &json!({ "kind": "gold_bars", "period": "day", "amount": 1 }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        app.stop().await;
    }
);

both_backends!(
    a_perk_beyond_its_funding_budget_is_refused,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "parking").await;
        let parking = create_key(&app, "counter", Some("parking"), None).await;
        let mall = create_key(&app, "brand", Some("mall"), None).await;
        install_plugin(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        let (status, inv) = app
            .call(
                Method::PUT,
                "/perks/parking-perk/parking-2h/inventory",
                Some(&app.admin_key),
                Some(&idem()),
                Some(&json!({ "funding_brand": "mall" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{inv}");
        let redeem = |member: String| {
            let (app, parking) = (&app, parking.clone());
            async move {
                app.post(
                    &format!("/members/{member}/perks/parking-perk/parking-2h/redeem"),
                    &parking,
                    &idem(),
                    &json!({}),
                )
                .await
            }
        };
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let (status, first) = redeem(ann).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let value = first["value_cents"].as_i64().expect("value");
        assert!(value > 0, "{first}");
        // The mall funds one more free parking today, not two.
        budget(
            &app,
            &mall,
            "mall",
            json!({ "kind": "perk_value", "plugin": "parking-perk", "period": "day",
                "amount": value }),
        )
        .await;
        let bob = member_id(&app, "+8613900000002", "Bob").await;
        let cy = member_id(&app, "+8613900000003", "Cy").await;
        let (status, body) = redeem(bob).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = redeem(cy.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "budget_exhausted");
        let (redemptions,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions WHERE member_id = $1",
        )
        .bind(&cy)
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
        assert_eq!(redemptions, 0, "a refused redemption leaves nothing behind");
        app.clock.advance_ms(DAY_MS);
        let (status, body) = redeem(cy).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "a new day, a new budget: {body}"
        );
        app.stop().await;
    }
);

both_backends!(
    a_campaign_stops_where_the_coupon_budget_does,
    |app| async move {
        create_brand(&app, "cafe").await;
        let office = create_key(&app, "brand", Some("cafe"), None).await;
        crate::counter::support::sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500)
            .await;
        crate::counter::support::import_members(&app, 0, 5, &["spring"]).await;
        // 15.00 of coupon value this month: three 5.00 coupons, not five.
        budget(
            &app,
            &office,
            "cafe",
            json!({ "kind": "coupon_value", "period": "month", "amount": 1_500 }),
        )
        .await;
        let (status, campaign) = app
            .post(
                "/campaigns",
                &app.admin_key,
                &idem(),
                &json!({ "title": "Spring latte", "template_id": "latte-free", "cap": 5,
                     "segment": { "tags": ["spring"] } }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{campaign}");
        let id = campaign["id"].as_str().expect("id");
        let (status, report) = app
            .post(
                &format!("/campaigns/{id}/issue"),
                &app.admin_key,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["issued_now"], 3, "{report}");
        assert_eq!(
            (&report["budget_exhausted"], &report["finished"]),
            (&json!(true), &json!(true))
        );
        let list = budgets(&app, &office, "cafe").await;
        assert_eq!(
            (&list[0]["used"], &list[0]["remaining"]),
            (&json!(1_500), &json!(0))
        );
        let (coupons,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM coupons WHERE source_id = $1")
                .bind(id)
                .fetch_one(app.state.store.read())
                .await
                .expect("count");
        assert_eq!(coupons, 3);
        app.stop().await;
    }
);

both_backends!(
    a_campaigns_own_budget_stops_that_campaign_only,
    |app| async move {
        create_brand(&app, "cafe").await;
        create_brand(&app, "bakery").await;
        let office = create_key(&app, "brand", Some("cafe"), None).await;
        crate::counter::support::sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500)
            .await;
        crate::counter::support::import_members(&app, 0, 5, &["spring"]).await;
        let mut ids = Vec::new();
        for title in ["Spring latte", "Spring latte, second wave"] {
            let (status, campaign) = app
                .post(
                    "/campaigns",
                    &app.admin_key,
                    &idem(),
                    &json!({ "title": title, "template_id": "latte-free", "cap": 5,
                         "segment": { "tags": ["spring"] } }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{campaign}");
            ids.push(campaign["id"].as_str().expect("id").to_owned());
        }
        // 10.00 for the first campaign only: two 5.00 coupons.
        let scoped = budget(
            &app,
            &office,
            "cafe",
            json!({ "kind": "coupon_value", "period": "month", "amount": 1_000,
                "campaign_id": ids[0] }),
        )
        .await;
        assert_eq!(scoped["campaign_id"], ids[0].as_str(), "{scoped}");
        // A campaign budget caps coupons only, of a campaign the brand funds, that exists.
        for (body, code) in [
            (
                json!({ "kind": "perk_value", "period": "month", "amount": 1,
                    "campaign_id": ids[0] }),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({ "kind": "coupon_value", "period": "month", "amount": 1,
                    "campaign_id": "no-such-campaign" }),
                StatusCode::NOT_FOUND,
            ),
        ] {
            let (status, problem) = app
                .post("/brands/cafe/budgets", &office, &idem(), &body)
                .await;
            assert_eq!(status, code, "{problem}");
        }
        let bakery = create_key(&app, "brand", Some("bakery"), None).await;
        let (status, problem) = app
            .post(
                "/brands/bakery/budgets",
                &bakery,
                &idem(),
                &json!({ "kind": "coupon_value", "period": "month", "amount": 1,
                    "campaign_id": ids[1] }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

        let issue = |id: String| {
            let app = &app;
            async move {
                let (status, report) = app
                    .post(
                        &format!("/campaigns/{id}/issue"),
                        &app.admin_key,
                        &idem(),
                        &json!({}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{report}");
                report
            }
        };
        let first = issue(ids[0].clone()).await;
        assert_eq!(first["issued_now"], 2, "{first}");
        assert_eq!(first["budget_exhausted"], true, "{first}");
        let second = issue(ids[1].clone()).await;
        assert_eq!(
            second["issued_now"], 5,
            "the other campaign is not capped: {second}"
        );
        assert_eq!(second["budget_exhausted"], false, "{second}");
        let list = budgets(&app, &office, "cafe").await;
        assert_eq!(
            (&list[0]["used"], &list[0]["remaining"]),
            (&json!(1_000), &json!(0))
        );
        app.stop().await;
    }
);

both_backends!(
    the_command_line_sets_lists_and_changes_budgets,
    |app| async move {
        create_brand(&app, "coffee").await;
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
                .env("COALITION_DATABASE_URL", app.state.config.database_url())
                .env_remove("COALITION_CONFIG")
                .arg("budgets")
                .args(args)
                .output()
                .expect("run coalition")
        };
        let out = cli(&[
            "create",
            "--brand",
            "coffee",
            "--kind",
            "bonus_points",
            "--period",
            "day",
            "--amount",
            "500",
            "--plugin",
            "coffee-bonus",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let made: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            (&made["amount"], &made["remaining"]),
            (&json!(500), &json!(500))
        );
        let id = made["id"].as_str().expect("id").to_owned();
        let out = cli(&[
            "update", "--brand", "coffee", "--id", &id, "--amount", "900",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list = budgets(&app, &app.admin_key, "coffee").await;
        assert_eq!(
            list[0]["amount"], 900,
            "the API sees what the command line set: {list}"
        );
        let bad = cli(&[
            "create", "--brand", "coffee", "--kind", "gold", "--amount", "1",
        ]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown kind"));
        app.stop().await;
    }
);
