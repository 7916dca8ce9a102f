//! TEST FIXTURE — not a plugin. Recurses without bound in `list-perks` and `points-bonus`
//! until the stack overflows, which is a trap the runtime must contain. The other hooks are not
//! implemented.

use coalition_sdk::{
    export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order, Perk, Plugin,
    PluginInfo,
};

/// Words of stack each frame keeps alive, so both the wasm and the shadow stack grow fast.
const FRAME_WORDS: usize = 32;

/// The fixture.
pub struct DeepRecursion;

/// Never returns in practice: the base case needs 2^64 frames. `black_box` keeps each frame
/// alive and stops the optimiser from turning the recursion into a loop.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let mut frame = [depth; FRAME_WORDS];
    std::hint::black_box(&mut frame);
    let below = descend(depth + 1);
    below.wrapping_add(frame[usize::try_from(depth % 32).unwrap_or(0)])
}

impl Plugin for DeepRecursion {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "deep-recursion".into(),
            version: "0.1.0".into(),
            hooks: vec![Hook::PointsBonus, Hook::ListPerks],
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, order: &Order) -> HookResult<Vec<Bonus>> {
        let points = i64::try_from(descend(order.lines.len() as u64)).unwrap_or(1);
        Ok(vec![Bonus::new(
            points.max(1),
            "unreachable",
            "never returned",
        )])
    }

    fn list_perks(_: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        std::hint::black_box(descend(u64::from(member.tier_rank)));
        Ok(Vec::new())
    }
}

export_plugin!(DeepRecursion);

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_matches_describe() {
        coalition_sdk::testing::check_manifest::<super::DeepRecursion>(include_str!(
            "../plugin.toml"
        ))
        .expect("plugin.toml agrees with info()");
    }
}
