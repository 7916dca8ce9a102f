//! Partner plugins inside the host: which versions are installed and active, the member context
//! they see, and the hook calls the API makes, with a receipt stored beside every decision that
//! moves points or money.
//!
//! Failure policy, per hook:
//! - `list-perks` fails open: a broken plugin's perks are left out, the others are shown, and
//!   the response says which plugins were unavailable;
//! - `points-bonus` fails open *for the purchase*: the counter is never blocked by a broken
//!   bonus plugin; the purchase earns its base points, the failure is logged and counted, and
//!   no receipt is stored for the failed call (every successful call, even one proposing no
//!   bonus, keeps its receipt: those are the inputs dry runs replay);
//! - `redeem-perk`, `apply-coupon` and `settle` fail closed (nothing is committed).
//!
//! # Layout
//! - [`registry`]: installed versions and their components in the database; loading the active set.
//! - [`context`]: the pseudonymous member context built for plugins.
//! - [`receipts`]: storing and replaying receipts.
//! - [`signing`]: package content hashes and ed25519 signatures.
//! - [`lifecycle`]: signed uploads, co-signatures, review states, deploy, canary, rollback,
//!   kill switch, all recorded in the audit log.
//! - [`dryrun`]: dry runs of a candidate against recorded inputs, and shadow runs.
//! - [`sync`]: telling every node that what serves has changed (LISTEN/NOTIFY plus polling).

pub mod context;
pub mod dryrun;
pub mod lifecycle;
pub mod receipts;
pub mod registry;
pub mod signing;
pub mod sync;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use coalition_runtime::model::{self, Bonus, Hook, Invocation, MemberContext, Order};
use coalition_runtime::{
    Decision, LoadedPlugin, PerkListing, PluginError, Runtime, RuntimeConfig, WitVersion,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::purchases::SkippedDecision;
use crate::foundation::error::DomainResult;

/// Plugin settings of the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Where precompiled artifacts are cached; empty means `<data_dir>/artifacts`.
    pub artifact_dir: PathBuf,
    /// Plugin calls that may run at once on this node (instance pool slots).
    pub max_concurrent_calls: u32,
    /// Calls of one plugin (all its versions) that may run at once on this node; more fail
    /// open at once with `saturated`. 0 means half of `max_concurrent_calls`: a plugin that
    /// spins to its deadline on every call then leaves the other half to the other brands.
    pub max_concurrent_calls_per_plugin: u32,
    /// How long the background validation of an upload may compile before the version is
    /// rejected with `compile_timeout` (which the uploader may retry). A JavaScript or Python
    /// guest of 12–18 MB compiles in 14–16 s on a 2-core machine with an optimised compiler;
    /// the default leaves 8× for a loaded node, and the bound keeps a hostile component from
    /// holding a compile thread for ever.
    pub validation_budget_ms: u64,
    /// How long `POST /plugins` waits for the validation before it answers `202 Accepted` with
    /// the version still `uploaded` (a `Prefer: wait=N` header asks for another wait, within
    /// the request timeout). Small guests validate well within it and answer `201` with the
    /// outcome.
    pub upload_wait_ms: u64,
}

/// Longest accepted validation budget: a compile that needs more than ten minutes is not a
/// plugin this host should run.
pub const MAX_VALIDATION_BUDGET_MS: u64 = 600_000;

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            artifact_dir: PathBuf::new(),
            max_concurrent_calls: 16,
            max_concurrent_calls_per_plugin: 0,
            validation_budget_ms: 120_000,
            upload_wait_ms: 5_000,
        }
    }
}

impl PluginsConfig {
    /// Refuses budgets that are zero or beyond [`MAX_VALIDATION_BUDGET_MS`].
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_VALIDATION_BUDGET_MS).contains(&self.validation_budget_ms) {
            anyhow::bail!(
                "plugins.validation_budget_ms must be 1..={MAX_VALIDATION_BUDGET_MS}, not {}",
                self.validation_budget_ms
            );
        }
        Ok(())
    }
}

/// One active plugin version with its effective configuration.
#[derive(Clone)]
pub struct ActivePlugin {
    /// Row id of the installed version.
    pub version_id: String,
    /// The loaded component.
    pub plugin: LoadedPlugin,
    /// Admin config merged over manifest defaults.
    pub config: model::Config,
    /// The brand that uploaded (and signed) it; `None` for the platform's own installs.
    pub uploaded_by_brand: Option<String>,
}

impl std::fmt::Debug for ActivePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivePlugin")
            .field("name", &self.plugin.name())
            .field("version", &self.plugin.version())
            .finish_non_exhaustive()
    }
}

impl ActivePlugin {
    /// Whether the plugin's **signed manifest** names `brand`. Every routing decision (bonuses,
    /// settlement, dry runs, shadows) asks this; what the component's `describe()` says is
    /// only checked against the manifest at load, never trusted for routing.
    pub fn involves(&self, brand: &str) -> bool {
        self.plugin.manifest().brands.iter().any(|b| b == brand)
    }

    /// Whether the plugin is `brand`'s own: uploaded by that brand, or installed by the platform
    /// and naming it. Only a brand's own plugins (or those an admin put in its settle
    /// precedence) govern the settlement of its events; a partner's plugin that merely names
    /// the brand does not.
    pub fn is_own_plugin_of(&self, brand: &str) -> bool {
        self.involves(brand)
            && self
                .uploaded_by_brand
                .as_deref()
                .is_none_or(|owner| owner == brand)
    }
}

/// What serves besides the active versions: canaries, killed plugins and shadows, by plugin
/// name. Replaced as a whole on reload, like the active set.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Canary version and the share of members it serves, in basis points (1/10000).
    pub canaries: HashMap<String, (ActivePlugin, u32)>,
    /// Plugins the kill switch has stopped: they serve nobody.
    pub killed: HashSet<String>,
    /// Versions run beside the serving one on live calls; their decisions are never applied.
    pub shadows: HashMap<String, ActivePlugin>,
}

/// The bucket of a member for a plugin's canary, 0..10000: stable per (plugin, member), and
/// independent between plugins so one member is not in every canary at once.
pub fn canary_bucket(plugin: &str, member_ref: &str) -> u32 {
    let digest = Sha256::digest(format!("canary\0{plugin}\0{member_ref}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % 10_000) as u32
}

/// The host's injected clock as the runtime's breaker clock, so that a breaker's cool-down
/// moves with the same time as everything else (tests move it instead of sleeping). It never
/// goes back: a wall clock stepped backwards holds the breaker's time still until it catches up.
#[derive(Debug)]
pub struct BreakerClock {
    clock: Arc<dyn crate::foundation::clock::Clock>,
    origin: std::time::Instant,
    origin_ms: i64,
    latest: std::sync::Mutex<std::time::Instant>,
}

impl BreakerClock {
    /// Starts at the clock's current time.
    pub fn new(clock: Arc<dyn crate::foundation::clock::Clock>) -> Self {
        let origin = std::time::Instant::now();
        Self {
            origin_ms: clock.now_ms(),
            clock,
            origin,
            latest: std::sync::Mutex::new(origin),
        }
    }
}

impl coalition_runtime::Clock for BreakerClock {
    fn now(&self) -> std::time::Instant {
        let elapsed = self.clock.now_ms().saturating_sub(self.origin_ms).max(0);
        let now = self
            .origin
            .checked_add(std::time::Duration::from_millis(elapsed.unsigned_abs()))
            .unwrap_or(self.origin);
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *latest = (*latest).max(now);
        *latest
    }
}

/// The plugin runtime plus the set of active versions; shared by all requests.
pub struct PluginHost {
    runtime: Runtime,
    active: RwLock<Arc<Vec<ActivePlugin>>>,
    routing: RwLock<Arc<Routing>>,
    /// Serialises reloads so an older snapshot never overwrites a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// The `plugin_generation` this node last loaded.
    generation: std::sync::atomic::AtomicI64,
    /// Components this node has compiled (its artifact cache holds them).
    warmed: RwLock<HashSet<String>>,
    config: PluginsConfig,
    utc_offset_minutes: i32,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("active", &self.active().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Starts the runtime (engine, instance pool, epoch ticker) with no plugin active yet.
    /// `utc_offset_minutes` is the programme's local time (plugins compute "Monday" and
    /// "birthday month" from it), the same offset the ledger uses for expiry.
    /// The runtime's circuit breakers read `clock` (see [`BreakerClock`]).
    pub fn new(
        config: PluginsConfig,
        data_dir: &std::path::Path,
        utc_offset_minutes: i64,
        clock: Arc<dyn crate::foundation::clock::Clock>,
    ) -> anyhow::Result<Self> {
        let artifact_dir = if config.artifact_dir.as_os_str().is_empty() {
            data_dir.join("artifacts")
        } else {
            config.artifact_dir.clone()
        };
        let runtime = Runtime::new(RuntimeConfig {
            artifact_dir: Some(artifact_dir),
            max_concurrent_calls: config.max_concurrent_calls,
            max_concurrent_calls_per_plugin: match config.max_concurrent_calls_per_plugin {
                0 => None,
                n => Some(n),
            },
            clock: Arc::new(BreakerClock::new(clock)),
            ..RuntimeConfig::default()
        })
        .map_err(|err| anyhow::anyhow!("cannot start the plugin runtime: {err}"))?;
        Ok(Self {
            runtime,
            active: RwLock::new(Arc::new(Vec::new())),
            routing: RwLock::new(Arc::new(Routing::default())),
            reload_lock: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicI64::new(-1),
            warmed: RwLock::new(HashSet::new()),
            config,
            utc_offset_minutes: i32::try_from(utc_offset_minutes)
                .map_err(|_| anyhow::anyhow!("utc_offset_minutes out of range"))?,
        })
    }

    /// The runtime, for loading.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Settings.
    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    /// A snapshot of the active plugins.
    pub fn active(&self) -> Arc<Vec<ActivePlugin>> {
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the active set (after install or reload).
    pub fn set_active(&self, plugins: Vec<ActivePlugin>) {
        *self
            .active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(plugins);
    }

    /// Canaries, kills and shadows.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces canaries, kills and shadows.
    pub fn set_routing(&self, routing: Routing) {
        *self
            .routing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routing);
    }

    /// The generation of the plugin tables this node last loaded (-1 before the first load).
    pub fn generation(&self) -> i64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the generation just loaded.
    pub fn set_generation(&self, generation: i64) {
        self.generation
            .store(generation, std::sync::atomic::Ordering::Release);
    }

    /// Whether this node has compiled the component with this sha256.
    pub fn is_warm(&self, component_sha256: &str) -> bool {
        self.warmed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(component_sha256)
    }

    /// Records that this node has compiled a component.
    pub fn mark_warm(&self, component_sha256: &str) {
        self.warmed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(component_sha256.to_owned());
    }

    /// Held while a reload reads the database and swaps the sets.
    pub async fn reload_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reload_lock.lock().await
    }

    /// The plugin versions that serve one member: per plugin, the active version, or the
    /// canary for the members whose [`canary_bucket`] falls within its share; never a killed
    /// plugin. Every member-facing hook call picks its plugins through here, keyed by the
    /// member's `member_ref`, so a member always sees one consistent version of each plugin.
    pub fn serving(&self, member_ref: &str) -> Vec<ActivePlugin> {
        let routing = self.routing();
        self.active()
            .iter()
            .filter(|p| !routing.killed.contains(p.plugin.name()))
            .map(|p| match routing.canaries.get(p.plugin.name()) {
                Some((canary, basis_points))
                    if canary_bucket(p.plugin.name(), member_ref) < *basis_points =>
                {
                    canary.clone()
                }
                _ => p.clone(),
            })
            .collect()
    }

    /// Every version loaded on this node (active, canary, shadow), for lookups by id or hash.
    pub fn loaded(&self) -> Vec<ActivePlugin> {
        let routing = self.routing();
        let mut all = self.active().to_vec();
        all.extend(routing.canaries.values().map(|(p, _)| p.clone()));
        all.extend(routing.shadows.values().cloned());
        all
    }

    /// The invocation for a call at `brand` about `subject`; the seed derives from the subject
    /// so a retried request gets the same decision.
    pub fn invocation(&self, now_ms: i64, brand: &str, subject: &str) -> Invocation {
        let digest = Sha256::digest(format!("{brand}\0{subject}").as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        Invocation {
            now_ms,
            utc_offset_minutes: self.utc_offset_minutes,
            seed: u64::from_le_bytes(seed),
            brand: brand.to_owned(),
            budgets: Vec::new(),
        }
    }

    /// `invocation` with what is left of every budget in force when one of `serving` is built
    /// against `coalition:plugin@0.2.0` (the runtime hands each plugin those that apply to it);
    /// unchanged, and no read, when none is: 0.1.0 never sees budgets.
    pub async fn with_budgets<'a>(
        &self,
        mut invocation: Invocation,
        conn: &mut sqlx::AnyConnection,
        mut serving: impl Iterator<Item = &'a LoadedPlugin>,
    ) -> DomainResult<Invocation> {
        if !serving.any(|p| p.manifest().wit != WitVersion::V0_1_0) {
            return Ok(invocation);
        }
        let offset = i64::from(self.utc_offset_minutes);
        invocation.budgets = crate::ledger::budgets::in_force(conn, offset, invocation.now_ms)
            .await?
            .into_iter()
            .map(|b| model::BudgetRemaining {
                brand: b.brand_id,
                kind: match b.kind {
                    crate::ledger::budgets::BudgetKind::BonusPoints => {
                        model::BudgetKind::BonusPoints
                    }
                    crate::ledger::budgets::BudgetKind::PerkValue => model::BudgetKind::PerkValue,
                    crate::ledger::budgets::BudgetKind::CouponValue => {
                        model::BudgetKind::CouponValue
                    }
                },
                plugin: b.plugin,
                amount: b.amount,
                remaining: b.remaining,
                period_ends_ms: b.period_ends_ms,
            })
            .collect();
        Ok(invocation)
    }

    /// Perks from `serving` (the member's serving versions, or some of them), in parallel,
    /// failing open.
    pub async fn list_perks(
        &self,
        invocation: Invocation,
        member: MemberContext,
        serving: Vec<ActivePlugin>,
    ) -> PerkListing {
        let plugins: Vec<(LoadedPlugin, model::Config)> = serving
            .iter()
            .filter(|p| p.plugin.implements(Hook::ListPerks))
            .map(|p| (p.plugin.clone(), p.config.clone()))
            .collect();
        if plugins.is_empty() {
            return PerkListing::default();
        }
        let listing = tokio::task::spawn_blocking(move || {
            coalition_runtime::list_perks_all(&plugins, &invocation, &member)
        })
        .await;
        match listing {
            Ok(listing) => {
                for failure in &listing.failures {
                    tracing::warn!(error = %failure, "plugin left out of perk listing");
                }
                listing
            }
            Err(err) => {
                tracing::error!(%err, "perk listing task failed");
                PerkListing::default()
            }
        }
    }

    /// Bonus proposals for a purchase from every active plugin that implements `points-bonus`
    /// and involves the purchase's brand. Failures are returned beside successes; the caller
    /// applies the fail-open policy.
    pub async fn purchase_bonuses(
        &self,
        invocation: Invocation,
        member: MemberContext,
        order: Order,
    ) -> Vec<BonusOutcome> {
        let plugins: Vec<ActivePlugin> = self
            .serving(&member.member_ref)
            .iter()
            .filter(|p| p.plugin.implements(Hook::PointsBonus) && p.involves(&order.brand))
            .cloned()
            .collect();
        if plugins.is_empty() {
            return Vec::new();
        }
        let outcome = tokio::task::spawn_blocking(move || {
            plugins
                .into_iter()
                .map(|active| {
                    let ctx = coalition_runtime::CallContext {
                        invocation: invocation.clone(),
                        config: active.config.clone(),
                    };
                    let result = active.plugin.points_bonus(&ctx, &member, &order);
                    BonusOutcome { active, result }
                })
                .collect::<Vec<_>>()
        })
        .await;
        outcome.unwrap_or_else(|err| {
            tracing::error!(%err, "bonus task failed");
            Vec::new()
        })
    }
}

/// One plugin's answer to `points-bonus`.
pub struct BonusOutcome {
    /// The plugin asked.
    pub active: ActivePlugin,
    /// Its validated bonuses and receipt, or why there are none.
    pub result: Result<Decision<Vec<Bonus>>, PluginError>,
}

/// The `extra` of a fail-closed problem caused by a plugin: which plugin, version and hook, and
/// the reason code, so a client shows the member who refused and why.
/// The problem for a fail-closed hook (redeem-perk, apply-coupon) whose call failed:
/// the plugin's own `invalid-input` (the request makes no sense to it, e.g. an unknown perk id)
/// is the caller's `422 <invalid_code>`; anything else is a `503 <failed_code>` outage. Both say
/// `nothing` happened and carry the plugin, version, hook and reason code.
pub fn fail_closed_problem(
    err: &PluginError,
    hook: Hook,
    invalid_code: &'static str,
    failed_code: &'static str,
    nothing: &str,
) -> crate::foundation::error::DomainError {
    let extra = plugin_problem_extra(&err.plugin, &err.version, hook, err.kind.code());
    if let Some(reason) = err.kind.invalid_input() {
        return crate::foundation::error::DomainError::unprocessable(
            invalid_code,
            format!("{}@{}: {reason}; {nothing}", err.plugin, err.version),
        )
        .with_extra(extra);
    }
    tracing::warn!(error = %err, hook = hook.as_str(), "fail-closed hook failed; {nothing}");
    crate::foundation::error::DomainError::unavailable(
        failed_code,
        format!(
            "plugin {}@{} failed in {} ({}); {nothing}",
            err.plugin,
            err.version,
            hook.as_str(),
            err.kind.code()
        ),
    )
    .with_extra(extra)
}

pub fn plugin_problem_extra(
    plugin: &str,
    version: &str,
    hook: Hook,
    reason_code: &str,
) -> serde_json::Value {
    serde_json::json!({
        "plugin": plugin,
        "version": version,
        "hook": hook.as_str(),
        "reason_code": reason_code,
    })
}

fn skipped_decision(
    active: &ActivePlugin,
    hook: Hook,
    code: &str,
    detail: String,
) -> SkippedDecision {
    {
        SkippedDecision {
            plugin: active.plugin.name().to_owned(),
            version: active.plugin.version().to_owned(),
            hook: hook.as_str().to_owned(),
            code: code.to_owned(),
            detail: clip(&detail),
        }
    }
}

/// Bonuses accepted for a purchase, each with the receipt of the call that proposed it.
#[derive(Debug, Clone, Default)]
pub struct AcceptedBonuses {
    /// `(plugin@version, bonus)` in plugin order, after the host's caps.
    pub bonuses: Vec<(String, Bonus)>,
    /// Receipts of every successful call (used or empty decisions alike).
    pub receipts: Vec<(coalition_runtime::Receipt, String)>,
    /// Decisions the host refused, cut or skipped, in plugin order.
    pub skipped: Vec<SkippedDecision>,
}

impl AcceptedBonuses {
    /// Total bonus points.
    pub fn total_points(&self) -> i64 {
        self.bonuses.iter().map(|(_, b)| b.points).sum()
    }

    /// The bonuses as the ledger records them, each naming the plugin version that proposed it.
    pub fn proposals(&self) -> Vec<crate::domain::purchases::BonusProposal> {
        self.bonuses
            .iter()
            .map(|(source, bonus)| crate::domain::purchases::BonusProposal {
                points: bonus.points,
                code: bonus.code.clone(),
                reason: bonus.reason.clone(),
                source: source.clone(),
            })
            .collect()
    }

    /// Records `skipped` (these bonuses' skipped decisions and any the host added, such as a
    /// budget cut) beside the purchase, in its transaction.
    pub async fn store_skipped(
        conn: &mut sqlx::AnyConnection,
        purchase_id: &str,
        skipped: &[SkippedDecision],
    ) -> Result<(), sqlx::Error> {
        for (position, s) in skipped.iter().enumerate() {
            sqlx::query(
                "INSERT INTO purchase_skipped_decisions
                   (purchase_id, position, plugin, version, hook, code, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(purchase_id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&s.plugin)
            .bind(&s.version)
            .bind(&s.hook)
            .bind(&s.code)
            .bind(&s.detail)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Stores the receipts of the used decisions beside the purchase, in its transaction.
    pub async fn store_receipts(
        &self,
        conn: &mut sqlx::AnyConnection,
        purchase_id: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        for (receipt, output) in &self.receipts {
            receipts::store_receipt(&mut *conn, receipt, output, "purchase", purchase_id, now_ms)
                .await?;
        }
        Ok(())
    }
}

/// Applies the fail-open policy and the host's per-purchase caps to bonus outcomes.
///
/// Bonuses are taken in plugin order until the caps of [`crate::domain::purchases::plan_earn`] are
/// reached (10x the base points, 1,000,000 points, 16 bonuses); a bonus that would cross the
/// points cap is cut to fit and says so in its reason, so the member never gets more than the
/// cap and a broken or greedy plugin never fails the purchase.
pub fn accept_bonuses(outcomes: Vec<BonusOutcome>, base_points: i64) -> AcceptedBonuses {
    use crate::domain::purchases::{
        MAX_BONUSES, MAX_BONUS_MULTIPLE_OF_BASE, MAX_BONUS_POINTS_PER_ORDER,
    };
    let cap = base_points
        .max(0)
        .saturating_mul(MAX_BONUS_MULTIPLE_OF_BASE)
        .min(MAX_BONUS_POINTS_PER_ORDER);
    let mut accepted = AcceptedBonuses::default();
    let mut total: i64 = 0;
    for BonusOutcome { active, result } in outcomes {
        let decision = match result {
            Ok(decision) => decision,
            Err(err) => {
                tracing::warn!(error = %err, "points-bonus failed; purchase earns without it");
                metrics::counter!(
                    "purchase_bonus_skipped_total",
                    "plugin" => active.plugin.name().to_owned(),
                    "kind" => err.kind.code()
                )
                .increment(1);
                accepted.skipped.push(skipped_decision(
                    &active,
                    Hook::PointsBonus,
                    err.kind.code(),
                    format!(
                        "the purchase earned without this plugin's bonuses: {}{}",
                        err.kind,
                        err.fuel_used
                            .map(|fuel| format!(" (fuel used {fuel})"))
                            .unwrap_or_default()
                    ),
                ));
                continue;
            }
        };
        for bonus in &decision.value {
            let room = cap - total;
            if room <= 0 || accepted.bonuses.len() >= MAX_BONUSES {
                let (code, why) = if room <= 0 {
                    (
                        "bonus_cap_reached",
                        format!("the order's bonus cap of {cap} points"),
                    )
                } else {
                    (
                        "too_many_bonuses",
                        format!("{MAX_BONUSES} bonuses per order"),
                    )
                };
                accepted.skipped.push(skipped_decision(
                    &active,
                    Hook::PointsBonus,
                    code,
                    format!(
                        "bonus {} of {} points dropped: {why} was already reached",
                        bonus.code, bonus.points
                    ),
                ));
                continue;
            }
            let points = bonus.points.min(room);
            let reason = if points < bonus.points {
                accepted.skipped.push(skipped_decision(
                    &active,
                    Hook::PointsBonus,
                    "bonus_capped",
                    format!(
                        "bonus {} cut from {} to {points} points by the order's bonus cap of \
                         {cap}",
                        bonus.code, bonus.points
                    ),
                ));
                clip(&format!(
                    "{} (capped at {points} of {})",
                    bonus.reason, bonus.points
                ))
            } else {
                clip(&bonus.reason)
            };
            total += points;
            accepted.bonuses.push((
                format!("{}@{}", active.plugin.name(), active.plugin.version()),
                Bonus {
                    points,
                    code: bonus.code.clone(),
                    reason,
                },
            ));
        }
        // Every successful call keeps its receipt, even an empty decision: the recorded
        // inputs are what a candidate version is dry-run against.
        let output = serde_json::to_string(&decision.value).unwrap_or_default();
        accepted.receipts.push((decision.receipt, output));
    }
    accepted
}

/// Cuts a reason to the ledger's limit at a character boundary.
fn clip(text: &str) -> String {
    let max = crate::ledger::MAX_REASON_LEN;
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
