//! **coffee-bonus** — the coffee brand's points bonuses and points settlement.
//!
//! - `points-bonus`: a coffee purchase earns its base points once more in the member's birthday
//!   month (local calendar) and once more on the double weekday (config `double_weekday`, Monday
//!   by default, local time). Both stack: a birthday Monday earns 3 × base in total. The total
//!   bonus is capped by config `max_bonus_points`.
//! - `settle`: for `points-issued` at coffee, coffee pays the platform `value-cents`; for a
//!   `refund` at coffee, the platform pays it back.
//!
//! Excluded lines and the part paid with points earn nothing. Per the contract, `base-points`
//! already leaves them out, so a bonus equal to `base-points` never rewards them; in addition, an
//! order whose earning spend ([`Order::earning_cents`]) is zero gets no bonus at all, whatever
//! `base-points` says.

use coalition_sdk::calendar::Weekday;
use coalition_sdk::{
    config, export_plugin, log, Bonus, Hook, HookError, HookResult, Invocation, MemberContext,
    Order, Plugin, PluginInfo, SettleEvent, SettleKind, SettlementLine, PLATFORM,
};

/// The brand this plugin belongs to.
pub const BRAND: &str = "coffee";
/// Default of config `double_weekday` (keep equal to plugin.toml).
pub const DEFAULT_DOUBLE_WEEKDAY: &str = "monday";
/// Default of config `max_bonus_points` (keep equal to plugin.toml): bounds what a
/// misconfigured base rate upstream can cost the brand.
pub const DEFAULT_MAX_BONUS_POINTS: i64 = 10_000;

/// The coffee brand's plugin. Public so the runtime can call it natively as a baseline.
pub struct CoffeeBonus;

impl Plugin for CoffeeBonus {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "coffee-bonus".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::PointsBonus, Hook::Settle],
            brands: vec![BRAND.into()],
        }
    }

    fn points_bonus(
        inv: &Invocation,
        member: &MemberContext,
        order: &Order,
    ) -> HookResult<Vec<Bonus>> {
        if order.brand != BRAND || order.base_points <= 0 || order.earning_cents()? == 0 {
            return Ok(Vec::new());
        }
        let weekday_name = config::get_or("double_weekday", DEFAULT_DOUBLE_WEEKDAY);
        let double_weekday = Weekday::from_name(&weekday_name).ok_or_else(|| {
            HookError::failed(format!(
                "config double_weekday = {weekday_name:?} is not a weekday"
            ))
        })?;
        let max_bonus_points = config::get_i64_or("max_bonus_points", DEFAULT_MAX_BONUS_POINTS)?;

        let today = inv.local_date();
        let mut wanted = Vec::new();
        if member.birthday_month == Some(today.month) {
            wanted.push(("birthday-x2", "Birthday month: double points".to_owned()));
        }
        if today.weekday() == double_weekday {
            let day = double_weekday.name();
            wanted.push(("weekday-x2", format!("Double points every {day}")));
        }

        // Each multiplier adds the base points once; the cap trims the later bonuses first.
        let mut room = max_bonus_points.max(0);
        let mut bonuses = Vec::new();
        for (code, reason) in wanted {
            let points = order.base_points.min(room);
            if points <= 0 {
                log::info(format!(
                    "bonus {code} dropped: cap of {max_bonus_points} points reached"
                ));
                break;
            }
            room -= points;
            bonuses.push(Bonus::new(points, code, reason));
        }
        Ok(bonuses)
    }

    fn settle(_inv: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        if event.brand != BRAND || event.value_cents <= 0 {
            return Ok(Vec::new());
        }
        let line = match event.kind {
            SettleKind::PointsIssued => SettlementLine::new(
                BRAND,
                PLATFORM,
                event.value_cents,
                format!("{} points issued at coffee", event.points),
            ),
            SettleKind::Refund => SettlementLine::new(
                PLATFORM,
                BRAND,
                event.value_cents,
                format!("refund reversed {} points issued at coffee", event.points),
            ),
            _ => return Ok(Vec::new()),
        };
        Ok(vec![line])
    }
}

export_plugin!(CoffeeBonus);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{self, check_bonuses, check_settlement, TestHost};

    const MANIFEST: &str = include_str!("../plugin.toml");

    /// Monday 17 March 2025, 09:30 local (UTC+8).
    fn monday_in_march() -> Invocation {
        testing::invocation()
            .local(2025, 3, 17, 9, 30)
            .brand(BRAND)
            .build()
    }

    /// Tuesday 18 March 2025, 09:30 local (UTC+8).
    fn tuesday_in_march() -> Invocation {
        testing::invocation()
            .local(2025, 3, 18, 9, 30)
            .brand(BRAND)
            .build()
    }

    fn coffee_order(base_points: i64) -> Order {
        testing::order(BRAND)
            .line("latte", "coffee", 2, 450)
            .base_points(base_points)
            .build()
    }

    fn points(bonuses: &[Bonus]) -> Vec<(&str, i64)> {
        bonuses
            .iter()
            .map(|b| (b.code.as_str(), b.points))
            .collect()
    }

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<CoffeeBonus>(MANIFEST).expect("plugin.toml agrees with info()");
    }

    #[test]
    fn monday_doubles_the_base_points() {
        let member = testing::member("m-1").build();
        let bonuses = CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(30));
        assert_eq!(points(&bonuses.expect("bonus")), vec![("weekday-x2", 30)]);
    }

    #[test]
    fn birthday_month_and_monday_stack() {
        let member = testing::member("m-1").birthday_month(3).build();
        let bonuses = CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(30))
            .expect("bonus");
        assert_eq!(
            points(&bonuses),
            vec![("birthday-x2", 30), ("weekday-x2", 30)]
        );
        check_bonuses(&bonuses, 60).expect("valid bonuses");
    }

    #[test]
    fn ordinary_tuesday_outside_the_birthday_month_earns_no_bonus() {
        let member = testing::member("m-1").birthday_month(4).build();
        let bonuses = CoffeeBonus::points_bonus(&tuesday_in_march(), &member, &coffee_order(30));
        assert_eq!(bonuses, Ok(Vec::new()));
    }

    #[test]
    fn monday_is_the_local_monday_not_the_utc_one() {
        let member = testing::member("m-1").build();
        // 2025-03-16T17:00Z: Monday 01:00 in UTC+8, Sunday 12:00 in UTC-5.
        let at = 1_742_144_400_000;
        let east = testing::invocation().offset_minutes(480).now_ms(at).build();
        let west = testing::invocation()
            .offset_minutes(-300)
            .now_ms(at)
            .build();
        let order = coffee_order(10);
        assert_eq!(
            points(&CoffeeBonus::points_bonus(&east, &member, &order).expect("ok")),
            vec![("weekday-x2", 10)]
        );
        assert_eq!(
            CoffeeBonus::points_bonus(&west, &member, &order),
            Ok(Vec::new())
        );
    }

    #[test]
    fn excluded_lines_and_points_paid_part_earn_no_bonus() {
        let member = testing::member("m-1").birthday_month(3).build();
        // 900 cents of coffee, a 5000-cent gift card (excluded), 100 cents paid with points:
        // 800 earning cents at the base rate of 1 point per 100 cents = 8 base points.
        let mixed = testing::order(BRAND)
            .line("latte", "coffee", 2, 450)
            .excluded_line("gift-card", "gift-card", 1, 5_000)
            .paid_with_points(100)
            .build();
        assert_eq!(mixed.base_points, 8);
        let bonuses = CoffeeBonus::points_bonus(&tuesday_in_march(), &member, &mixed).expect("ok");
        assert_eq!(points(&bonuses), vec![("birthday-x2", 8)]);

        // Only a gift card: nothing earns, no bonus even if base-points claimed otherwise.
        let gift_card_only = testing::order(BRAND)
            .excluded_line("gift-card", "gift-card", 1, 5_000)
            .base_points(50)
            .build();
        assert_eq!(
            CoffeeBonus::points_bonus(&monday_in_march(), &member, &gift_card_only),
            Ok(Vec::new())
        );

        // Fully paid with points: nothing earns.
        let paid_with_points = testing::order(BRAND)
            .line("latte", "coffee", 1, 450)
            .paid_with_points(450)
            .base_points(4)
            .build();
        assert_eq!(
            CoffeeBonus::points_bonus(&monday_in_march(), &member, &paid_with_points),
            Ok(Vec::new())
        );
    }

    #[test]
    fn other_brands_orders_are_not_ours() {
        let member = testing::member("m-1").birthday_month(3).build();
        let cinema_order = testing::order("cinema")
            .line("ticket", "ticket", 1, 4_000)
            .build();
        assert_eq!(
            CoffeeBonus::points_bonus(&monday_in_march(), &member, &cinema_order),
            Ok(Vec::new())
        );
    }

    #[test]
    fn double_weekday_comes_from_config() {
        let member = testing::member("m-1").build();
        let host = TestHost::new().with_config("double_weekday", "Tue");
        let tuesday =
            host.run(|| CoffeeBonus::points_bonus(&tuesday_in_march(), &member, &coffee_order(30)));
        assert_eq!(points(&tuesday.expect("ok")), vec![("weekday-x2", 30)]);
        let monday =
            host.run(|| CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(30)));
        assert_eq!(monday, Ok(Vec::new()));

        let broken = TestHost::new().with_config("double_weekday", "someday");
        let err = broken
            .run(|| CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(30)))
            .expect_err("a bad weekday is an admin error");
        assert!(
            matches!(err, HookError::Failed(ref reason) if reason.contains("double_weekday")),
            "{err}"
        );
    }

    #[test]
    fn cap_trims_the_later_bonus_and_logs_why() {
        let member = testing::member("m-1").birthday_month(3).build();
        let host = TestHost::new();
        let bonuses = host
            .run(|| CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(8_000)))
            .expect("ok");
        assert_eq!(
            points(&bonuses),
            vec![("birthday-x2", 8_000), ("weekday-x2", 2_000)]
        );

        let tight = TestHost::new().with_config("max_bonus_points", "5000");
        let bonuses = tight
            .run(|| CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(8_000)))
            .expect("ok");
        assert_eq!(points(&bonuses), vec![("birthday-x2", 5_000)]);
        assert_eq!(
            tight.log_messages(),
            vec!["bonus weekday-x2 dropped: cap of 5000 points reached"]
        );
    }

    #[test]
    fn manifest_defaults_give_the_same_decisions_as_code_defaults() {
        let member = testing::member("m-1").birthday_month(3).build();
        let host = TestHost::new()
            .with_manifest_defaults(MANIFEST)
            .expect("manifest parses");
        let with_defaults = host
            .run(|| CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(8_000)));
        let without = CoffeeBonus::points_bonus(&monday_in_march(), &member, &coffee_order(8_000));
        assert_eq!(with_defaults, without);
    }

    #[test]
    fn coffee_pays_the_platform_for_points_issued_and_is_refunded() {
        let inv = testing::invocation().build();
        let issued = testing::settle_event(SettleKind::PointsIssued, BRAND)
            .points(60)
            .value_cents(60)
            .build();
        let lines = CoffeeBonus::settle(&inv, &issued).expect("ok");
        assert_eq!(
            lines,
            vec![SettlementLine::new(
                "coffee",
                "platform",
                60,
                "60 points issued at coffee"
            )]
        );
        check_settlement(&issued, &lines).expect("valid settlement");

        let refund = testing::settle_event(SettleKind::Refund, BRAND)
            .points(60)
            .value_cents(60)
            .build();
        let lines = CoffeeBonus::settle(&inv, &refund).expect("ok");
        assert_eq!(
            (
                lines[0].payer.as_str(),
                lines[0].payee.as_str(),
                lines[0].amount_cents
            ),
            ("platform", "coffee", 60)
        );
        check_settlement(&refund, &lines).expect("valid settlement");
    }

    #[test]
    fn nothing_to_settle_for_other_brands_kinds_or_zero_value() {
        let inv = testing::invocation().build();
        for event in [
            testing::settle_event(SettleKind::PointsIssued, "cinema")
                .value_cents(60)
                .build(),
            testing::settle_event(SettleKind::PointsIssued, BRAND)
                .value_cents(0)
                .build(),
            testing::settle_event(SettleKind::PointsRedeemed, BRAND)
                .value_cents(60)
                .build(),
        ] {
            assert_eq!(
                CoffeeBonus::settle(&inv, &event),
                Ok(Vec::new()),
                "{event:?}"
            );
        }
    }

    #[test]
    fn unimplemented_hooks_say_so() {
        let inv = testing::invocation().build();
        let member = testing::member("m-1").build();
        assert_eq!(
            CoffeeBonus::list_perks(&inv, &member),
            Err(HookError::NotImplemented)
        );
    }
}
