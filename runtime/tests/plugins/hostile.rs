//! Hostile fixtures are contained, attributed, and leave the runtime healthy.

use coalition_runtime::model::{Config, Hook, HookInput, RedeemRequest, SettleKind};
use coalition_runtime::{
    limits, CallContext, ErrorKind, LoadError, Manifest, Operation, Runtime, TrapKind,
};

use crate::helpers::*;

/// Calls every hook the fixture lists and returns the error kinds, checking attribution.
fn failures(rt: &Runtime, name: &str) -> Vec<(Hook, ErrorKind)> {
    failures_with(rt, name, |_| {})
}

/// Like [`failures`], with the manifest adjusted first (the budget, typically).
fn failures_with(
    rt: &Runtime,
    name: &str,
    adjust: impl FnOnce(&mut Manifest),
) -> Vec<(Hook, ErrorKind)> {
    let f = fixture(name);
    let mut manifest = f.manifest();
    relax_deadline(&mut manifest);
    adjust(&mut manifest);
    let plugin = rt
        .load(&manifest, &f.bytes, None)
        .unwrap_or_else(|e| panic!("{name} should load: {e}"));
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    plugin
        .info()
        .hooks
        .clone()
        .into_iter()
        .map(|hook| {
            let input = any_input(&plugin, hook);
            let err = plugin
                .call(&ctx, input.as_args())
                .expect_err("a hostile fixture must fail");
            assert_eq!(err.operation, Operation::Hook(hook), "{err}");
            (hook, attributed(&err, &plugin))
        })
        .collect()
}

/// The platform's largest budget, so that the limit under test (not fuel) stops the guest.
fn max_budget(manifest: &mut Manifest) {
    manifest.limits.fuel = limits::MAX_FUEL_PER_CALL;
    manifest.limits.deadline_ms = limits::MAX_DEADLINE_MS;
    manifest.hook_limits.clear();
}

/// After a hostile call, a healthy plugin on the same runtime still answers correctly.
fn healthy_still_serves(rt: &Runtime) {
    let coffee = load(rt, "coffee-bonus");
    let order = order("coffee", 20);
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let decision = coffee
        .points_bonus(&ctx, &member(None), &order)
        .expect("healthy plugin still serves");
    assert_eq!(decision.value.len(), 1);
    assert_eq!(decision.value[0].points, order.base_points);
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let t = runtime();
    let kinds = failures(&t.runtime, "infinite-loop");
    assert!(!kinds.is_empty());
    for (hook, kind) in kinds {
        assert!(
            matches!(kind, ErrorKind::FuelExhausted { .. }),
            "{hook}: {kind}"
        );
    }
    healthy_still_serves(&t.runtime);
}

/// The fixture's `host-calls` spin makes the host copy a megabyte every turn, so the platform's
/// fuel ceiling would last it about 10 s of CPU: the 1 ms deadline (or, on a starved machine,
/// the 500 ms wall backstop, reported the same way) is the only limit it can meet.
/// A tight loop would not do here: it spends the fuel ceiling in 3–7 ms, and on a loaded
/// machine the epoch ticker can wake later than that, so which limit won depended on the load.
#[test]
fn infinite_loop_with_ample_fuel_hits_the_deadline() {
    let t = runtime();
    let f = fixture("infinite-loop");
    let mut manifest = f.manifest();
    manifest.limits.fuel = limits::MAX_FUEL_PER_CALL;
    manifest.limits.deadline_ms = 1;
    manifest.hook_limits.clear();
    let plugin = t.runtime.load(&manifest, &f.bytes, None).expect("loads");
    for hook in plugin.info().hooks.clone() {
        let ctx = CallContext {
            invocation: invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"),
            config: Config::from([("spin".to_string(), "host-calls".to_string())]),
        };
        let err = plugin
            .call(&ctx, any_input(&plugin, hook).as_args())
            .expect_err("loops forever");
        assert_eq!(
            attributed(&err, &plugin),
            ErrorKind::Deadline { deadline_ms: 1 },
            "{hook}"
        );
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn memory_bomb_is_stopped_by_the_memory_cap() {
    let t = runtime();
    // Under its own 2M-fuel budget the bomb (which zeroes and touches every page) burns its
    // fuel before it reaches 16 MiB: contained all the same.
    for (hook, kind) in failures(&t.runtime, "memory-bomb") {
        assert!(kind.is_plugin_fault(), "{hook}: {kind}");
    }
    // Given all the fuel and time the platform allows, the memory cap is what stops it.
    let kinds = failures_with(&t.runtime, "memory-bomb", max_budget);
    assert_eq!(kinds.len(), 2);
    for (hook, kind) in kinds {
        assert_eq!(kind, ErrorKind::MemoryLimit { memory_mib: 16 }, "{hook}");
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn deep_recursion_overflows_the_stack_cleanly() {
    let t = runtime();
    for (hook, kind) in failures(&t.runtime, "deep-recursion") {
        assert_eq!(kind, ErrorKind::Trap(TrapKind::StackOverflow), "{hook}");
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn a_panic_is_an_unreachable_trap() {
    let t = runtime();
    for (hook, kind) in failures(&t.runtime, "panics") {
        assert_eq!(kind, ErrorKind::Trap(TrapKind::Unreachable), "{hook}");
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn huge_output_is_refused() {
    let t = runtime();
    for (hook, kind) in failures(&t.runtime, "huge-output") {
        assert!(kind.is_plugin_fault(), "{hook}: {kind}");
    }
    let kinds = failures_with(&t.runtime, "huge-output", max_budget);
    assert_eq!(kinds.len(), 5);
    for (hook, kind) in kinds {
        match hook {
            // 10 MiB strings: lowered into the host, then refused by the size check.
            Hook::PointsBonus | Hook::RedeemPerk | Hook::ApplyCoupon => {
                assert!(
                    matches!(kind, ErrorKind::OutputTooLarge(ref d) if d.contains("10485760")),
                    "{hook}: {kind}"
                )
            }
            // Building 100 000 perks or lines costs more than the platform's largest fuel
            // budget, so fuel stops these first; the count limits are exercised by
            // `bad_decisions_break_each_invariant_on_its_own`.
            _ => assert!(
                matches!(
                    kind,
                    ErrorKind::OutputTooLarge(_) | ErrorKind::FuelExhausted { .. }
                ),
                "{hook}: {kind}"
            ),
        }
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn bad_decisions_break_each_invariant_on_its_own() {
    let t = runtime();
    let plugin = load(&t.runtime, "bad-decisions");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "mall"));
    let too_large = |k: &ErrorKind| matches!(k, ErrorKind::OutputTooLarge(_));
    let invariant = |k: &ErrorKind| matches!(k, ErrorKind::InvariantViolation(_));
    let check = |input: HookInput, expect: &dyn Fn(&ErrorKind) -> bool, case: &str| {
        let err = plugin
            .call(&ctx, input.as_args())
            .expect_err("a bad decision is refused");
        assert_eq!(err.hook(), Some(input.hook()), "{case}");
        let kind = attributed(&err, &plugin);
        assert!(expect(&kind), "{case}: {kind}");
    };

    for (order_id, expect) in [
        ("negative-bonus", &invariant as &dyn Fn(&ErrorKind) -> bool),
        ("zero-bonus", &invariant),
        ("absurd-bonus", &invariant),
        ("overflowing-bonuses", &invariant),
        ("long-code", &too_large),
    ] {
        let mut o = order("mall", 3);
        o.order_id = order_id.into();
        check(
            HookInput::PointsBonus {
                member: member(None),
                order: o,
            },
            expect,
            order_id,
        );
    }
    for (tag, expect) in [
        ("negative-cost", &invariant as &dyn Fn(&ErrorKind) -> bool),
        ("negative-value", &invariant),
        ("too-many-perks", &too_large),
        ("duplicate-ids", &invariant),
        ("empty-title", &invariant),
    ] {
        let mut m = member(None);
        m.tags = vec![tag.into()];
        check(HookInput::ListPerks { member: m }, expect, tag);
    }
    for perk_id in ["negative-discount-grant", "empty-refusal"] {
        let request = RedeemRequest {
            perk_id: perk_id.into(),
            redemption_id: "r".into(),
        };
        check(
            HookInput::RedeemPerk {
                member: member(None),
                request,
            },
            &invariant,
            perk_id,
        );
    }
    for template in [
        "above-line",
        "negative-discount",
        "unknown-line",
        "duplicate-line",
    ] {
        let input = HookInput::ApplyCoupon {
            coupon: coupon(template, "mall", &[]),
            cart: cart("mall", 3, "fashion", 1_000),
        };
        check(input, &invariant, template);
    }
    for (reference, expect) in [
        ("over-2x", &invariant as &dyn Fn(&ErrorKind) -> bool),
        ("pay-self", &invariant),
        ("stranger", &invariant),
        ("zero-amount", &invariant),
        ("negative-amount", &invariant),
        ("too-many-lines", &too_large),
        ("overflow", &invariant),
    ] {
        let mut e = event(SettleKind::PerkRedeemed, "mall", "mall", "parking", 1_000);
        e.reference = Some(reference.into());
        check(HookInput::Settle { event: e }, expect, reference);
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn forbidden_import_is_rejected_at_load_naming_the_import() {
    let t = runtime();
    let f = fixture("forbidden-import");
    let err = t
        .runtime
        .load(&f.manifest(), &f.bytes, None)
        .expect_err("forbidden import");
    assert_eq!(err.plugin, "forbidden-import");
    assert_eq!(err.operation, Operation::Load);
    match &err.kind {
        ErrorKind::Load(LoadError::ForbiddenImports { imports, offered }) => {
            assert!(!imports.is_empty());
            assert!(
                imports.iter().all(|i| !i.starts_with("coalition:plugin/")),
                "{imports:?}"
            );
            assert!(offered.contains("coalition:plugin/host@0.1.0"), "{offered}");
            let text = err.to_string();
            for import in imports {
                assert!(text.contains(import.as_str()), "{text}");
            }
        }
        other => panic!("expected ForbiddenImports, got {other}"),
    }
    healthy_still_serves(&t.runtime);
}

#[test]
fn corrupt_binary_is_rejected_cleanly() {
    let t = runtime();
    let f = fixture("corrupt");
    let err = t
        .runtime
        .load(&f.manifest(), &f.bytes, None)
        .expect_err("corrupt component");
    assert_eq!(err.plugin, "corrupt");
    assert!(
        matches!(err.kind, ErrorKind::Load(LoadError::Invalid(_))),
        "{err}"
    );
    // Nothing half-written is left behind in the artifact cache.
    let leftovers: Vec<_> = std::fs::read_dir(t.artifact_dir.path())
        .expect("artifact dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    healthy_still_serves(&t.runtime);
}

#[test]
fn random_garbage_and_empty_bytes_are_rejected_cleanly() {
    let t = runtime();
    let manifest = fixture("coffee-bonus").manifest();
    for bytes in [
        &b""[..],
        b"\0asm",
        b"\0asm\x0d\0\x01\0garbage",
        &[0xff; 4096],
    ] {
        let err = t.runtime.load(&manifest, bytes, None).expect_err("garbage");
        assert!(
            matches!(err.kind, ErrorKind::Load(LoadError::Invalid(_))),
            "{err}"
        );
    }
}
