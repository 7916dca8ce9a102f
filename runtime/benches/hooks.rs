//! Plugin runtime benchmarks: a fresh-instance call per hook of the example plugins (20-line
//! orders and carts) against the same logic as native Rust, pool tuning, compile vs cached load.
//!
//! Needs the components from `cargo xtask build-plugins`. Run:
//! `CARGO_TARGET_DIR=target/rt cargo bench -p coalition-runtime --bench hooks`

use std::path::PathBuf;
use std::time::Duration;

use coalition_runtime::model::{self, Hook, HookInput, SettleKind};
use coalition_runtime::{CallContext, LoadedPlugin, Manifest, Runtime, RuntimeConfig};
use criterion::{criterion_group, Criterion};

/// 2025-03-17 09:30 at UTC+8: a Monday in March, so the weekday bonus applies.
const MONDAY_MS: i64 = 1_742_175_000_000;
/// Lines per order and cart: a full basket at a counter.
const LINES: usize = 20;

fn plugins_dir() -> PathBuf {
    std::env::var_os("COALITION_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn read(name: &str, ext: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{name}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} ({e}): run `cargo xtask build-plugins` first",
            path.display()
        )
    })
}

fn manifest(name: &str) -> Manifest {
    let text = String::from_utf8(read(name, "toml")).expect("manifest is UTF-8");
    Manifest::parse(&text).expect("manifest parses")
}

fn runtime(adjust: impl FnOnce(&mut RuntimeConfig)) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = RuntimeConfig {
        artifact_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    adjust(&mut config);
    (Runtime::new(config).expect("runtime"), dir)
}

/// Loads with the manifest's fuel but the platform's longest deadline: a benchmark measures
/// speed, not the backstop.
fn load(rt: &Runtime, name: &str) -> LoadedPlugin {
    let mut manifest = manifest(name);
    manifest.limits.deadline_ms = coalition_runtime::limits::MAX_DEADLINE_MS;
    for limits in manifest.hook_limits.values_mut() {
        limits.deadline_ms = coalition_runtime::limits::MAX_DEADLINE_MS;
    }
    rt.load(&manifest, &read(name, "wasm"), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---- inputs ---------------------------------------------------------------------------------

fn invocation(brand: &str) -> model::Invocation {
    model::Invocation {
        now_ms: MONDAY_MS,
        utc_offset_minutes: 480,
        seed: 42,
        brand: brand.into(),
        budgets: Vec::new(),
    }
}

fn member() -> model::MemberContext {
    model::MemberContext {
        member_ref: "m-7f3a".into(),
        tier: "gold".into(),
        tier_rank: 2,
        tags: vec!["coffee-lover".into(), "parent".into()],
        birthday_month: Some(3),
        points_balance: 50_000,
        qualifying_spend_cents: 250_000,
        spend: ["restaurant", "coffee", "cinema", "parking"]
            .iter()
            .map(|brand| model::BrandSpend {
                brand: (*brand).into(),
                spend_7d_cents: 25_000,
                spend_30d_cents: 30_000,
                visits_30d: 4,
            })
            .collect(),
        member_since_ms: 1_600_000_000_000,
        stored_value_cents: 0,
        pending_points: 0,
        membership: None,
    }
}

fn lines(category: &str) -> Vec<model::OrderLine> {
    (0..LINES)
        .map(|i| model::OrderLine {
            line_id: format!("l{i}"),
            sku: format!("{category}-{i}"),
            category: category.into(),
            quantity: 1 + (i as u32 % 3),
            unit_price_cents: 450 + 10 * i as i64,
            excluded: i == LINES - 1,
        })
        .collect()
}

fn total(lines: &[model::OrderLine]) -> i64 {
    lines
        .iter()
        .map(|l| l.unit_price_cents * i64::from(l.quantity))
        .sum()
}

fn order(brand: &str, category: &str) -> model::Order {
    let lines = lines(category);
    let total_cents = total(&lines);
    model::Order {
        order_id: "o-1001".into(),
        brand: brand.into(),
        lines,
        total_cents,
        paid_with_points_cents: 0,
        base_points: total_cents / 100,
    }
}

fn cart(brand: &str, category: &str) -> model::Cart {
    let lines = lines(category);
    model::Cart {
        brand: brand.into(),
        total_cents: total(&lines),
        lines,
        applied_templates: vec![],
    }
}

fn event(kind: SettleKind, brand: &str, funding: &str, honouring: &str) -> model::SettleEvent {
    model::SettleEvent {
        event_id: "ev-1".into(),
        kind,
        brand: brand.into(),
        funding_brand: funding.into(),
        honouring_brand: honouring.into(),
        reference: None,
        points: 600,
        value_cents: 600,
        occurred_at_ms: MONDAY_MS,
    }
}

// ---- the same inputs as SDK types, for native calls -----------------------------------------

mod native {
    use coalition_runtime::model;
    use coalition_sdk as sdk;

    pub fn invocation(i: &model::Invocation) -> sdk::Invocation {
        sdk::Invocation {
            now_ms: i.now_ms,
            utc_offset_minutes: i.utc_offset_minutes,
            seed: i.seed,
            brand: i.brand.clone(),
        }
    }

    pub fn member(m: &model::MemberContext) -> sdk::MemberContext {
        sdk::MemberContext {
            member_ref: m.member_ref.clone(),
            tier: m.tier.clone(),
            tier_rank: m.tier_rank,
            tags: m.tags.clone(),
            birthday_month: m.birthday_month,
            points_balance: m.points_balance,
            qualifying_spend_cents: m.qualifying_spend_cents,
            spend: m
                .spend
                .iter()
                .map(|s| sdk::BrandSpend {
                    brand: s.brand.clone(),
                    spend_7d_cents: s.spend_7d_cents,
                    spend_30d_cents: s.spend_30d_cents,
                    visits_30d: s.visits_30d,
                })
                .collect(),
            member_since_ms: m.member_since_ms,
        }
    }

    fn line(l: &model::OrderLine) -> sdk::OrderLine {
        sdk::OrderLine {
            line_id: l.line_id.clone(),
            sku: l.sku.clone(),
            category: l.category.clone(),
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
            excluded: l.excluded,
        }
    }

    pub fn order(o: &model::Order) -> sdk::Order {
        sdk::Order {
            order_id: o.order_id.clone(),
            brand: o.brand.clone(),
            lines: o.lines.iter().map(line).collect(),
            total_cents: o.total_cents,
            paid_with_points_cents: o.paid_with_points_cents,
            base_points: o.base_points,
        }
    }

    pub fn cart(c: &model::Cart) -> sdk::Cart {
        sdk::Cart {
            brand: c.brand.clone(),
            lines: c.lines.iter().map(line).collect(),
            total_cents: c.total_cents,
            applied_templates: c.applied_templates.clone(),
        }
    }

    pub fn coupon(c: &model::Coupon) -> sdk::Coupon {
        sdk::Coupon {
            code: c.code.clone(),
            template_id: c.template_id.clone(),
            funding_brand: c.funding_brand.clone(),
            params: c.params.clone(),
        }
    }

    pub fn request(r: &model::RedeemRequest) -> sdk::RedeemRequest {
        sdk::RedeemRequest {
            perk_id: r.perk_id.clone(),
            redemption_id: r.redemption_id.clone(),
        }
    }

    pub fn event(e: &model::SettleEvent) -> sdk::SettleEvent {
        sdk::SettleEvent {
            event_id: e.event_id.clone(),
            kind: match e.kind {
                model::SettleKind::PointsIssued => sdk::SettleKind::PointsIssued,
                model::SettleKind::PointsRedeemed => sdk::SettleKind::PointsRedeemed,
                model::SettleKind::PerkRedeemed => sdk::SettleKind::PerkRedeemed,
                model::SettleKind::CouponHonoured => sdk::SettleKind::CouponHonoured,
                model::SettleKind::Refund => sdk::SettleKind::Refund,
                other => panic!("the native baselines are 0.1.0 plugins; {other:?} is 0.2.0"),
            },
            brand: e.brand.clone(),
            funding_brand: e.funding_brand.clone(),
            honouring_brand: e.honouring_brand.clone(),
            reference: e.reference.clone(),
            points: e.points,
            value_cents: e.value_cents,
            occurred_at_ms: e.occurred_at_ms,
        }
    }
}

/// One benchmarked hook call: the runtime input and the same call made natively.
struct Case {
    plugin: &'static str,
    hook: Hook,
    invocation: model::Invocation,
    input: HookInput,
    native: Box<dyn Fn()>,
}

fn cases() -> Vec<Case> {
    use coalition_sdk::Plugin;
    use std::hint::black_box;
    let mut cases = Vec::new();

    // coffee-bonus
    {
        let inv = invocation("coffee");
        let (m, o) = (member(), order("coffee", "coffee"));
        let (n_inv, n_m, n_o) = (
            native::invocation(&inv),
            native::member(&m),
            native::order(&o),
        );
        cases.push(Case {
            plugin: "coffee-bonus",
            hook: Hook::PointsBonus,
            invocation: inv.clone(),
            input: HookInput::PointsBonus {
                member: m,
                order: o,
            },
            native: Box::new(move || {
                let out = coffee_bonus::CoffeeBonus::points_bonus(&n_inv, &n_m, &n_o);
                black_box(out).expect("native bonus");
            }),
        });
        let e = event(SettleKind::PointsIssued, "coffee", "coffee", "coffee");
        let (n_inv, n_e) = (native::invocation(&inv), native::event(&e));
        cases.push(Case {
            plugin: "coffee-bonus",
            hook: Hook::Settle,
            invocation: inv,
            input: HookInput::Settle { event: e },
            native: Box::new(move || {
                black_box(coffee_bonus::CoffeeBonus::settle(&n_inv, &n_e)).expect("native settle");
            }),
        });
    }

    // cinema-dinner and parking-perk: list, redeem and settle a cross-brand perk.
    macro_rules! perk_plugin {
        ($name:literal, $plugin:ty, $perk:literal, $funding:literal, $honouring:literal) => {{
            let inv = invocation("");
            let m = member();
            let (n_inv, n_m) = (native::invocation(&inv), native::member(&m));
            cases.push(Case {
                plugin: $name,
                hook: Hook::ListPerks,
                invocation: inv.clone(),
                input: HookInput::ListPerks { member: m.clone() },
                native: Box::new(move || {
                    black_box(<$plugin>::list_perks(&n_inv, &n_m)).expect("native list");
                }),
            });
            let request = model::RedeemRequest {
                perk_id: $perk.into(),
                redemption_id: "r-1".into(),
            };
            let (n_inv, n_m, n_r) = (
                native::invocation(&inv),
                native::member(&m),
                native::request(&request),
            );
            cases.push(Case {
                plugin: $name,
                hook: Hook::RedeemPerk,
                invocation: inv.clone(),
                input: HookInput::RedeemPerk { member: m, request },
                native: Box::new(move || {
                    black_box(<$plugin>::redeem_perk(&n_inv, &n_m, &n_r)).expect("native redeem");
                }),
            });
            let mut e = event(SettleKind::PerkRedeemed, $honouring, $funding, $honouring);
            e.reference = Some($perk.into());
            let (n_inv, n_e) = (native::invocation(&inv), native::event(&e));
            cases.push(Case {
                plugin: $name,
                hook: Hook::Settle,
                invocation: inv,
                input: HookInput::Settle { event: e },
                native: Box::new(move || {
                    black_box(<$plugin>::settle(&n_inv, &n_e)).expect("native settle");
                }),
            });
        }};
    }
    perk_plugin!(
        "cinema-dinner",
        cinema_dinner::CinemaDinner,
        "cinema-ticket-half",
        "restaurant",
        "cinema"
    );
    perk_plugin!(
        "parking-perk",
        parking_perk::ParkingPerk,
        "parking-2h",
        "mall",
        "parking"
    );

    // coupon-logic: a threshold coupon spread over a 20-line cart.
    {
        let inv = invocation("mall");
        let c = model::Coupon {
            code: "C-0001".into(),
            template_id: "spend-200-get-30".into(),
            funding_brand: "mall".into(),
            params: vec![
                ("kind".into(), "threshold".into()),
                ("threshold-cents".into(), "20000".into()),
                ("off-cents".into(), "3000".into()),
            ],
        };
        let k = cart("mall", "fashion");
        let (n_inv, n_c, n_k) = (
            native::invocation(&inv),
            native::coupon(&c),
            native::cart(&k),
        );
        cases.push(Case {
            plugin: "coupon-logic",
            hook: Hook::ApplyCoupon,
            invocation: inv,
            input: HookInput::ApplyCoupon { coupon: c, cart: k },
            native: Box::new(move || {
                black_box(coupon_logic::CouponLogic::apply_coupon(&n_inv, &n_c, &n_k))
                    .expect("native coupon");
            }),
        });
    }
    cases
}

fn hooks(c: &mut Criterion) {
    let (rt, _dir) = runtime(|_| {});
    let mut group = c.benchmark_group("hook");
    for case in cases() {
        let plugin = load(&rt, case.plugin);
        let ctx = CallContext::new(case.invocation.clone());
        let args = case.input.as_args();
        // Prove the call succeeds before timing it, and report its (deterministic) fuel.
        let first = plugin.call(&ctx, args).expect("benchmark call succeeds");
        eprintln!(
            "fuel {}/{}: {} (input {} bytes)",
            case.plugin,
            case.hook,
            first.receipt.fuel_used,
            first.receipt.input.len()
        );
        group.bench_function(format!("wasm/{}/{}", case.plugin, case.hook), |b| {
            b.iter(|| plugin.call(&ctx, args).expect("call"))
        });
        group.bench_function(format!("native/{}/{}", case.plugin, case.hook), |b| {
            b.iter(|| (case.native)())
        });
    }
    group.finish();
}

/// Pool tuning: the same call with the keep-resident settings off and at their defaults.
fn pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    let inv = invocation("coffee");
    let input = HookInput::PointsBonus {
        member: member(),
        order: order("coffee", "coffee"),
    };
    let ctx = CallContext::new(inv);
    for (label, memory, table) in [
        ("keep-resident-off", 0, 0),
        ("keep-resident-default", 2 << 20, 64 << 10),
        ("keep-resident-16mib", 16 << 20, 64 << 10),
    ] {
        let (rt, _dir) = runtime(|c| {
            c.memory_keep_resident_bytes = memory;
            c.table_keep_resident_bytes = table;
        });
        let plugin = load(&rt, "coffee-bonus");
        group.bench_function(label, |b| {
            b.iter(|| plugin.call(&ctx, input.as_args()).expect("call"))
        });
    }
    group.finish();
}

/// What the receipt costs: canonical JSON of the call input and its sha256 (20-line order).
fn receipt(c: &mut Criterion) {
    let input = model::CallInput {
        invocation: invocation("coffee"),
        config: model::Config::from([
            ("double_weekday".to_string(), "monday".to_string()),
            ("max_bonus_points".to_string(), "10000".to_string()),
        ]),
        input: HookInput::PointsBonus {
            member: member(),
            order: order("coffee", "coffee"),
        },
    };
    c.bench_function("receipt/input-json-and-sha256", |b| {
        b.iter(|| {
            let json = serde_json::to_string(&input).expect("serializes");
            coalition_runtime::receipt::sha256_hex(json.as_bytes())
        })
    });
}

/// Compile from bytes vs map a precompiled artifact.
#[allow(unsafe_code)]
fn load_times(c: &mut Criterion) {
    let (rt, _dir) = runtime(|_| {});
    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    for name in [
        "coffee-bonus",
        "cinema-dinner",
        "coupon-logic",
        "parking-perk",
    ] {
        let bytes = read(name, "wasm");
        let plugin = load(&rt, name);
        let artifact = rt
            .artifact_path(plugin.component_sha256())
            .expect("artifact dir configured");
        group.bench_function(format!("compile/{name}"), |b| {
            b.iter(|| wasmtime::component::Component::new(rt.engine(), &bytes).expect("compiles"))
        });
        group.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| {
                // SAFETY: the artifact was written by this runtime for this engine.
                unsafe { wasmtime::component::Component::deserialize_file(rt.engine(), &artifact) }
                    .expect("maps")
            })
        });
    }
    group.finish();
}

/// A starved host: the same call under 8 spinning threads per core, with a 2 ms deadline charged
/// in the guest thread's CPU time. Reports how many calls failed their deadline (expected 0:
/// the budget is CPU, not wall time) and times the calls. This was a test once; it depends on
/// the machine's load, so it is a benchmark (the rule itself is unit-tested with injected clock
/// readings in `runtime/src/deadline.rs`).
fn starved_host(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let (rt, _dir) = runtime(|_| {});
    let mut manifest = manifest("coffee-bonus");
    manifest.limits.deadline_ms = 2;
    manifest.hook_limits.clear();
    let plugin = rt
        .load(&manifest, &read("coffee-bonus", "wasm"), None)
        .expect("loads");
    let ctx = CallContext::new(invocation("coffee"));
    let input = HookInput::PointsBonus {
        member: member(),
        order: order("coffee", "coffee"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cores * 8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(0u64);
                }
            })
        })
        .collect();
    let (calls, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    c.bench_function("starved-host/points-bonus-2ms-cpu-deadline", |b| {
        b.iter(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            if plugin.call(&ctx, input.as_args()).is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().expect("hog");
    }
    eprintln!(
        "starved-host: {} of {} calls failed their 2 ms CPU deadline under {} spinning threads",
        failed.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed),
        cores * 8
    );
}

/// Calls timed per guest for the one-table comparison (fresh instance each).
const GUEST_CALLS: usize = 2_000;
/// Cached loads timed per guest.
const GUEST_LOADS: usize = 20;

/// One fixture's recorded call, with its order widened to [`LINES`] lines (same category and
/// brand, so the decision keeps its shape).
fn fixture_call(path: &str) -> model::CallInput {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&file).expect("fixture");
    let value: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let mut call: model::CallInput =
        serde_json::from_value(value["call"].clone()).expect("fixture call");
    if let HookInput::PointsBonus { order, .. } = &mut call.input {
        let category = order.lines[0].category.clone();
        order.lines = lines(&category);
        order.lines.iter_mut().for_each(|l| l.excluded = false);
        order.total_cents = total(&order.lines);
        order.base_points = order.total_cents / 100;
    }
    call
}

fn median_and_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

/// Rust, JavaScript and Python guests on one table: component size, compile, cached load,
/// first call, fresh-call median and p99 over [`GUEST_CALLS`] calls, fuel. Timed with a plain
/// loop (criterion gives no p99); printed as Markdown to stderr.
/// Runs only when no filter is given or the filter names it (`cargo bench … -- guests`): it
/// is a plain loop, which criterion's filter does not reach.
#[allow(unsafe_code)]
fn guests(_c: &mut Criterion) {
    use std::time::Instant;
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a != "bench");
    if filter.is_some_and(|f| !"guests".contains(f.as_str())) {
        return;
    }
    // `BENCH_KEEP_RESIDENT_MIB`: linear memory kept resident between calls (pool-wide), to
    // compare the default with one that covers a 12–18 MB guest's touched heap.
    let keep_mib = std::env::var("BENCH_KEEP_RESIDENT_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let (rt, _dir) = runtime(|c| {
        if let Some(mib) = keep_mib {
            c.memory_keep_resident_bytes = mib << 20;
        }
    });
    eprintln!(
        "memory kept resident: {} MiB",
        keep_mib.map_or("default (2)".to_string(), |m| m.to_string())
    );
    let cases = [
        (
            "Rust",
            "coffee-bonus",
            model::CallInput {
                invocation: invocation("coffee"),
                config: model::Config::new(),
                input: HookInput::PointsBonus {
                    member: member(),
                    order: order("coffee", "coffee"),
                },
            },
        ),
        (
            "JavaScript",
            "restaurant-weekend",
            fixture_call("plugins/js/restaurant-weekend/fixtures/saturday-triples.json"),
        ),
        (
            "Python",
            "cinema-popcorn",
            fixture_call("plugins/python/cinema-popcorn/fixtures/list-diner-sees-popcorn.json"),
        ),
    ];
    eprintln!("| guest | plugin / hook | component | compile | cached load (median) | first call | fresh call median | p99 | fuel |");
    eprintln!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (language, name, call) in cases {
        let bytes = read(name, "wasm");
        let started = Instant::now();
        wasmtime::component::Component::new(rt.engine(), &bytes).expect("compiles");
        let compile = started.elapsed();
        let plugin = load(&rt, name);
        let artifact = rt
            .artifact_path(plugin.component_sha256())
            .expect("artifact dir configured");
        let loads: Vec<Duration> = (0..GUEST_LOADS)
            .map(|_| {
                let started = Instant::now();
                // SAFETY: the artifact was written by this runtime for this engine.
                unsafe { wasmtime::component::Component::deserialize_file(rt.engine(), &artifact) }
                    .expect("maps");
                started.elapsed()
            })
            .collect();
        let ctx = CallContext {
            invocation: call.invocation.clone(),
            config: call.config.clone(),
        };
        let args = call.input.as_args();
        let started = Instant::now();
        let first = plugin.call(&ctx, args).expect("guest call succeeds");
        let first_call = started.elapsed();
        let calls: Vec<Duration> = (0..GUEST_CALLS)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(plugin.call(&ctx, args).expect("call"));
                started.elapsed()
            })
            .collect();
        let (median, p99) = median_and_p99(calls);
        let (load_median, _) = median_and_p99(loads);
        eprintln!(
            "| {language} | {name} / {} | {:.1} MB | {:.2} s | {:.2} ms | {:.2} ms | {:.0} µs | {:.0} µs | {} |",
            call.input.hook(),
            bytes.len() as f64 / 1e6,
            compile.as_secs_f64(),
            load_median.as_secs_f64() * 1e3,
            first_call.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            first.receipt.fuel_used,
        );
    }
}

fn config() -> Criterion {
    // Short runs: the machine is shared; medians are stable well before criterion's defaults.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = hooks, pool, receipt, load_times, starved_host, guests
}
/// The calls whose instructions callgrind counts (`--toggle-collect=*counted_calls*`).
#[inline(never)]
fn counted_calls(
    plugin: &LoadedPlugin,
    ctx: &CallContext,
    args: coalition_runtime::HookArgs<'_>,
    calls: usize,
) {
    for _ in 0..calls {
        std::hint::black_box(plugin.call(ctx, args).expect("call"));
    }
}

/// `BENCH_COUNT=plugin/hook:calls`: makes one untimed call of that case, then `calls` more
/// inside [`counted_calls`], and exits. Run under callgrind to count instructions per call,
/// which this machine's 2× speed drift does not move:
///
/// ```text
/// BENCH_COUNT=coffee-bonus/settle:1000 valgrind --tool=callgrind --toggle-collect='*counted_calls*' \
///     --callgrind-out-file=/dev/null target/release/deps/hooks-<hash>
/// ```
fn count_mode(spec: &str) {
    let (case_name, calls) = spec.split_once(':').unwrap_or((spec, "1000"));
    let calls: usize = calls.parse().expect("BENCH_COUNT calls is a number");
    let case = cases()
        .into_iter()
        .find(|c| format!("{}/{}", c.plugin, c.hook) == case_name)
        .unwrap_or_else(|| panic!("no case {case_name}"));
    // One pool slot: valgrind cannot reserve the address space of the default pool.
    let (rt, _dir) = runtime(|c| c.max_concurrent_calls = 1);
    let plugin = load(&rt, case.plugin);
    let ctx = CallContext::new(case.invocation.clone());
    let args = case.input.as_args();
    plugin.call(&ctx, args).expect("warm-up call");
    counted_calls(&plugin, &ctx, args, calls);
    eprintln!("{case_name}: {calls} calls counted");
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_COUNT") {
        count_mode(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
