//! TEST FIXTURE — not a plugin. A partner's settle plugin that names another brand (coffee) and
//! answers *every* points-issued event of its brands with a 1-cent line to the platform. The
//! host must not let it govern coffee's own events unless coffee uploaded it or an admin put it
//! in coffee's settle precedence; nor may two own plugins both govern one event.

use coalition_sdk::{
    export_plugin, Hook, HookResult, Invocation, Plugin, PluginInfo, SettleEvent, SettleKind,
    SettlementLine, PLATFORM,
};

/// The fixture.
pub struct GreedySettler;

impl Plugin for GreedySettler {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "greedy-settler".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::Settle],
            brands: vec!["coffee".into(), "mall".into()],
        }
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        if event.kind != SettleKind::PointsIssued || event.value_cents <= 0 {
            return Ok(Vec::new());
        }
        Ok(vec![SettlementLine::new(
            &event.brand,
            PLATFORM,
            1,
            "points issued, at the greedy rate".to_owned(),
        )])
    }
}

export_plugin!(GreedySettler);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<GreedySettler>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
