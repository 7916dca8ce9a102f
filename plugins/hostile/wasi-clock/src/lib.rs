//! TEST FIXTURE — not a plugin. Built for `wasm32-wasip2`, so std reaches WASI: `list-perks`
//! reads the WASI wall clock (`SystemTime::now`), a `HashMap` random state (seeded from WASI
//! randomness) and the environment, and reports them in one perk, so the runtime can prove that
//! WASI guests see a frozen clock equal to `invocation.now-ms`, randomness that follows the
//! seed (same seed → same `random-state-hash`), and no environment.
//!
//! The perk (id `wasi-probe`): the title is `wall-clock-ms=<ms>`; the description is
//! `wall-clock-ms=<ms>;invocation-now-ms=<ms>;random-state-hash=<u64>;env-vars=<n>`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use coalition_sdk::{
    export_plugin, Grant, Hook, HookResult, Invocation, MemberContext, Perk, Plugin, PluginInfo,
};

/// The fixture.
pub struct WasiClock;

/// What the guest observed: wall clock (ms since the epoch, negative before it), a hash under a
/// fresh random state, and the number of environment variables.
pub fn observe() -> (i64, u64, usize) {
    let wall_clock_ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    };
    let random_state_hash = RandomState::new().hash_one("coalition");
    (
        wall_clock_ms,
        random_state_hash,
        std::env::vars_os().count(),
    )
}

impl Plugin for WasiClock {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "wasi-clock".into(),
            version: "0.1.0".into(),
            hooks: vec![Hook::ListPerks],
            brands: vec!["mall".into()],
        }
    }

    fn list_perks(inv: &Invocation, _: &MemberContext) -> HookResult<Vec<Perk>> {
        let (wall_clock_ms, random_state_hash, env_vars) = observe();
        Ok(vec![Perk {
            id: "wasi-probe".into(),
            title: format!("wall-clock-ms={wall_clock_ms}"),
            description: format!(
                "wall-clock-ms={wall_clock_ms};invocation-now-ms={};random-state-hash={random_state_hash};env-vars={env_vars}",
                inv.now_ms
            ),
            funding_brand: "mall".into(),
            honouring_brand: "mall".into(),
            cost_points: 0,
            value_cents: 0,
            grant: Grant::FreeItem("wasi-probe".into()),
            valid_until_ms: None,
        }])
    }
}

export_plugin!(WasiClock);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<WasiClock>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }

    #[test]
    fn natively_the_probe_reports_the_real_clock_in_a_parsable_perk() {
        let inv = testing::invocation().build();
        let perks = WasiClock::list_perks(&inv, &testing::member("m").build()).expect("ok");
        testing::check_perks(&perks).expect("valid perk");
        let fields: Vec<&str> = perks[0].description.split(';').collect();
        assert_eq!(fields.len(), 4, "{fields:?}");
        assert!(fields[1] == format!("invocation-now-ms={}", inv.now_ms));
        // Natively the clock is real: later than the fixed 2025 invocation time.
        let wall: i64 = fields[0]
            .trim_start_matches("wall-clock-ms=")
            .parse()
            .expect("a number");
        assert!(wall > inv.now_ms);
    }
}
