//! TEST FIXTURE — not a plugin. A settle plugin that works for all events but one: for a
//! `perk-redeemed` funded by the mall and honoured by parking, the mall pays parking 80% of the
//! face value and the platform a 5% commission (rounded down), except for the perk
//! [`MISSING_PERK`], which its share table lacks: that event traps (a panic), every time. The
//! host must park that one event and keep settling the plugin's other events.

use coalition_sdk::{
    export_plugin, Hook, HookResult, Invocation, Plugin, PluginInfo, SettleEvent, SettleKind,
    SettlementLine, PLATFORM,
};

/// The funding brand.
pub const MALL: &str = "mall";
/// The honouring brand.
pub const PARKING: &str = "parking";
/// The perk whose share is missing: settling it traps.
pub const MISSING_PERK: &str = "valet-parking";

/// The fixture.
pub struct SettleGap;

impl Plugin for SettleGap {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "settle-gap".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::Settle],
            brands: vec![MALL.into(), PARKING.into()],
        }
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        if event.kind != SettleKind::PerkRedeemed
            || event.funding_brand != MALL
            || event.honouring_brand != PARKING
        {
            return Ok(Vec::new());
        }
        if event.reference.as_deref() == Some(MISSING_PERK) {
            panic!("settle-gap 1.0.0: no share for perk {MISSING_PERK}");
        }
        let share = event.value_cents.saturating_mul(80) / 100;
        let commission = event.value_cents.saturating_mul(5) / 100;
        Ok([
            (PARKING, share, "parking's share of a parking perk"),
            (
                PLATFORM,
                commission,
                "platform commission on a parking perk",
            ),
        ]
        .into_iter()
        .filter(|(_, amount, _)| *amount > 0)
        .map(|(payee, amount, why)| SettlementLine::new(MALL, payee, amount, why.to_owned()))
        .collect())
    }
}

export_plugin!(SettleGap);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<SettleGap>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
