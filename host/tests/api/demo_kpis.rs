//! The demo coalition's key figures against a hand-computed expectation: what a person who
//! starts `coalition serve --demo` sees on the KPI page is what the demo's purchases add up to.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;

/// The demo's first day (T0 is Monday 2026-03-02, 18:00 at UTC+8), on its own.
const DEMO_DAY: &str = "from=2026-03-02&to=2026-03-02&granularity=day";

/// The demo's purchases, in cents, as `app/demo.rs` records them:
/// - R-1001 restaurant, member 0: 2 × 128.00 + 2 × 12.00 = 280.00
/// - M-2001 mall, member 0: 12,000.00
/// - C-3001 coffee, member 0: 2 × 32.00 + 18.00 = 82.00
/// - C-3002 coffee, member 3: 26.00
/// - K-4001 cinema, member 1: 2 × 60.00 = 120.00
/// - R-1002 restaurant, member 0: 300.00 (points, stored value and cash)
/// - M-2002 mall, the referred friend: 88.00
///
/// 7 orders, 12,896.00 in all; 4 buyers of whom member 0 bought 4 times; 10 members (the 8 of
/// the demo, the dormant member of the silent-member journey and the referred friend).
const ORDERS: i64 = 7;
const SALES: i64 = 28_000 + 1_200_000 + 8_200 + 2_600 + 12_000 + 30_000 + 8_800;

fn totals(page: &Value) -> &Value {
    &page["totals"]
}

both_backends!(
    the_demo_kpis_match_a_hand_computed_expectation,
    |app| async move {
        coalition::app::demo::seed_with_plugins(
            &app.state,
            Some(&crate::fixtures::plugins_dir("coffee-bonus")),
        )
        .await
        .expect("demo seed");

        let (status, all) = app.get(&format!("/kpis?{DEMO_DAY}"), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        let t = totals(&all);
        assert_eq!(SALES, 1_289_600);
        assert_eq!(t["orders"], ORDERS, "{all}");
        assert_eq!(t["sales_cents"], SALES, "{all}");
        // 1,289,600 ÷ 7 = 184,228.57…, rounded down.
        assert_eq!(t["average_order_cents"], 184_228, "{all}");
        // Every recorded purchase names a member.
        assert_eq!(t["member_share_of_sales_bp"], 10_000, "{all}");
        assert_eq!(t["members"], 10, "{all}");
        assert_eq!(t["buyers"], 4, "{all}");
        // Member 0 bought 4 times, the other three once: 1 of 4 buyers.
        assert_eq!(t["repurchase_rate_bp"], 2_500, "{all}");
        // 4 of 10 members bought in the last 30 days.
        assert_eq!(t["active_30d"], 4, "{all}");
        assert_eq!(t["active_rate_30d_bp"], 4_000, "{all}");
        // 1,289,600 ÷ 10.
        assert_eq!(t["ltv_cents"], 128_960, "{all}");
        // R-1002 paid 5,000 points; nothing has expired; the liability is what was issued less
        // what was spent.
        assert_eq!(t["points_redeemed"], 5_000, "{all}");
        assert_eq!(t["points_expired"], 0, "{all}");
        assert_eq!(t["breakage_bp"], 0, "{all}");
        assert_eq!(
            t["points_outstanding"].as_i64(),
            t["points_issued"].as_i64().map(|issued| issued - 5_000),
            "{all}"
        );
        // The welcome journey touched the 8 demo members (the dormant member joined 45 days
        // earlier, the friend after the run): their sales after the touch are the demo's sales
        // less the friend's 88.00 (the touch came before the purchases, the friend was not
        // touched). The silent-member journey touched the dormant member once with 200 points,
        // who bought nothing: ROI −100%.
        let journeys = all["journeys"].as_array().expect("journeys");
        let mut touched: Vec<(i64, i64, i64)> = journeys
            .iter()
            .map(|j| {
                (
                    j["members_touched"].as_i64().unwrap_or(-1),
                    j["sales_cents"].as_i64().unwrap_or(-1),
                    j["points_value_granted_cents"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        touched.sort_unstable();
        assert_eq!(touched, [(1, 0, 200), (8, SALES - 8_800, 0)], "{all}");
        // The day's series is that one day.
        let series = all["series"].as_array().expect("series");
        assert_eq!(series.len(), 1, "{all}");
        assert_eq!(series[0]["orders"], ORDERS, "{all}");
        assert_eq!(series[0]["sales_cents"], SALES, "{all}");

        // The mall: the handbag (member 0) and the friend's first purchase.
        let (status, mall) = app
            .get(&format!("/kpis?{DEMO_DAY}&brand=mall"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{mall}");
        let m = totals(&mall);
        assert_eq!(m["orders"], 2, "{mall}");
        assert_eq!(m["sales_cents"], 1_208_800, "{mall}");
        assert_eq!(m["average_order_cents"], 604_400, "{mall}");
        // 1,208,800 × 10,000 ÷ 1,289,600 = 9,373.4…
        assert_eq!(m["member_share_of_sales_bp"], 9_373, "{mall}");
        assert_eq!(m["members"], 2, "{mall}");
        assert_eq!(m["buyers"], 2, "{mall}");
        assert_eq!(m["repurchase_rate_bp"], 0, "{mall}");
        assert_eq!(m["active_rate_30d_bp"], 10_000, "{mall}");
        assert_eq!(m["ltv_cents"], 604_400, "{mall}");

        // The coffee chain: two customers, once each.
        let (_, coffee) = app
            .get(&format!("/kpis?{DEMO_DAY}&brand=coffee"), &app.admin_key)
            .await;
        let c = totals(&coffee);
        assert_eq!(c["orders"], 2, "{coffee}");
        assert_eq!(c["sales_cents"], 10_800, "{coffee}");
        assert_eq!(c["average_order_cents"], 5_400, "{coffee}");
        // 10,800 × 10,000 ÷ 1,289,600 = 83.7…
        assert_eq!(c["member_share_of_sales_bp"], 83, "{coffee}");
        assert_eq!(c["members"], 2, "{coffee}");
        assert_eq!(c["repurchase_rate_bp"], 0, "{coffee}");

        // The restaurant: member 0's two dinners.
        let (_, restaurant) = app
            .get(
                &format!("/kpis?{DEMO_DAY}&brand=restaurant"),
                &app.admin_key,
            )
            .await;
        let r = totals(&restaurant);
        assert_eq!(r["orders"], 2, "{restaurant}");
        assert_eq!(r["sales_cents"], 58_000, "{restaurant}");
        assert_eq!(r["buyers"], 1, "{restaurant}");
        assert_eq!(r["repurchase_rate_bp"], 10_000, "{restaurant}");

        // The brands' sales add up to the coalition's.
        let mut sum = 0;
        for brand in ["mall", "coffee", "restaurant", "cinema"] {
            let (_, page) = app
                .get(&format!("/kpis?{DEMO_DAY}&brand={brand}"), &app.admin_key)
                .await;
            sum += totals(&page)["sales_cents"].as_i64().expect("sales");
        }
        assert_eq!(sum, SALES);
        app.stop().await;
    }
);
