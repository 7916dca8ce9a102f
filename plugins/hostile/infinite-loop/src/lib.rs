//! TEST FIXTURE — not a plugin. Loops forever in `list-perks` and `points-bonus`, so the
//! runtime can prove that fuel and the epoch deadline stop a spinning guest and that other
//! plugins' calls are unaffected. The other hooks are not implemented.

use coalition_sdk::{
    export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order, Perk, Plugin,
    PluginInfo,
};

/// The fixture.
pub struct InfiniteLoop;

/// Spins forever. `black_box` keeps the optimiser from proving the loop side-effect free.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

impl Plugin for InfiniteLoop {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "infinite-loop".into(),
            version: "0.1.0".into(),
            hooks: vec![Hook::PointsBonus, Hook::ListPerks],
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, _: &Order) -> HookResult<Vec<Bonus>> {
        spin()
    }

    fn list_perks(_: &Invocation, _: &MemberContext) -> HookResult<Vec<Perk>> {
        spin()
    }
}

export_plugin!(InfiniteLoop);

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_matches_describe() {
        coalition_sdk::testing::check_manifest::<super::InfiniteLoop>(include_str!(
            "../plugin.toml"
        ))
        .expect("plugin.toml agrees with info()");
    }
}
