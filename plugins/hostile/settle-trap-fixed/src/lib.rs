//! TEST FIXTURE — not a plugin. The repaired 1.0.1 release of `settle-trap`: for a
//! `perk-redeemed` funded by the mall and honoured by parking, the mall pays parking 80% of the
//! face value and the platform a 5% commission (rounded down); a refund reverses both.

use coalition_sdk::{
    export_plugin, Hook, HookResult, Invocation, Plugin, PluginInfo, SettleEvent, SettleKind,
    SettlementLine, PLATFORM,
};

/// The funding brand.
pub const MALL: &str = "mall";
/// The honouring brand.
pub const PARKING: &str = "parking";

/// The fixture.
pub struct SettleTrapFixed;

impl Plugin for SettleTrapFixed {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "settle-trap".into(),
            version: "1.0.1".into(),
            hooks: vec![Hook::Settle],
            brands: vec![MALL.into(), PARKING.into()],
        }
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        let reversal = match event.kind {
            SettleKind::PerkRedeemed => false,
            SettleKind::Refund => true,
            _ => return Ok(Vec::new()),
        };
        if event.funding_brand != MALL || event.honouring_brand != PARKING {
            return Ok(Vec::new());
        }
        let share = event.value_cents.saturating_mul(80) / 100;
        let commission = event.value_cents.saturating_mul(5) / 100;
        let mut lines = Vec::new();
        for (payee, amount, why) in [
            (PARKING, share, "parking's share of a free parking hour"),
            (
                PLATFORM,
                commission,
                "platform commission on a free parking hour",
            ),
        ] {
            if amount > 0 {
                let (payer, payee) = if reversal {
                    (payee, MALL)
                } else {
                    (MALL, payee)
                };
                let why = if reversal {
                    format!("refund of {why}")
                } else {
                    why.to_owned()
                };
                lines.push(SettlementLine::new(payer, payee, amount, why));
            }
        }
        Ok(lines)
    }
}

export_plugin!(SettleTrapFixed);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<SettleTrapFixed>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
