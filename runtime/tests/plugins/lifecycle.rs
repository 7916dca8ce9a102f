//! Loading, caching, breaker, replay, determinism and the fail-open perk listing.

use std::time::Duration;

use coalition_runtime::model::{Config, Hook, SettleKind};
use coalition_runtime::{
    list_perks_all, ArtifactSource, BreakerState, CallContext, ErrorKind, LoadError, ManualClock,
    Operation,
};

use crate::helpers::*;

#[test]
fn artifacts_are_cached_on_disk_and_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let with_dir = |c: &mut coalition_runtime::RuntimeConfig| {
        c.artifact_dir = Some(dir.path().to_path_buf());
    };
    let f = fixture("coffee-bonus");
    let mut manifest = f.manifest();
    relax_deadline(&mut manifest);

    let first = runtime_with(with_dir);
    let compiled = first
        .runtime
        .load(&manifest, &f.bytes, None)
        .expect("loads");
    assert_eq!(compiled.artifact_source(), ArtifactSource::Compiled);
    let artifact = first
        .runtime
        .artifact_path(compiled.component_sha256())
        .expect("artifact dir configured");
    assert!(
        artifact.exists(),
        "artifact written to {}",
        artifact.display()
    );
    let again = first
        .runtime
        .load(&manifest, &f.bytes, None)
        .expect("loads");
    assert_eq!(again.artifact_source(), ArtifactSource::Memory);

    // A new process (runtime) with the same directory maps the artifact instead of compiling.
    let second = runtime_with(with_dir);
    let cached = second
        .runtime
        .load(&manifest, &f.bytes, None)
        .expect("loads");
    assert_eq!(cached.artifact_source(), ArtifactSource::Disk);
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let a = compiled
        .points_bonus(&ctx, &member(Some(3)), &order("coffee", 20))
        .expect("ok");
    let b = cached
        .points_bonus(&ctx, &member(Some(3)), &order("coffee", 20))
        .expect("ok");
    assert_eq!(a.value, b.value);
    assert_eq!(a.receipt.output_sha256, b.receipt.output_sha256);
    assert_eq!(
        a.receipt.fuel_used, b.receipt.fuel_used,
        "fuel is deterministic"
    );

    // A damaged artifact is discarded and rebuilt, never trusted. (Replace the file rather
    // than truncate it: loaded components map it, and shrinking a mapped file under a live
    // process is SIGBUS territory; the cache itself only ever renames new files into place.)
    drop((first, second, compiled, again, cached, a, b));
    let damaged = dir.path().join("damaged.tmp");
    std::fs::write(&damaged, b"not an artifact").expect("damage it");
    std::fs::rename(&damaged, &artifact).expect("replace it");
    let third = runtime_with(with_dir);
    let rebuilt = third
        .runtime
        .load(&manifest, &f.bytes, None)
        .expect("loads");
    assert_eq!(rebuilt.artifact_source(), ArtifactSource::Compiled);
    assert!(std::fs::read(&artifact).expect("rewritten").len() > 1000);
}

#[test]
fn sha256_is_checked_before_anything_runs() {
    let t = runtime();
    let f = fixture("coffee-bonus");
    let err = t
        .runtime
        .load(&f.manifest(), &f.bytes, Some(&"0".repeat(64)))
        .expect_err("wrong hash");
    assert!(
        matches!(err.kind, ErrorKind::Load(LoadError::HashMismatch { .. })),
        "{err}"
    );
    let sha = coalition_runtime::receipt::sha256_hex(&f.bytes);
    t.runtime
        .load(&f.manifest(), &f.bytes, Some(&sha.to_uppercase()))
        .expect("right hash in any case");
}

#[test]
fn manifest_that_disagrees_with_describe_is_rejected() {
    let t = runtime();
    let f = fixture("coffee-bonus");
    type Edit = fn(&mut coalition_runtime::Manifest);
    let cases: [(&str, Edit); 3] = [
        ("name", |m| m.name = "tea-bonus".into()),
        ("version", |m| m.version = "1.0.1".into()),
        ("hooks", |m| m.hooks = vec![Hook::PointsBonus]),
    ];
    for (what, edit) in cases {
        let mut manifest = f.manifest();
        edit(&mut manifest);
        let err = t
            .runtime
            .load(&manifest, &f.bytes, None)
            .expect_err("mismatch");
        match &err.kind {
            ErrorKind::Load(LoadError::DescribeMismatch(detail)) => {
                assert!(detail.starts_with(what), "{what}: {detail}")
            }
            other => panic!("{what}: expected DescribeMismatch, got {other}"),
        }
        assert_eq!(err.operation, Operation::Load);
    }
}

#[test]
fn describe_naming_other_brands_than_the_signed_manifest_is_rejected() {
    let t = runtime();
    let f = fixture("coffee-bonus");
    // describe() says ["coffee"]; a manifest signed for another brand, or for more brands,
    // must not load: the manifest's brands are the ones that signed.
    type Edit = fn(&mut coalition_runtime::Manifest);
    let cases: [Edit; 3] = [
        |m| m.brands = vec!["mall".into()],
        |m| m.brands = vec!["coffee".into(), "mall".into()],
        |m| m.brands = Vec::new(),
    ];
    for edit in cases {
        let mut manifest = f.manifest();
        edit(&mut manifest);
        let err = t
            .runtime
            .load(&manifest, &f.bytes, None)
            .expect_err("brands mismatch");
        match &err.kind {
            ErrorKind::Load(load @ LoadError::DescribeBrandsMismatch { describe, .. }) => {
                assert_eq!(describe, "coffee");
                assert_eq!(load.code(), "describe_brands_mismatch");
            }
            other => panic!(
                "{:?}: expected DescribeBrandsMismatch, got {other}",
                manifest.brands
            ),
        }
    }
    t.runtime
        .load(&f.manifest(), &f.bytes, None)
        .expect("the true manifest loads");
}

#[test]
fn receipts_record_the_exact_fuel_and_the_budget_holds_to_the_instruction() {
    let t = runtime();
    let f = fixture("coffee-bonus");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let call = |fuel: u64| {
        let mut manifest = f.manifest();
        relax_deadline(&mut manifest);
        manifest.limits.fuel = fuel;
        manifest.hook_limits.remove(&Hook::PointsBonus);
        let plugin = t.runtime.load(&manifest, &f.bytes, None).expect("loads");
        plugin.points_bonus(&ctx, &member(Some(3)), &order("coffee", 20))
    };
    let exact = call(2_000_000).expect("ample budget").receipt.fuel_used;
    assert!(exact > 1_000, "{exact}");
    // Every budget at or above what it really uses: the same exact count. Every budget below
    // it: fuel_exhausted, never a success that records the budget as what it used.
    for fuel in (exact.saturating_sub(300)..=exact + 300)
        .step_by(7)
        .chain([exact - 1, exact])
    {
        match call(fuel) {
            Ok(decision) => {
                assert!(fuel >= exact, "succeeded on {fuel} < {exact}");
                assert_eq!(decision.receipt.fuel_used, exact, "budget {fuel}");
            }
            Err(err) => {
                assert!(fuel < exact, "budget {fuel} >= {exact} failed: {err}");
                assert!(
                    matches!(err.kind, ErrorKind::FuelExhausted { fuel: f } if f == fuel),
                    "budget {fuel}: {err}"
                );
            }
        }
    }
}

#[test]
fn breaker_trips_after_consecutive_failures_and_recovers_after_cool_down() {
    let clock = ManualClock::new();
    let t = runtime_with_clock(clock.clone(), 5, Duration::from_secs(30));
    let looping = load(&t.runtime, "infinite-loop");
    let hook = looping.info().hooks[0];
    let input = any_input(&looping, hook);
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));

    for i in 0..5 {
        assert_eq!(
            looping.breaker_state(),
            BreakerState::Closed,
            "before failure {i}"
        );
        let err = looping.call(&ctx, input.as_args()).expect_err("loops");
        assert!(matches!(err.kind, ErrorKind::FuelExhausted { .. }), "{err}");
    }
    assert_eq!(looping.breaker_state(), BreakerState::Open);
    assert_eq!(
        t.runtime.breaker_state(looping.name(), looping.version()),
        BreakerState::Open
    );

    // Refused at once, without running guest code.
    let err = looping.call(&ctx, input.as_args()).expect_err("open");
    assert_eq!(
        attributed(&err, &looping),
        ErrorKind::CircuitOpen {
            retry_after_ms: 30_000
        }
    );

    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        looping
            .call(&ctx, input.as_args())
            .expect_err("still open")
            .kind,
        ErrorKind::CircuitOpen { .. }
    ));
    clock.advance(Duration::from_secs(1));
    assert_eq!(looping.breaker_state(), BreakerState::HalfOpen);
    // The probe runs (and fails again): open for another full cool-down.
    let err = looping
        .call(&ctx, input.as_args())
        .expect_err("probe fails");
    assert!(matches!(err.kind, ErrorKind::FuelExhausted { .. }), "{err}");
    assert_eq!(looping.breaker_state(), BreakerState::Open);

    // Other plugins are unaffected meanwhile.
    let coffee = load(&t.runtime, "coffee-bonus");
    coffee
        .points_bonus(&ctx, &member(None), &order("coffee", 3))
        .expect("healthy plugin unaffected");
    assert_eq!(coffee.breaker_state(), BreakerState::Closed);
}

#[test]
fn half_open_breaker_closes_when_the_probe_succeeds() {
    let clock = ManualClock::new();
    let t = runtime_with_clock(clock.clone(), 3, Duration::from_secs(10));
    let coffee = load(&t.runtime, "coffee-bonus");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    // A misconfigured weekday makes the plugin return its own error: a plugin fault.
    let broken = CallContext {
        config: Config::from([("double_weekday".to_string(), "someday".to_string())]),
        ..ctx.clone()
    };
    for _ in 0..3 {
        let err = coffee
            .points_bonus(&broken, &member(None), &order("coffee", 3))
            .expect_err("bad config");
        assert!(matches!(err.kind, ErrorKind::HookError(_)), "{err}");
    }
    assert_eq!(coffee.breaker_state(), BreakerState::Open);
    clock.advance(Duration::from_secs(10));
    coffee
        .points_bonus(&ctx, &member(None), &order("coffee", 3))
        .expect("probe succeeds");
    assert_eq!(coffee.breaker_state(), BreakerState::Closed);
}

#[test]
fn retries_of_a_failing_settle_event_neither_open_nor_keep_open_the_breaker() {
    let clock = ManualClock::new();
    let t = runtime_with_clock(clock.clone(), 3, Duration::from_secs(10));
    // settle-gap settles parking perks but traps on the one its share table lacks.
    let gap = load(&t.runtime, "settle-gap");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "parking"));
    let mut bad = event(SettleKind::PerkRedeemed, "parking", "mall", "parking", 600);
    bad.reference = Some("valet-parking".into());
    let mut good = bad.clone();
    good.event_id = "ev-2".into();
    good.reference = Some("free-parking-hour".into());
    let traps = |err: coalition_runtime::PluginError| matches!(err.kind, ErrorKind::Trap(_));

    // Closed: failed retries are not counted, however many.
    for _ in 0..10 {
        assert!(traps(gap.settle_retry(&ctx, &bad).expect_err("traps")));
    }
    assert_eq!(gap.breaker_state(), BreakerState::Closed);

    // Ordinary calls that fail in a row open it; a retry is then refused without running.
    for _ in 0..3 {
        assert!(traps(gap.settle(&ctx, &bad).expect_err("traps")));
    }
    assert_eq!(gap.breaker_state(), BreakerState::Open);
    let err = gap.settle_retry(&ctx, &bad).expect_err("open");
    assert!(matches!(err.kind, ErrorKind::CircuitOpen { .. }), "{err}");

    // Half-open: a failed retry takes the free probe but hands it back instead of reopening;
    // the healthy event's call is the probe that closes the breaker.
    clock.advance(Duration::from_secs(10));
    assert!(traps(gap.settle_retry(&ctx, &bad).expect_err("traps")));
    assert_eq!(gap.breaker_state(), BreakerState::HalfOpen);
    let settled = gap.settle(&ctx, &good).expect("the probe settles");
    assert_eq!(settled.value.len(), 2);
    assert_eq!(gap.breaker_state(), BreakerState::Closed);
}

#[test]
fn replaying_a_receipt_gives_the_same_output_and_fuel() {
    let t = runtime();
    let coffee = load(&t.runtime, "coffee-bonus");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let decision = coffee
        .points_bonus(&ctx, &member(Some(3)), &order("coffee", 20))
        .expect("bonus");
    let receipt = decision.receipt;

    // Receipts survive storage as JSON.
    let stored = serde_json::to_string(&receipt).expect("serialize");
    let loaded: coalition_runtime::Receipt = serde_json::from_str(&stored).expect("parse");
    let report = coffee.replay(&loaded).expect("replays");
    assert!(report.matches, "{report:?}");
    assert_eq!(report.replayed_fuel_used, receipt.fuel_used);

    // A tampered input is refused, and a tampered output hash does not match.
    let mut tampered = loaded.clone();
    tampered.input = tampered.input.replace("\"seed\":42", "\"seed\":43");
    assert!(matches!(
        coffee.replay(&tampered).expect_err("tampered").kind,
        ErrorKind::InputRejected(_)
    ));
    let mut wrong_output = loaded;
    wrong_output.output_sha256 = "0".repeat(64);
    assert!(!coffee.replay(&wrong_output).expect("replays").matches);
}

#[test]
fn list_perks_fails_open_across_healthy_and_hostile_plugins() {
    let t = runtime();
    let healthy = load(&t.runtime, "cinema-dinner");
    let hostile = load(&t.runtime, "panics");
    let coffee = load(&t.runtime, "coffee-bonus");
    assert!(
        hostile.implements(Hook::ListPerks),
        "the panics fixture lists perks"
    );
    let plugins = vec![
        (hostile.clone(), Config::new()),
        (healthy.clone(), Config::new()),
        (coffee, Config::new()),
    ];
    let listing = list_perks_all(
        &plugins,
        &invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""),
        &member(Some(3)),
    );
    assert_eq!(listing.failures.len(), 1, "{:?}", listing.failures);
    assert_eq!(listing.failures[0].plugin, hostile.name());
    assert_eq!(listing.failures[0].hook(), Some(Hook::ListPerks));
    assert_eq!(
        listing.perks.len(),
        1,
        "coffee-bonus does not list perks and is skipped"
    );
    assert_eq!(listing.perks[0].plugin, healthy.name());
    assert!(
        listing.all_perks().count() > 0,
        "the healthy plugin's perks are shown"
    );
}

#[test]
fn wasi_guest_sees_the_invocation_time_and_seeded_randomness() {
    let t = runtime();
    let wasi = load(&t.runtime, "wasi-clock");
    assert!(wasi.uses_wasi());
    let probe = |now_ms: i64, seed: u64| {
        let mut inv = invocation(now_ms, "");
        inv.seed = seed;
        let decision = wasi
            .list_perks(&CallContext::new(inv), &member(None))
            .expect("wasi guest answers");
        decision
            .value
            .first()
            .cloned()
            .expect("one perk")
            .description
    };
    let a = probe(MONDAY_MARCH_17_0930_UTC8_MS, 7);
    assert!(
        a.starts_with(&format!(
            "wall-clock-ms={MONDAY_MARCH_17_0930_UTC8_MS};invocation-now-ms={MONDAY_MARCH_17_0930_UTC8_MS};"
        )),
        "the guest's SystemTime::now is the invocation time: {a}"
    );
    assert!(a.ends_with(";env-vars=0"), "no environment: {a}");
    let hash = |d: &str| {
        d.split(';')
            .find(|f| f.starts_with("random-state-hash="))
            .map(str::to_string)
    };
    assert_eq!(
        hash(&a),
        hash(&probe(MONDAY_MARCH_17_0930_UTC8_MS, 7)),
        "same seed, same randomness"
    );
    assert_ne!(
        hash(&a),
        hash(&probe(MONDAY_MARCH_17_0930_UTC8_MS, 8)),
        "the seed drives the randomness"
    );
    let later = probe(TUESDAY_MARCH_18_0930_UTC8_MS, 7);
    assert!(
        later.starts_with(&format!("wall-clock-ms={TUESDAY_MARCH_18_0930_UTC8_MS};")),
        "{later}"
    );
}

/// An SDK guest built for `wasm32-wasip2` trapped on a single `println!` (out-of-bounds memory
/// access) and on a stdout flood (unknown handle index): the SDK's allocator took the initial
/// memory's free tail that wasi-libc's malloc also owns. The same source built for both targets
/// must print, flood, format and allocate, and answer the same.
#[test]
fn an_sdk_guest_on_wasi_may_println_flood_stdout_and_allocate_freely() {
    let t = runtime();
    let describe = |name: &str| {
        let plugin = load(&t.runtime, name);
        let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));
        // Twice: the second call runs in a fresh instance after the first's output.
        let mut answers = (0..2).map(|_| {
            plugin
                .list_perks(&ctx, &member(None))
                .unwrap_or_else(|e| panic!("{name} answers: {e}"))
                .value
                .first()
                .cloned()
                .expect("one perk")
                .description
        });
        let first = answers.next().expect("first");
        assert_eq!(
            Some(first.clone()),
            answers.next(),
            "{name} is deterministic"
        );
        (plugin.uses_wasi(), first)
    };
    let (wasi_uses_wasi, wasi) = describe("stdout-flood");
    let (plain_uses_wasi, plain) = describe("stdout-flood-plain");
    assert!(wasi_uses_wasi && !plain_uses_wasi);
    assert!(
        wasi.contains(";printed-bytes=1048576;"),
        "the flood ran to its end: {wasi}"
    );
    assert_eq!(wasi, plain, "both targets compute the same answer");
}

/// The SDK crate carries a copy of the WIT so that it can be packaged and used outside this
/// repository; it must stay the very contract the host implements.
#[test]
fn the_sdks_packaged_wit_is_the_hosts_wit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for version in ["coalition-plugin@0.1.0", "coalition-plugin@0.2.0"] {
        let host = std::fs::read_dir(root.join("wit").join(version)).expect("wit/");
        for entry in host {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name").to_owned();
            let sdk = root.join("sdk/wit").join(version).join(&name);
            assert_eq!(
                std::fs::read(&path).expect("host wit"),
                std::fs::read(&sdk).unwrap_or_default(),
                "sdk/wit/{version}/{} differs from wit/{version}: copy it",
                name.to_string_lossy()
            );
        }
    }
}

#[test]
fn a_plugin_running_its_full_share_of_slots_leaves_the_rest_to_the_others() {
    // 8 slots; each plugin may hold 3 of them (all its versions together).
    let t = runtime_with(|config| {
        config.max_concurrent_calls_per_plugin = Some(3);
        config.slot_wait = Duration::from_millis(20);
    });
    let busy = load(&t.runtime, "cinema-dinner");
    let other = load(&t.runtime, "parking-perk");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));
    let member = member(Some(3));

    // Three calls of the busy plugin in flight (held as a running call holds them, so the
    // test does not race real calls), the fourth is refused, not queued for the pool.
    let held: Vec<_> = (0..3)
        .map(|_| busy.hold_call_share().expect("a place in the share"))
        .collect();
    assert!(busy.hold_call_share().is_none(), "the share is 3");
    let refused = busy.list_perks(&ctx, &member).expect_err("saturated");
    assert!(
        matches!(refused.kind, ErrorKind::Saturated { limit: 3, .. }),
        "{refused:?}"
    );
    assert_eq!(refused.kind.code(), "saturated");
    assert!(
        !refused.kind.is_plugin_fault(),
        "a full share is load, not a fault: it must not open the breaker"
    );
    assert_eq!(busy.calls_run(Hook::ListPerks), 0, "no guest code ran");

    // Another brand's plugin still gets a slot.
    other
        .list_perks(&ctx, &member)
        .expect("other plugins are served");
    assert_eq!(other.calls_run(Hook::ListPerks), 1);

    // Versions share one bound: the same plugin loaded again is saturated too.
    let busy_again = load(&t.runtime, "cinema-dinner");
    assert!(busy_again.hold_call_share().is_none());

    drop(held);
    busy.list_perks(&ctx, &member).expect("places freed");
    assert_eq!(busy.calls_run(Hook::ListPerks), 1);
}
