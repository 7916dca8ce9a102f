//! `coalition:plugin@0.1.0` and `@0.2.0` plugins deployed side by side, on both databases: one
//! perk listing asks both about the same member and each answers from what its version knows
//! (0.1.0 parking-perk from the tier the paid card lifts, 0.2.0 club-lounge from the card
//! itself); their receipts record exactly that; the mall's perk-value budget reaches the 0.2.0
//! plugin as what is left of it; and a card fee collected by another brand is settled by the
//! plan owner's 0.2.0 settle hook instead of the platform rule.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, install_plugin, member_id};
use crate::helpers::TestApp;
use crate::settlement::run_settlement;

async fn perk_ids(app: &TestApp, member: &str) -> Vec<String> {
    let (status, body) = app
        .get(&format!("/members/{member}/perks"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unavailable"], json!([]), "{body}");
    let mut ids: Vec<String> = body["perks"]
        .as_array()
        .expect("perks")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The input of the newest receipt of `plugin`'s `hook`.
async fn newest_input(app: &TestApp, plugin: &str, hook: &str) -> Value {
    let (input,): (String,) = sqlx::query_as(
        "SELECT input FROM plugin_receipts WHERE plugin = $1 AND hook = $2
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(plugin)
    .bind(hook)
    .fetch_one(app.state.store.read())
    .await
    .expect("a receipt");
    serde_json::from_str(&input).expect("json")
}

both_backends!(
    a_0_1_0_and_a_0_2_0_plugin_serve_the_same_member_in_one_request,
    |app| async move {
        for brand in ["mall", "parking", "coffee"] {
            create_brand(&app, brand).await;
        }
        install_plugin(&app, "parking-perk", json!({})).await;
        install_plugin(&app, "club-lounge", json!({})).await;
        let coffee = create_key(&app, "counter", Some("coffee"), None).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let parking = create_key(&app, "counter", Some("parking"), None).await;
        let ann = member_id(&app, "+8613900000071", "Ann").await;

        // Bronze and without a card: neither offers anything.
        assert_eq!(perk_ids(&app, &ann).await, Vec::<String>::new());

        let (status, plan) = app
            .post(
                "/membership/plans",
                &app.admin_key,
                &idem(),
                &json!({ "id": "plus", "title": "Coalition Plus", "brand_id": "mall",
                    "fee_cents": 9_900, "period": "month", "benefits": ["lounge"],
                    "points_multiplier_percent": 100, "tier_floor": "gold",
                    "renewal_notice_days": 7 }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{plan}");
        let (status, card) = app
            .post(
                &format!("/members/{ann}/membership"),
                &coffee,
                &idem(),
                &json!({ "purchase_id": "C-1", "plan_id": "plus", "payment": "cash" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{card}");

        // One request, both versions: free parking because the card's floor makes Ann gold
        // (0.1.0 sees only the tier), the lounge because of the card's benefit (0.2.0).
        assert_eq!(
            perk_ids(&app, &ann).await,
            vec!["lounge-pass", "parking-2h"]
        );

        // Redeemed, each receipt records what its version was given.
        for (path, key) in [
            ("club-lounge/lounge-pass", &mall),
            ("parking-perk/parking-2h", &parking),
        ] {
            let (status, body) = app
                .post(
                    &format!("/members/{ann}/perks/{path}/redeem"),
                    key,
                    &idem(),
                    &json!({}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
        }
        let old = newest_input(&app, "parking-perk", "redeem-perk").await;
        let new = newest_input(&app, "club-lounge", "redeem-perk").await;
        let old_member = &old["input"]["redeem-perk"]["member"];
        assert_eq!(old_member["tier"], "gold", "{old}");
        assert!(old_member.get("membership").is_none(), "{old}");
        let seen = &new["input"]["redeem-perk"]["member"];
        assert_eq!(seen["tier"], "gold", "{new}");
        assert_eq!(seen["membership"]["plan"], "plus", "{new}");
        assert_eq!(seen["membership"]["brand"], "mall", "{new}");
        assert_eq!(seen["membership"]["benefits"], json!(["lounge"]), "{new}");

        // A perk-value budget of the mall with less than a pass left: the 0.2.0 plugin sees
        // what is left, stops offering the pass and refuses it with its own reason; the 0.1.0
        // one never sees budgets.
        let (status, budget) = app
            .post(
                "/brands/mall/budgets",
                &app.admin_key,
                &idem(),
                &json!({ "kind": "perk_value", "plugin": "club-lounge", "period": "month",
                    "amount": 1_300 }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{budget}");
        assert_eq!(
            perk_ids(&app, &ann).await,
            vec!["lounge-pass", "parking-2h"]
        );
        let (status, body) = app
            .post(
                &format!("/members/{ann}/perks/club-lounge/lounge-pass/redeem"),
                &mall,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "800 of 1,300 fits: {body}");
        let new = newest_input(&app, "club-lounge", "redeem-perk").await;
        assert_eq!(new["invocation"]["budgets"][0]["remaining"], 1_300, "{new}");
        assert_eq!(
            new["invocation"]["budgets"][0]["kind"], "perk-value",
            "{new}"
        );
        assert_eq!(
            new["invocation"]["budgets"][0]["plugin"], "club-lounge",
            "{new}"
        );
        // 500 left: not listed, and refused by the plugin itself.
        assert_eq!(perk_ids(&app, &ann).await, vec!["parking-2h"]);
        let (status, body) = app
            .post(
                &format!("/members/{ann}/perks/club-lounge/lounge-pass/redeem"),
                &mall,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.to_string().contains("lounge is full"), "{body}");

        // The fee coffee collected for the mall's plan: the mall's 0.2.0 settle hook governs
        // it (coffee keeps a 5% sales commission), not the platform's full-fee rule.
        run_settlement(&app).await;
        let lines: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT l.payer, l.payee, l.amount_cents, l.rule FROM settlement_lines l
             JOIN settle_events e ON e.id = l.event_id
             WHERE e.kind = 'membership-fee'",
        )
        .fetch_all(app.state.store.read())
        .await
        .expect("lines");
        assert_eq!(
            lines,
            vec![(
                "coffee".to_owned(),
                "mall".to_owned(),
                9_405,
                "club-lounge@1.0.0".to_owned()
            )]
        );
        app.stop().await;
    }
);
