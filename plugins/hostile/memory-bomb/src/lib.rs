//! TEST FIXTURE — not a plugin. Grows its linear memory without bound in `list-perks` and
//! `points-bonus`, so the runtime can prove the memory cap stops it (the allocation fails, which
//! aborts: a trap) without disturbing the host. The other hooks are not implemented.

use coalition_sdk::{
    export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order, Perk, Plugin,
    PluginInfo,
};

/// One allocation: 1 MiB, so the cap is crossed within a few dozen steps whatever it is.
const CHUNK_BYTES: usize = 1 << 20;

/// The fixture.
pub struct MemoryBomb;

/// Allocates and touches 1 MiB chunks until memory runs out, keeping every chunk alive.
fn hoard() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK_BYTES];
        // Touch every page so the memory is really used, not just reserved.
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
}

impl Plugin for MemoryBomb {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "memory-bomb".into(),
            version: "0.1.0".into(),
            hooks: vec![Hook::PointsBonus, Hook::ListPerks],
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, _: &Order) -> HookResult<Vec<Bonus>> {
        hoard()
    }

    fn list_perks(_: &Invocation, _: &MemberContext) -> HookResult<Vec<Perk>> {
        hoard()
    }
}

export_plugin!(MemoryBomb);

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_matches_describe() {
        coalition_sdk::testing::check_manifest::<super::MemoryBomb>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
