//! TEST FIXTURE — not a plugin. An SDK guest that uses std freely: `println!` once, then a
//! flood of stdout and stderr, then formatting and allocation that grows, frees and reuses
//! memory. Built twice from this one source: `stdout-flood` for `wasm32-wasip2` (std's output
//! reaches WASI, which the host discards) and `stdout-flood-plain` for `wasm32-unknown-unknown`
//! (std's output goes nowhere). Both must answer, and answer the same.
//!
//! The perk (id `flood`): the description is `checksum=<u64>;printed-bytes=<n>;allocated=<n>`,
//! deterministic for a given member id, so the runtime can compare it with the native result.

use std::collections::BTreeMap;
use std::io::Write;

use coalition_sdk::{
    export_plugin, Grant, Hook, HookResult, Invocation, MemberContext, Perk, Plugin, PluginInfo,
};

/// The fixture.
pub struct StdoutFlood;

/// Bytes written to each of stdout and stderr by the flood: far above any pipe or buffer size.
pub const FLOOD_BYTES: usize = 1 << 20;
/// Size of one flood write.
const CHUNK: usize = 2048;
/// Strings formatted and kept alive at once.
const STRINGS: usize = 2000;

/// FNV-1a, so the checksum is the same on every target.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Prints, floods, formats and allocates; returns (checksum, printed bytes, allocated bytes).
pub fn exercise(member_id: &str) -> (u64, usize, usize) {
    println!("stdout-flood: hello, {member_id}");
    let line = format!("{}\n", "x".repeat(CHUNK - 1));
    let mut printed = 0;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while printed < FLOOD_BYTES {
        // Errors are ignored on purpose: the host may refuse output; the guest must not trap.
        let _ = out.write_all(line.as_bytes());
        let _ = err.write_all(line.as_bytes());
        printed += line.len();
    }
    let _ = out.flush();
    eprintln!("stdout-flood: {printed} bytes to each stream");

    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut allocated = 0;
    // Many small strings alive at once, then freed.
    let strings: Vec<String> = (0..STRINGS)
        .map(|i| format!("{member_id}-{i:05}-{}", i * 7919))
        .collect();
    for s in &strings {
        hash = fnv(hash, s.as_bytes());
        allocated += s.len();
    }
    drop(strings);
    // One buffer grown by doubling to 4 MiB (past the initial memory), then freed.
    let chunk: Vec<u8> = (0..4096usize).map(|i| (i % 251) as u8).collect();
    let mut big: Vec<u8> = Vec::new();
    while big.len() < 4 << 20 {
        big.extend_from_slice(&chunk);
    }
    hash = fnv(hash, &big[big.len() - 64..]);
    allocated += big.capacity();
    drop(big);
    // Freed memory reused by a map of boxed values.
    let mut map = BTreeMap::new();
    for i in 0..500u32 {
        map.insert(format!("k{i:04}"), vec![i; 64]);
    }
    for (k, v) in &map {
        hash = fnv(hash, k.as_bytes());
        hash = fnv(hash, &v[63].to_le_bytes());
        allocated += k.len() + v.len() * 4;
    }
    (hash, printed, allocated)
}

impl Plugin for StdoutFlood {
    fn info() -> PluginInfo {
        PluginInfo {
            // `stdout-flood` or `stdout-flood-plain`: the crate built from this source.
            name: env!("CARGO_PKG_NAME").into(),
            version: "0.1.0".into(),
            hooks: vec![Hook::ListPerks],
            brands: vec!["mall".into()],
        }
    }

    fn list_perks(_: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        let (checksum, printed, allocated) = exercise(&member.member_ref);
        Ok(vec![Perk {
            id: "flood".into(),
            title: "stdout flood".into(),
            description: format!(
                "checksum={checksum};printed-bytes={printed};allocated={allocated}"
            ),
            funding_brand: "mall".into(),
            honouring_brand: "mall".into(),
            cost_points: 0,
            value_cents: 0,
            grant: Grant::FreeItem("flood".into()),
            valid_until_ms: None,
        }])
    }
}

export_plugin!(StdoutFlood);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<StdoutFlood>(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/plugin.toml"
        )))
        .expect("plugin.toml agrees with info()");
    }
}
