//! **coffee-bonus 1.1.0** — the next version of the coffee brand's bonus plugin, kept as a
//! fixture for dry runs: it decides exactly like `coffee-bonus` 1.0.0, except that a coffee
//! purchase on a local Saturday also earns its base points once more (`saturday-x2`), after the
//! birthday and weekday bonuses and within the same `max_bonus_points` cap.
//!
//! A dry run of this version against receipts of 1.0.0 therefore differs on exactly the
//! Saturday purchases that earn base points, and nowhere else.

use coalition_sdk::calendar::Weekday;
use coalition_sdk::{
    config, export_plugin, log, Bonus, Hook, HookError, HookResult, Invocation, MemberContext,
    Order, Plugin, PluginInfo, SettleEvent, SettleKind, SettlementLine, PLATFORM,
};

/// The brand this plugin belongs to.
pub const BRAND: &str = "coffee";
/// Default of config `double_weekday` (keep equal to plugin.toml).
pub const DEFAULT_DOUBLE_WEEKDAY: &str = "monday";
/// Default of config `max_bonus_points` (keep equal to plugin.toml).
pub const DEFAULT_MAX_BONUS_POINTS: i64 = 10_000;

/// The coffee brand's plugin, version 1.1.0.
pub struct CoffeeBonusNext;

impl Plugin for CoffeeBonusNext {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "coffee-bonus".into(),
            version: "1.1.0".into(),
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
        if today.weekday() == Weekday::Saturday && double_weekday != Weekday::Saturday {
            wanted.push(("saturday-x2", "Saturday: double points".to_owned()));
        }

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

export_plugin!(CoffeeBonusNext);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    const MANIFEST: &str = include_str!("../plugin.toml");

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<CoffeeBonusNext>(MANIFEST).expect("plugin.toml agrees");
    }

    #[test]
    fn saturday_doubles_and_tuesday_does_not() {
        let member = testing::member("m-1").build();
        let order = testing::order(BRAND)
            .line("latte", "coffee", 2, 450)
            .base_points(30)
            .build();
        // Saturday 22 March 2025 and Tuesday 18 March 2025, 09:30 local.
        let saturday = testing::invocation()
            .local(2025, 3, 22, 9, 30)
            .brand(BRAND)
            .build();
        let tuesday = testing::invocation()
            .local(2025, 3, 18, 9, 30)
            .brand(BRAND)
            .build();
        let sat = CoffeeBonusNext::points_bonus(&saturday, &member, &order).expect("ok");
        assert_eq!(sat.len(), 1);
        assert_eq!(sat[0].code, "saturday-x2");
        assert_eq!(
            CoffeeBonusNext::points_bonus(&tuesday, &member, &order),
            Ok(Vec::new())
        );
    }
}
