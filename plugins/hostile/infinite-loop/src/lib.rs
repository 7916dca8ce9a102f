//! TEST FIXTURE — not a plugin. Loops forever in `list-perks` and `points-bonus`, so the
//! runtime can prove that fuel and the epoch deadline stop a spinning guest and that other
//! plugins' calls are unaffected. The other hooks are not implemented.
//!
//! The config key `spin` picks how it spins:
//! - `instructions` (default): a tight loop, a few instructions a turn. It burns fuel as fast as
//!   a guest can (the platform's 50M-fuel ceiling in about 7 ms here), so fuel stops it.
//! - `host-calls`: asks the host every turn for a config key of 1 MiB. The host copies and
//!   checks that megabyte on the guest's thread, which costs the guest's CPU time but almost no
//!   fuel (fuel counts guest instructions and bulk bytes, never the host's work): 1.3M fuel in
//!   275 ms of CPU here, so the platform's 50M-fuel ceiling would last it about 10 s, twenty
//!   times the 500 ms wall backstop. Only the deadline (or that backstop, reported the same
//!   way) can stop it, however fast or loaded the machine.

use coalition_sdk::{
    config, export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order, Perk, Plugin,
    PluginInfo,
};

/// The fixture.
pub struct InfiniteLoop;

/// Length of the key the `host-calls` spin asks for: the host's copy of it is what makes a turn
/// cost far more CPU than fuel.
const KEY_BYTES: usize = 1 << 20;

/// Spins forever, as the `spin` config key says. `black_box` keeps the optimiser from proving
/// either loop side-effect free.
fn spin() -> ! {
    if config::get("spin").as_deref() == Some("host-calls") {
        let key = "k".repeat(KEY_BYTES);
        loop {
            std::hint::black_box(config::get(std::hint::black_box(&key)));
        }
    }
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
