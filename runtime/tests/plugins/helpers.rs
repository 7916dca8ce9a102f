//! Fixtures and input builders shared by the integration tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coalition_runtime::model::{
    BrandSpend, Cart, Coupon, HookInput, Invocation, MemberContext, Order, OrderLine,
    RedeemRequest, SettleEvent, SettleKind,
};
use coalition_runtime::{
    BreakerConfig, Clock, ErrorKind, LoadedPlugin, Manifest, PluginError, Runtime, RuntimeConfig,
};

/// Where `cargo xtask build-plugins` writes components: `target/plugins/` under the repo root,
/// unless `COALITION_PLUGINS_DIR` says otherwise.
pub fn plugins_dir() -> PathBuf {
    match std::env::var_os("COALITION_PLUGINS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

/// A built fixture: its manifest text and component bytes. Panics (failing the test, never
/// skipping it) when the fixture has not been built.
pub struct Fixture {
    pub name: String,
    pub manifest_text: String,
    pub bytes: Vec<u8>,
}

impl Fixture {
    pub fn manifest(&self) -> Manifest {
        Manifest::parse(&self.manifest_text)
            .unwrap_or_else(|e| panic!("fixture {}: manifest does not parse: {e}", self.name))
    }
}

pub fn fixture(name: &str) -> Fixture {
    let dir = plugins_dir();
    let read = |ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "missing test fixture {} ({e}): run `cargo xtask build-plugins` first \
                 (or set COALITION_PLUGINS_DIR)",
                path.display()
            )
        })
    };
    let manifest_text = String::from_utf8(read("toml"))
        .unwrap_or_else(|_| panic!("fixture {name}: manifest is not UTF-8"));
    Fixture {
        name: name.to_string(),
        manifest_text,
        bytes: read("wasm"),
    }
}

/// Tests make many deliberate failures; the breaker is tested on its own, with a clock.
const TEST_BREAKER_THRESHOLD: u32 = 1_000_000;

/// A runtime with a private artifact directory.
pub struct TestRuntime {
    pub runtime: Runtime,
    pub artifact_dir: tempfile::TempDir,
}

pub fn runtime() -> TestRuntime {
    runtime_with(|_| {})
}

pub fn runtime_with(adjust: impl FnOnce(&mut RuntimeConfig)) -> TestRuntime {
    let artifact_dir = tempfile::tempdir().expect("temp dir");
    let mut config = RuntimeConfig {
        artifact_dir: Some(artifact_dir.path().to_path_buf()),
        max_concurrent_calls: 8,
        breaker: BreakerConfig {
            failure_threshold: TEST_BREAKER_THRESHOLD,
            ..BreakerConfig::default()
        },
        ..RuntimeConfig::default()
    };
    adjust(&mut config);
    TestRuntime {
        runtime: Runtime::new(config).expect("runtime starts"),
        artifact_dir,
    }
}

pub fn runtime_with_clock(
    clock: Arc<dyn Clock>,
    threshold: u32,
    cool_down: Duration,
) -> TestRuntime {
    runtime_with(|config| {
        config.clock = clock;
        config.breaker = BreakerConfig {
            failure_threshold: threshold,
            cool_down,
        };
    })
}

/// Loads a fixture, panicking with the plugin's error if it does not load.
///
/// The deadline is raised to the platform maximum: deadlines are charged in the guest thread's
/// CPU time, but debug builds and parallel tests still make that time vary. Fuel (the
/// deterministic budget) is the manifest's own; the deadline has tests of its own.
pub fn load(rt: &Runtime, name: &str) -> LoadedPlugin {
    let f = fixture(name);
    let mut manifest = f.manifest();
    relax_deadline(&mut manifest);
    rt.load(&manifest, &f.bytes, None)
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

/// Raises every deadline of the manifest to the platform maximum.
pub fn relax_deadline(manifest: &mut Manifest) {
    manifest.limits.deadline_ms = coalition_runtime::limits::MAX_DEADLINE_MS;
    for limits in manifest.hook_limits.values_mut() {
        limits.deadline_ms = coalition_runtime::limits::MAX_DEADLINE_MS;
    }
}

/// Asserts the error is attributed to `plugin` and returns its kind.
pub fn attributed(err: &PluginError, plugin: &LoadedPlugin) -> ErrorKind {
    assert_eq!(err.plugin, plugin.name(), "{err}");
    assert_eq!(err.version, plugin.version(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}@{}", plugin.name(), plugin.version())),
        "message names plugin and version: {text}"
    );
    err.kind.clone()
}

/// 2025-03-17 09:30 at UTC+8: a Monday in March.
pub const MONDAY_MARCH_17_0930_UTC8_MS: i64 = 1_742_175_000_000;
/// 2025-03-18 09:30 at UTC+8: a Tuesday in March.
pub const TUESDAY_MARCH_18_0930_UTC8_MS: i64 = MONDAY_MARCH_17_0930_UTC8_MS + 86_400_000;

pub fn invocation(now_ms: i64, brand: &str) -> Invocation {
    Invocation {
        now_ms,
        utc_offset_minutes: 480,
        seed: 42,
        brand: brand.into(),
        budgets: Vec::new(),
    }
}

pub fn member(birthday_month: Option<u8>) -> MemberContext {
    MemberContext {
        member_ref: "m-7f3a".into(),
        tier: "gold".into(),
        tier_rank: 2,
        tags: vec!["coffee-lover".into()],
        birthday_month,
        points_balance: 5_000,
        qualifying_spend_cents: 250_000,
        spend: vec![
            BrandSpend {
                brand: "restaurant".into(),
                spend_7d_cents: 25_000,
                spend_30d_cents: 30_000,
                visits_30d: 3,
            },
            BrandSpend {
                brand: "coffee".into(),
                spend_7d_cents: 2_000,
                spend_30d_cents: 9_000,
                visits_30d: 8,
            },
        ],
        member_since_ms: 1_600_000_000_000,
        stored_value_cents: 0,
        pending_points: 0,
        membership: None,
    }
}

pub fn lines(count: usize, category: &str, unit_price_cents: i64) -> Vec<OrderLine> {
    (0..count)
        .map(|i| OrderLine {
            line_id: format!("l{i}"),
            sku: format!("{category}-{i}"),
            category: category.into(),
            quantity: 1 + (i as u32 % 3),
            unit_price_cents,
            excluded: false,
        })
        .collect()
}

fn total(lines: &[OrderLine]) -> i64 {
    lines
        .iter()
        .map(|l| l.unit_price_cents * i64::from(l.quantity))
        .sum()
}

/// An order at `brand`; base points at 1 point per 100 cents.
pub fn order(brand: &str, line_count: usize) -> Order {
    let lines = lines(line_count, "coffee", 450);
    let total_cents = total(&lines);
    Order {
        order_id: "o-1001".into(),
        brand: brand.into(),
        lines,
        total_cents,
        paid_with_points_cents: 0,
        base_points: total_cents / 100,
    }
}

pub fn cart(brand: &str, line_count: usize, category: &str, unit_price_cents: i64) -> Cart {
    let lines = lines(line_count, category, unit_price_cents);
    Cart {
        brand: brand.into(),
        total_cents: total(&lines),
        lines,
        applied_templates: vec![],
    }
}

pub fn coupon(template_id: &str, funding_brand: &str, params: &[(&str, &str)]) -> Coupon {
    Coupon {
        code: "C-0001".into(),
        template_id: template_id.into(),
        funding_brand: funding_brand.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

pub fn event(
    kind: SettleKind,
    brand: &str,
    funding: &str,
    honouring: &str,
    value_cents: i64,
) -> SettleEvent {
    SettleEvent {
        event_id: "ev-1".into(),
        kind,
        brand: brand.into(),
        funding_brand: funding.into(),
        honouring_brand: honouring.into(),
        reference: None,
        points: value_cents,
        value_cents,
        occurred_at_ms: MONDAY_MARCH_17_0930_UTC8_MS,
    }
}

/// Plausible arguments for any hook of a plugin, for fixtures whose behaviour does not depend
/// on the input.
pub fn any_input(plugin: &LoadedPlugin, hook: coalition_runtime::model::Hook) -> HookInput {
    use coalition_runtime::model::Hook;
    let brand = plugin
        .manifest()
        .brands
        .first()
        .cloned()
        .unwrap_or_else(|| "mall".to_string());
    match hook {
        Hook::PointsBonus => HookInput::PointsBonus {
            member: member(Some(3)),
            order: order(&brand, 5),
        },
        Hook::ListPerks => HookInput::ListPerks {
            member: member(Some(3)),
        },
        Hook::RedeemPerk => HookInput::RedeemPerk {
            member: member(Some(3)),
            request: RedeemRequest {
                perk_id: "any".into(),
                redemption_id: "r-1".into(),
            },
        },
        Hook::ApplyCoupon => HookInput::ApplyCoupon {
            coupon: coupon("any", &brand, &[]),
            cart: cart(&brand, 5, "coffee", 450),
        },
        Hook::Settle => HookInput::Settle {
            event: event(SettleKind::PointsIssued, &brand, &brand, &brand, 1_000),
        },
    }
}
