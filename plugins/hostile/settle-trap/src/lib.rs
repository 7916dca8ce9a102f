//! TEST FIXTURE — not a plugin. The broken 1.0.0 release of `settle-trap`: its settle hook
//! panics (a wasm trap with `panic = "abort"`), so the host must hold the event with nothing
//! written. `settle-trap-fixed` is the repaired 1.0.1 release of the same plugin.

use coalition_sdk::{
    export_plugin, Hook, HookResult, Invocation, Plugin, PluginInfo, SettleEvent, SettlementLine,
};

/// The fixture.
pub struct SettleTrap;

impl Plugin for SettleTrap {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "settle-trap".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::Settle],
            brands: vec!["mall".into(), "parking".into()],
        }
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        panic!(
            "settle-trap 1.0.0: share table not initialised for {}",
            event.event_id
        )
    }
}

export_plugin!(SettleTrap);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<SettleTrap>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
