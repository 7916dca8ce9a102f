//! Bookstore weekend ×3: on Saturdays and Sundays (the programme's local time) a books
//! purchase earns twice its base points again as a bonus, so three times in all.

use coalition_sdk::calendar::Weekday;
use coalition_sdk::{
    export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order, Plugin, PluginInfo,
};

/// The brand this plugin belongs to (its manifest's only brand).
pub const BRAND: &str = "books";

/// The plugin.
pub struct BookstoreWeekend;

impl Plugin for BookstoreWeekend {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "bookstore-weekend".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::PointsBonus],
            brands: vec![BRAND.into()],
        }
    }

    fn points_bonus(inv: &Invocation, _: &MemberContext, order: &Order) -> HookResult<Vec<Bonus>> {
        let weekend = matches!(inv.local_date().weekday(), Weekday::Saturday | Weekday::Sunday);
        if order.brand != BRAND || order.base_points <= 0 || !weekend {
            return Ok(Vec::new());
        }
        Ok(vec![Bonus::new(
            order.base_points * 2,
            "weekend-x3",
            "Weekend: triple points on books",
        )])
    }
}

export_plugin!(BookstoreWeekend);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{self, check_bonuses};

    fn order() -> Order {
        testing::order(BRAND)
            .line("novel", "books", 2, 1_250)
            .base_points(50)
            .build()
    }

    fn at(day: u8) -> Invocation {
        // March 2025: the 15th is a Saturday, the 17th a Monday.
        testing::invocation().local(2025, 3, day, 11, 0).brand(BRAND).build()
    }

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<BookstoreWeekend>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }

    #[test]
    fn saturday_triples_and_monday_does_not() {
        let member = testing::member("m").build();
        let saturday = BookstoreWeekend::points_bonus(&at(15), &member, &order()).expect("ok");
        check_bonuses(&saturday, 10_000).expect("valid");
        assert_eq!(saturday.len(), 1);
        assert_eq!(saturday[0].points, 100);
        let monday = BookstoreWeekend::points_bonus(&at(17), &member, &order()).expect("ok");
        assert!(monday.is_empty());
    }
}
