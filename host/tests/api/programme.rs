//! The programme overview over HTTP on both databases: every figure checked against numbers
//! worked out by hand from a few purchases, the brand's own view, the window moving with the
//! clock, and who may ask.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;

async fn buy(app: &TestApp, counter: &str, brand: &str, member: &str, cents: i64) {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            counter,
            &idem(),
            &json!({ "order_id": format!("O-{}", idem()), "member_id": member, "lines": [
                { "line_id": "1", "sku": "x", "category": "goods", "quantity": 1,
                  "unit_price_cents": cents } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn brand_row<'a>(overview: &'a Value, brand: &str) -> &'a Value {
    overview["by_brand"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["brand_id"] == brand))
        .unwrap_or_else(|| panic!("no row for {brand}: {overview}"))
}

both_backends!(
    the_overview_matches_figures_worked_out_by_hand,
    |app| async move {
        create_brand(&app, "coffee").await;
        create_brand(&app, "mall").await;
        let coffee = create_key(&app, "counter", Some("coffee"), None).await;
        let mall = create_key(&app, "counter", Some("mall"), None).await;
        let coffee_office = create_key(&app, "brand", Some("coffee"), None).await;
        let ann = member_id(&app, "+8613900000001", "Ann").await;
        let bob = member_id(&app, "+8613900000002", "Bob").await;
        member_id(&app, "+8613900000003", "Cy").await;
        // Ann buys coffee twice (32.00 each), Bob once at the mall (100.00); Cy never buys.
        // Each brand earns one point per 1.00.
        buy(&app, &coffee, "coffee", &ann, 3_200).await;
        buy(&app, &coffee, "coffee", &ann, 3_200).await;
        buy(&app, &mall, "mall", &bob, 10_000).await;

        let (status, o) = app.get("/programme/overview", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{o}");
        assert_eq!(o["window_days"], 30);
        assert_eq!(o["members"], 3);
        assert_eq!(o["members_joined"], 3);
        assert_eq!(o["active_members"], 2);
        assert_eq!(o["active_rate_bp"], 6_666, "2 of 3, rounded down");
        assert_eq!(o["repurchase_rate_bp"], 5_000, "Ann of Ann and Bob");
        assert_eq!(o["orders"], 3);
        assert_eq!(o["sales_cents"], 16_400);
        assert_eq!(o["average_order_cents"], 5_466);
        assert_eq!(o["points_outstanding"], 164);
        assert_eq!(o["points_expiring_30d"], 0);
        let c = brand_row(&o, "coffee");
        assert_eq!(
            (
                &c["orders"],
                &c["sales_cents"],
                &c["members"],
                &c["average_order_cents"]
            ),
            (&json!(2), &json!(6_400), &json!(1), &json!(3_200))
        );
        assert_eq!(c["points_issued"], 64);
        assert_eq!(brand_row(&o, "mall")["sales_cents"], 10_000);
        let daily = o["daily"].as_array().expect("daily");
        assert_eq!(daily.len(), 30);
        let today = daily.last().expect("today");
        assert_eq!(
            (
                &today["orders"],
                &today["sales_cents"],
                &today["active_members"]
            ),
            (&json!(3), &json!(16_400), &json!(2))
        );
        assert_eq!(today["points_issued"], 164);
        assert!(daily[..29].iter().all(|d| d["orders"] == 0), "{o}");

        // The coffee brand sees its own purchases, members and points only.
        let (status, mine) = app.get("/programme/overview", &coffee_office).await;
        assert_eq!(status, StatusCode::OK, "{mine}");
        assert_eq!(mine["brand_id"], "coffee");
        assert_eq!(mine["members"], 1);
        assert_eq!(mine["orders"], 2);
        assert_eq!(mine["points_outstanding"], 64);
        assert_eq!(mine["by_brand"].as_array().map(Vec::len), Some(1));
        let (status, _) = app
            .get("/programme/overview?brand_id=mall", &coffee_office)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, only_mall) = app
            .get("/programme/overview?brand_id=mall", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(only_mall["orders"], 1);
        let (status, body) = app.get("/programme/overview", &coffee).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        for bad in ["days=0", "days=367", "days=x"] {
            let (status, body) = app
                .get(&format!("/programme/overview?{bad}"), &app.admin_key)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }

        // A month later the purchases have left a 30-day window but not a 90-day one.
        app.clock.advance_ms(31 * DAY_MS);
        let (_, later) = app.get("/programme/overview", &app.admin_key).await;
        assert_eq!(
            (&later["orders"], &later["active_members"]),
            (&json!(0), &json!(0))
        );
        assert_eq!(later["points_outstanding"], 164);
        let (_, wide) = app.get("/programme/overview?days=90", &app.admin_key).await;
        assert_eq!(wide["orders"], 3);
        app.stop().await;
    }
);
