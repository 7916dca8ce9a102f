//! A loaded plugin and its hook calls: a fresh store and instance per call, limits, failure
//! classification, validation, receipts, breaker accounting and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, WasmBacktrace};

use crate::bindings::{GuestError, Projection};
use crate::breaker::{Admission, Breaker, BreakerState, Transition};
use crate::cache::{ArtifactSource, Compiled};
use crate::deadline::CallClock;
use crate::engine::{Share, SleepRefused, SlotGuard, SHADOW_STACK_OVERFLOW_FRAMES};
use crate::error::{ErrorKind, Operation, PluginError, TrapKind};
use crate::limits::{Limits, MAX_INPUT_BYTES, MAX_OUTPUT_BYTES};
use crate::manifest::Manifest;
use crate::metrics::{self, HookMetrics};
use crate::model::{
    Bonus, CallInput, Cart, Config, Coupon, CouponDecision, Hook, HookFailure, HookInput,
    HookOutput, Invocation, LogLine, MemberContext, Order, Perk, PluginInfo, RedeemDecision,
    RedeemRequest, SettleEvent, SettlementLine,
};
use crate::receipt::{sha256_hex, Receipt, ReplayReport};
use crate::runtime::RuntimeInner;
use crate::sandbox::{self, CallLimiter, CallSite, CallState, HostCtx};
use crate::validate::{self, Violation};

/// Per-call context besides the hook's own arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// Time, offset, seed and brand of the call.
    pub invocation: Invocation,
    /// Admin-set config values of this plugin (defaults from the manifest are applied).
    pub config: Config,
}

impl CallContext {
    /// A context without admin config.
    pub fn new(invocation: Invocation) -> Self {
        CallContext {
            invocation,
            config: Config::new(),
        }
    }
}

/// A validated decision with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    /// The decision, already checked against every invariant.
    pub value: T,
    /// What ran; store it with whatever the host commits.
    pub receipt: Receipt,
    /// Log lines the plugin wrote (within the per-call budget).
    pub logs: Vec<LogLine>,
}

/// The arguments of one hook call, borrowed. Serializes exactly like [`HookInput`].
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookArgs<'a> {
    /// `points-bonus(member, order)`.
    PointsBonus {
        /// The member.
        member: &'a MemberContext,
        /// The purchase.
        order: &'a Order,
    },
    /// `list-perks(member)`.
    ListPerks {
        /// The member.
        member: &'a MemberContext,
    },
    /// `redeem-perk(member, request)`.
    RedeemPerk {
        /// The member.
        member: &'a MemberContext,
        /// The redemption.
        request: &'a RedeemRequest,
    },
    /// `apply-coupon(coupon, cart)`.
    ApplyCoupon {
        /// The coupon.
        coupon: &'a Coupon,
        /// The cart.
        cart: &'a Cart,
    },
    /// `settle(event)`.
    Settle {
        /// The event.
        event: &'a SettleEvent,
    },
}

impl HookArgs<'_> {
    /// The hook these arguments are for.
    pub fn hook(&self) -> Hook {
        match self {
            HookArgs::PointsBonus { .. } => Hook::PointsBonus,
            HookArgs::ListPerks { .. } => Hook::ListPerks,
            HookArgs::RedeemPerk { .. } => Hook::RedeemPerk,
            HookArgs::ApplyCoupon { .. } => Hook::ApplyCoupon,
            HookArgs::Settle { .. } => Hook::Settle,
        }
    }
}

impl HookInput {
    /// Borrows the arguments for a call.
    pub fn as_args(&self) -> HookArgs<'_> {
        match self {
            HookInput::PointsBonus { member, order } => HookArgs::PointsBonus { member, order },
            HookInput::ListPerks { member } => HookArgs::ListPerks { member },
            HookInput::RedeemPerk { member, request } => HookArgs::RedeemPerk { member, request },
            HookInput::ApplyCoupon { coupon, cart } => HookArgs::ApplyCoupon { coupon, cart },
            HookInput::Settle { event } => HookArgs::Settle { event },
        }
    }
}

/// Borrowed twin of [`CallInput`], serialized into receipts.
#[derive(Serialize)]
struct CallInputRef<'a> {
    invocation: &'a Invocation,
    config: &'a Config,
    input: HookArgs<'a>,
}

/// A plugin version, loaded and checked, ready to call. Cheap to clone, `Send + Sync`.
///
/// Every hook method is synchronous and CPU-bound (typically 20–60 µs, at most the manifest's
/// deadline): from async code call it inside `tokio::task::spawn_blocking`.
#[derive(Clone)]
pub struct LoadedPlugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    runtime: Arc<RuntimeInner>,
    manifest: Manifest,
    info: PluginInfo,
    compiled: Arc<Compiled>,
    component_sha256: String,
    artifact_source: ArtifactSource,
    breaker: Arc<Breaker>,
    share: Arc<Share>,
    name: Arc<str>,
    version: Arc<str>,
    metrics: BTreeMap<Hook, HookMetrics>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.inner.manifest.name)
            .field("version", &self.inner.manifest.version)
            .field("component_sha256", &self.inner.component_sha256)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A production call: breaker accounting applies.
    Live,
    /// A replay: outside the breaker, so audits cannot trip production.
    Replay,
    /// A retry of a call that failed before: admitted by [`Breaker::admit_retry`], so it
    /// neither opens nor keeps open the breaker for other calls.
    Retry,
}

struct Executed {
    output: HookOutput,
    receipt: Receipt,
    logs: Vec<LogLine>,
}

pub(crate) fn call_site(plugin: &str, version: &str, operation: &'static str) -> CallSite {
    CallSite {
        plugin: plugin.into(),
        version: version.into(),
        operation,
    }
}

/// Fuel a store gets beyond the call's budget. Wasmtime checks fuel only at function entries and
/// loop headers, so a guest can run past zero between two checks and return; the store would
/// then report 0 left and the receipt the budget instead of what really ran. With this margin
/// the count stays exact, and the host itself refuses a call that ended over its budget
/// (`fuel_exhausted`), so the budget still holds to the instruction. Any margin keeps that
/// rule; a larger one only keeps the count exact for longer check-free runs, and costs a
/// looping guest that many instructions more before it traps.
pub(crate) const FUEL_OVERRUN_MARGIN: u64 = 1 << 16;

/// A fresh store for one call, with fuel, deadline, memory caps and (if needed) WASI.
pub(crate) fn new_store(
    runtime: &RuntimeInner,
    compiled: &Compiled,
    site: CallSite,
    config: Config,
    limits: Limits,
    invocation: &Invocation,
) -> Result<Store<CallState>, ErrorKind> {
    let state = CallState {
        host: HostCtx::new(site, config),
        limiter: CallLimiter::new(limits.memory_bytes()),
        wasi: compiled
            .wasi
            .then(|| sandbox::deterministic_wasi(invocation)),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limiter);
    store
        .set_fuel(limits.fuel.saturating_add(FUEL_OVERRUN_MARGIN))
        .map_err(|e| ErrorKind::Trap(TrapKind::Other(format!("setting fuel: {e}"))))?;
    let clock = CallClock::start(limits.deadline_ms);
    store.set_epoch_deadline(clock.first_ticks());
    store.epoch_deadline_callback(move |_| Ok(clock.check()));
    Ok(store)
}

/// Fuel the call consumed, exact unless it also ran through [`FUEL_OVERRUN_MARGIN`] (then it
/// trapped, and the count is the budget plus the margin).
pub(crate) fn fuel_used(store: &Store<CallState>, limits: &Limits) -> u64 {
    let given = limits.fuel.saturating_add(FUEL_OVERRUN_MARGIN);
    given.saturating_sub(store.get_fuel().unwrap_or(0))
}

/// True when the trap happened [`SHADOW_STACK_OVERFLOW_FRAMES`] or more frames deep.
fn is_deep(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<WasmBacktrace>()
        .is_some_and(|bt| bt.frames().len() >= SHADOW_STACK_OVERFLOW_FRAMES)
}

/// Names what stopped the guest.
pub(crate) fn classify(err: &wasmtime::Error, state: &CallState, limits: &Limits) -> ErrorKind {
    if state.limiter.memory_denied {
        return ErrorKind::MemoryLimit {
            memory_mib: limits.memory_mib,
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => ErrorKind::FuelExhausted { fuel: limits.fuel },
            Trap::Interrupt => ErrorKind::Deadline {
                deadline_ms: limits.deadline_ms,
            },
            Trap::StackOverflow => ErrorKind::Trap(TrapKind::StackOverflow),
            Trap::UnreachableCodeReached => ErrorKind::Trap(TrapKind::Unreachable),
            Trap::MemoryOutOfBounds if is_deep(err) => ErrorKind::Trap(TrapKind::StackOverflow),
            Trap::MemoryOutOfBounds => ErrorKind::Trap(TrapKind::MemoryOutOfBounds),
            Trap::IntegerOverflow | Trap::IntegerDivisionByZero | Trap::BadConversionToInteger => {
                ErrorKind::Trap(TrapKind::Arithmetic)
            }
            other => ErrorKind::Trap(TrapKind::Other(other.to_string())),
        };
    }
    if err.downcast_ref::<SleepRefused>().is_some() {
        return ErrorKind::Trap(TrapKind::Other(SleepRefused.to_string()));
    }
    // Not a trap: a malformed value crossing the boundary (bad UTF-8, out-of-bounds list).
    ErrorKind::Trap(TrapKind::Other(err.root_cause().to_string()))
}

impl LoadedPlugin {
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        manifest: Manifest,
        info: PluginInfo,
        compiled: Arc<Compiled>,
        component_sha256: String,
        artifact_source: ArtifactSource,
        (breaker, share): (Arc<Breaker>, Arc<Share>),
    ) -> LoadedPlugin {
        let metrics = Hook::ALL
            .into_iter()
            .map(|hook| {
                (
                    hook,
                    HookMetrics::register(&manifest.name, &manifest.version, hook),
                )
            })
            .collect();
        LoadedPlugin {
            inner: Arc::new(PluginInner {
                runtime,
                name: manifest.name.as_str().into(),
                version: manifest.version.as_str().into(),
                manifest,
                info,
                compiled,
                component_sha256,
                artifact_source,
                breaker,
                share,
                metrics,
            }),
        }
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.inner.manifest.name
    }

    /// Plugin version.
    pub fn version(&self) -> &str {
        &self.inner.manifest.version
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// What `describe` returned at load.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Calls of `hook` that ran guest code through this loaded version since it was loaded
    /// (replays and dry runs included).
    pub fn calls_run(&self, hook: Hook) -> u64 {
        self.hook_metrics(hook)
            .map_or(0, |m| m.ran.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Holds one place of this plugin's share of the instance slots, as a running call does,
    /// until the guard is dropped; `None` when the share is full. For tests and benchmarks
    /// that need the share occupied without racing real calls.
    #[doc(hidden)]
    pub fn hold_call_share(&self) -> Option<SlotGuard<'_>> {
        self.inner.share.acquire(std::time::Duration::ZERO).ok()
    }

    /// True when the plugin implements `hook` (per `describe`).
    pub fn implements(&self, hook: Hook) -> bool {
        self.inner.info.hooks.contains(&hook)
    }

    /// sha256 (hex) of the component bytes.
    pub fn component_sha256(&self) -> &str {
        &self.inner.component_sha256
    }

    /// Where its machine code came from at load.
    pub fn artifact_source(&self) -> ArtifactSource {
        self.inner.artifact_source
    }

    /// True when the component imports WASI (and runs with the deterministic WASI context).
    pub fn uses_wasi(&self) -> bool {
        self.inner.compiled.wasi
    }

    /// The component's imports (the capabilities it may use) and exports, by name.
    pub fn surface(&self) -> &crate::cache::Surface {
        &self.inner.compiled.surface
    }

    /// The circuit breaker state of this plugin version.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Bonus points for a purchase. Fails closed.
    pub fn points_bonus(
        &self,
        ctx: &CallContext,
        member: &MemberContext,
        order: &Order,
    ) -> Result<Decision<Vec<Bonus>>, PluginError> {
        let decision = self.call(ctx, HookArgs::PointsBonus { member, order })?;
        self.expect(decision, |o| match o {
            HookOutput::PointsBonus(v) => Ok(v),
            other => Err(other.hook()),
        })
    }

    /// Perks this member may see now. For several plugins, [`crate::list_perks_all`] fails open.
    pub fn list_perks(
        &self,
        ctx: &CallContext,
        member: &MemberContext,
    ) -> Result<Decision<Vec<Perk>>, PluginError> {
        let decision = self.call(ctx, HookArgs::ListPerks { member })?;
        self.expect(decision, |o| match o {
            HookOutput::ListPerks(v) => Ok(v),
            other => Err(other.hook()),
        })
    }

    /// Validates a redemption. Fails closed: on error nothing may be redeemed.
    pub fn redeem_perk(
        &self,
        ctx: &CallContext,
        member: &MemberContext,
        request: &RedeemRequest,
    ) -> Result<Decision<RedeemDecision>, PluginError> {
        let decision = self.call(ctx, HookArgs::RedeemPerk { member, request })?;
        self.expect(decision, |o| match o {
            HookOutput::RedeemPerk(v) => Ok(v),
            other => Err(other.hook()),
        })
    }

    /// Applies a coupon to a cart. Fails closed: on error the coupon is not applied.
    pub fn apply_coupon(
        &self,
        ctx: &CallContext,
        coupon: &Coupon,
        cart: &Cart,
    ) -> Result<Decision<CouponDecision>, PluginError> {
        let decision = self.call(ctx, HookArgs::ApplyCoupon { coupon, cart })?;
        self.expect(decision, |o| match o {
            HookOutput::ApplyCoupon(v) => Ok(v),
            other => Err(other.hook()),
        })
    }

    /// Settlement lines for an event. Fails closed: on error nothing is settled.
    pub fn settle(
        &self,
        ctx: &CallContext,
        event: &SettleEvent,
    ) -> Result<Decision<Vec<SettlementLine>>, PluginError> {
        let decision = self.call(ctx, HookArgs::Settle { event })?;
        self.expect(decision, |o| match o {
            HookOutput::Settle(v) => Ok(v),
            other => Err(other.hook()),
        })
    }

    /// Settlement lines for an event this plugin failed on before (a parked event): the call
    /// runs under the breaker's retry rule ([`crate::breaker`]): refused with `CircuitOpen`
    /// while the breaker is open or its probe is in flight, and its failure never opens or
    /// keeps open the breaker for other calls.
    pub fn settle_retry(
        &self,
        ctx: &CallContext,
        event: &SettleEvent,
    ) -> Result<Decision<Vec<SettlementLine>>, PluginError> {
        let executed = self.execute(
            &ctx.invocation,
            &ctx.config,
            HookArgs::Settle { event },
            Mode::Retry,
        )?;
        self.expect(
            Decision {
                value: executed.output,
                receipt: executed.receipt,
                logs: executed.logs,
            },
            |o| match o {
                HookOutput::Settle(v) => Ok(v),
                other => Err(other.hook()),
            },
        )
    }

    /// Calls any hook with borrowed arguments.
    pub fn call(
        &self,
        ctx: &CallContext,
        args: HookArgs<'_>,
    ) -> Result<Decision<HookOutput>, PluginError> {
        let executed = self.execute(&ctx.invocation, &ctx.config, args, Mode::Live)?;
        Ok(Decision {
            value: executed.output,
            receipt: executed.receipt,
            logs: executed.logs,
        })
    }

    /// Runs a receipt's input again (outside the breaker) and compares the output hash.
    pub fn replay(&self, receipt: &Receipt) -> Result<ReplayReport, PluginError> {
        let reject = |reason: String| self.error(receipt.hook, ErrorKind::InputRejected(reason));
        if receipt.plugin != self.name()
            || receipt.version != self.version()
            || receipt.component_sha256 != self.component_sha256()
        {
            return Err(reject(format!(
                "receipt is for {}@{} (component {}), this is {}@{} (component {})",
                receipt.plugin,
                receipt.version,
                receipt.component_sha256,
                self.name(),
                self.version(),
                self.component_sha256()
            )));
        }
        if !receipt.input_is_intact() {
            return Err(reject(
                "receipt input does not match its input_sha256".into(),
            ));
        }
        let recorded: CallInput = receipt
            .call_input()
            .map_err(|e| reject(format!("receipt input does not parse: {e}")))?;
        if recorded.input.hook() != receipt.hook {
            return Err(reject("receipt hook does not match its input".into()));
        }
        let executed = self.execute(
            &recorded.invocation,
            &recorded.config,
            recorded.input.as_args(),
            Mode::Replay,
        )?;
        Ok(ReplayReport {
            matches: executed.receipt.output_sha256 == receipt.output_sha256,
            recorded_output_sha256: receipt.output_sha256.clone(),
            replayed_output_sha256: executed.receipt.output_sha256,
            recorded_fuel_used: receipt.fuel_used,
            replayed_fuel_used: executed.receipt.fuel_used,
            output: executed.output,
        })
    }

    fn expect<T>(
        &self,
        decision: Decision<HookOutput>,
        pick: impl FnOnce(HookOutput) -> Result<T, Hook>,
    ) -> Result<Decision<T>, PluginError> {
        let hook = decision.receipt.hook;
        let Decision {
            value,
            receipt,
            logs,
        } = decision;
        match pick(value) {
            Ok(value) => Ok(Decision {
                value,
                receipt,
                logs,
            }),
            // The bindings always answer with the hook called; this only guards that.
            Err(other) => Err(self.error(
                hook,
                ErrorKind::InvariantViolation(format!("a {other} decision answers a {hook} call")),
            )),
        }
    }

    fn error(&self, hook: Hook, kind: ErrorKind) -> PluginError {
        PluginError {
            plugin: self.inner.manifest.name.clone(),
            version: self.inner.manifest.version.clone(),
            operation: Operation::Hook(hook),
            kind,
            fuel_used: None,
        }
    }

    fn hook_metrics(&self, hook: Hook) -> Option<&HookMetrics> {
        self.inner.metrics.get(&hook)
    }

    /// Counts a failure and turns it into an attributed error.
    fn fail(&self, hook: Hook, kind: ErrorKind) -> PluginError {
        metrics::failure(self.name(), self.version(), hook, kind.code());
        tracing::debug!(plugin = self.name(), version = self.version(), hook = hook.as_str(), error = %kind, "plugin call failed");
        self.error(hook, kind)
    }

    fn execute(
        &self,
        invocation: &Invocation,
        admin_config: &Config,
        args: HookArgs<'_>,
        mode: Mode,
    ) -> Result<Executed, PluginError> {
        let started = Instant::now();
        let hook = args.hook();
        if !self.implements(hook) {
            return Err(self.fail(hook, ErrorKind::NotImplemented));
        }
        let config = self
            .inner
            .manifest
            .effective_config(admin_config)
            .map_err(|reason| self.fail(hook, ErrorKind::InputRejected(reason)))?;
        // What the component's WIT version knows, and nothing more: that is what it receives
        // and what its receipt records.
        let manifest = &self.inner.manifest;
        let projection = Projection::new(
            manifest.wit,
            &manifest.name,
            &manifest.brands,
            invocation,
            &args,
        )
        .map_err(|reason| self.fail(hook, ErrorKind::InputRejected(reason)))?;
        let (invocation, args) = projection.apply(invocation, args);
        let input = canonical_json(&CallInputRef {
            invocation,
            config: &config,
            input: args,
        })
        .map_err(|e| {
            self.fail(
                hook,
                ErrorKind::InputRejected(format!("serializing input: {e}")),
            )
        })?;
        if input.len() > MAX_INPUT_BYTES {
            return Err(self.fail(
                hook,
                ErrorKind::InputRejected(format!(
                    "input is {} bytes, more than {MAX_INPUT_BYTES}",
                    input.len()
                )),
            ));
        }

        let admission = match mode {
            Mode::Replay => Admission::Unmetered,
            Mode::Live | Mode::Retry => {
                let admitted = if mode == Mode::Live {
                    self.inner.breaker.admit()
                } else {
                    self.inner.breaker.admit_retry()
                };
                match admitted {
                    Ok(admission) => admission,
                    Err(retry_after) => {
                        return Err(self.fail(
                            hook,
                            ErrorKind::CircuitOpen {
                                retry_after_ms: retry_after.as_millis() as u64,
                            },
                        ))
                    }
                }
            }
        };
        if matches!(admission, Admission::Probe | Admission::RetryProbe) {
            metrics::breaker_state(self.name(), self.version(), BreakerState::HalfOpen);
        }
        if let Some(m) = self.hook_metrics(hook) {
            m.calls.increment(1);
        }

        let limits = self.inner.manifest.limits_for(hook);
        let outcome = self.run(invocation, config, limits, &args);
        let duration = started.elapsed();
        if let Some(m) = self.hook_metrics(hook) {
            m.duration.record(duration.as_secs_f64());
        }

        // A failure that ran guest code reports the fuel it burnt, as a receipt would.
        let ran_fuel = outcome
            .as_ref()
            .ok()
            .and_then(|ran| std::num::NonZeroU64::new(ran.fuel_used));
        let result = outcome.and_then(|ran| {
            if let Some(m) = self.hook_metrics(hook) {
                m.fuel.record(ran.fuel_used as f64);
                if ran.logs_dropped > 0 {
                    m.logs_dropped.increment(u64::from(ran.logs_dropped));
                }
            }
            let output = ran.output?;
            validate::check(&output, &args, invocation, &self.inner.manifest.brands).map_err(
                |v| match v {
                    Violation::TooLarge(detail) => ErrorKind::OutputTooLarge(detail),
                    Violation::Invariant(detail) => ErrorKind::InvariantViolation(detail),
                },
            )?;
            let output_json = canonical_json(&output).map_err(|e| {
                ErrorKind::InvariantViolation(format!("decision does not serialize: {e}"))
            })?;
            if output_json.len() > MAX_OUTPUT_BYTES {
                return Err(ErrorKind::OutputTooLarge(format!(
                    "decision is {} bytes, more than {MAX_OUTPUT_BYTES}",
                    output_json.len()
                )));
            }
            Ok(Executed {
                receipt: Receipt {
                    plugin: self.name().to_string(),
                    version: self.version().to_string(),
                    hook,
                    component_sha256: self.component_sha256().to_string(),
                    input_sha256: sha256_hex(input.as_bytes()),
                    output_sha256: sha256_hex(output_json.as_bytes()),
                    fuel_used: ran.fuel_used,
                    peak_memory_bytes: ran.peak_memory_bytes,
                    duration_us: started.elapsed().as_micros() as u64,
                    logs_dropped: ran.logs_dropped,
                    input,
                },
                output,
                logs: ran.logs,
            })
        });

        let fault = match &result {
            Ok(_) => Some(false),
            Err(kind) if kind.is_plugin_fault() => Some(true),
            Err(_) => None,
        };
        match self.inner.breaker.record(admission, fault) {
            Transition::Tripped => {
                tracing::warn!(
                    plugin = self.name(),
                    version = self.version(),
                    hook = hook.as_str(),
                    cool_down_ms = self.inner.runtime.config.breaker.cool_down.as_millis() as u64,
                    "circuit breaker opened after repeated plugin failures"
                );
                metrics::breaker_tripped(self.name(), self.version(), hook);
                metrics::breaker_state(self.name(), self.version(), BreakerState::Open);
            }
            Transition::Recovered => {
                tracing::info!(
                    plugin = self.name(),
                    version = self.version(),
                    hook = hook.as_str(),
                    "circuit breaker closed after a successful probe"
                );
                metrics::breaker_state(self.name(), self.version(), BreakerState::Closed);
            }
            Transition::None => {}
        }
        result.map_err(|kind| PluginError {
            fuel_used: ran_fuel,
            ..self.fail(hook, kind)
        })
    }

    /// Instantiates and calls: the only part that runs guest code.
    fn run(
        &self,
        invocation: &Invocation,
        config: Config,
        limits: Limits,
        args: &HookArgs<'_>,
    ) -> Result<Ran, ErrorKind> {
        let runtime = &self.inner.runtime;
        // This plugin's share first: a plugin that already runs its share (one spinning to its
        // deadline, say) queues here, not for the slots the other plugins need.
        let _share = self
            .inner
            .share
            .acquire(runtime.config.slot_wait)
            .map_err(|waited| ErrorKind::Saturated {
                limit: self.inner.share.limit(),
                waited_ms: waited.as_millis() as u64,
            })?;
        // The slot is held until the store is dropped, so the pool never runs out.
        let _slot = runtime
            .slots
            .acquire(runtime.config.slot_wait)
            .map_err(|waited| ErrorKind::Overloaded {
                waited_ms: waited.as_millis() as u64,
            })?;
        let site = CallSite {
            plugin: self.inner.name.clone(),
            version: self.inner.version.clone(),
            operation: args.hook().as_str(),
        };
        let mut store = new_store(
            runtime,
            &self.inner.compiled,
            site,
            config,
            limits,
            invocation,
        )?;
        if let Some(m) = self.hook_metrics(args.hook()) {
            m.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let result = self.inner.compiled.pre.call(&mut store, invocation, args);
        let fuel_used = fuel_used(&store, &limits);
        let output = match result {
            // Ran past its budget between two of wasmtime's fuel checks: over budget all the
            // same, whatever it answered.
            Ok(_) if fuel_used > limits.fuel => Err(ErrorKind::FuelExhausted { fuel: limits.fuel }),
            Ok(Ok(output)) => Ok(output),
            Ok(Err(GuestError::NotImplemented)) => Err(ErrorKind::NotImplemented),
            Ok(Err(GuestError::Failure(failure))) => Err(ErrorKind::HookError(bounded(failure))),
            Err(e) => Err(classify(&e, store.data(), &limits)),
        };
        let state = store.into_data();
        Ok(Ran {
            output,
            fuel_used,
            peak_memory_bytes: u64::try_from(state.limiter.peak_memory_bytes).unwrap_or(u64::MAX),
            logs: state.host.logs,
            logs_dropped: state.host.logs_dropped,
        })
    }
}

struct Ran {
    output: Result<HookOutput, ErrorKind>,
    fuel_used: u64,
    peak_memory_bytes: u64,
    logs: Vec<LogLine>,
    logs_dropped: u32,
}

/// Initial buffer for canonical JSON: a 20-line order serializes to ~3.5 KiB, so most inputs
/// are written without regrowing the buffer.
const JSON_BUFFER_BYTES: usize = 4096;

/// The canonical serialization hashed into receipts: serde_json over the model's field order.
fn canonical_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut buffer = Vec::with_capacity(JSON_BUFFER_BYTES);
    serde_json::to_writer(&mut buffer, value)?;
    // serde_json writes UTF-8 only; the check keeps this free of `unsafe`.
    String::from_utf8(buffer).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Longest plugin error reason kept, bytes: it ends up in logs and API responses.
const MAX_HOOK_ERROR_BYTES: usize = 200;

fn bounded(failure: HookFailure) -> HookFailure {
    let cut = |mut s: String| {
        if s.len() > MAX_HOOK_ERROR_BYTES {
            let mut end = MAX_HOOK_ERROR_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        s
    };
    match failure {
        HookFailure::InvalidInput(reason) => HookFailure::InvalidInput(cut(reason)),
        HookFailure::Failed(reason) => HookFailure::Failed(cut(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BrandSpend, OrderLine};

    #[test]
    fn borrowed_args_serialize_like_owned_input() {
        let member = MemberContext {
            member_ref: "m1".into(),
            tier: "gold".into(),
            tier_rank: 2,
            tags: vec!["coffee-lover".into()],
            birthday_month: Some(3),
            points_balance: 100,
            qualifying_spend_cents: 5000,
            spend: vec![BrandSpend {
                brand: "coffee".into(),
                spend_7d_cents: 1,
                spend_30d_cents: 2,
                visits_30d: 3,
            }],
            member_since_ms: 0,
            stored_value_cents: 0,
            pending_points: 0,
            membership: None,
        };
        let order = Order {
            order_id: "o".into(),
            brand: "coffee".into(),
            lines: vec![OrderLine {
                line_id: "l".into(),
                sku: "s".into(),
                category: "c".into(),
                quantity: 1,
                unit_price_cents: 100,
                excluded: false,
            }],
            total_cents: 100,
            paid_with_points_cents: 0,
            base_points: 1,
        };
        let owned = CallInput {
            invocation: Invocation {
                now_ms: 5,
                utc_offset_minutes: 480,
                seed: u64::MAX,
                brand: "coffee".into(),
                budgets: Vec::new(),
            },
            config: Config::from([("k".to_string(), "v".to_string())]),
            input: HookInput::PointsBonus { member, order },
        };
        let borrowed = CallInputRef {
            invocation: &owned.invocation,
            config: &owned.config,
            input: owned.input.as_args(),
        };
        let a = serde_json::to_string(&owned).expect("owned");
        let b = serde_json::to_string(&borrowed).expect("borrowed");
        assert_eq!(a, b);
        let back: CallInput = serde_json::from_str(&b).expect("parses back");
        assert_eq!(back, owned, "u64 seeds and options survive the round trip");
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<LoadedPlugin>();
        send_sync::<crate::Runtime>();
        send_sync::<Decision<Vec<Perk>>>();
        send_sync::<PluginError>();
    }

    #[test]
    fn hook_error_reasons_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(300);
        match bounded(HookFailure::Failed(long)) {
            HookFailure::Failed(s) => assert!(s.len() <= MAX_HOOK_ERROR_BYTES + '…'.len_utf8()),
            other => panic!("{other:?}"),
        }
    }
}
