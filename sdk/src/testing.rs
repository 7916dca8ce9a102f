//! Native unit testing of plugins, without compiling to wasm (native targets only).
//!
//! - [`TestHost`]: the host imports for the current thread — a config map and captured logs.
//!   Without one, `config` reads nothing (so code defaults apply) and logs go to stderr.
//! - Builders for realistic inputs: [`invocation`], [`member`], [`order`], [`cart`],
//!   [`coupon`], [`settle_event`], [`redeem_request`].
//! - Checks that mirror the invariants the host enforces on decisions ([`check_bonuses`],
//!   [`check_perks`], [`check_redeem_decision`], [`check_coupon_decision`],
//!   [`check_settlement`]) and a [`check_manifest`] that compares `plugin.toml` with
//!   [`Plugin::info`]. The host's own checks are authoritative; these give early feedback.
//!
//! ```
//! use coalition_sdk::testing::{self, TestHost};
//! use coalition_sdk::{config, log};
//!
//! let host = TestHost::new().with_config("double_weekday", "tuesday");
//! let day = host.run(|| {
//!     log::info("reading config");
//!     config::get_or("double_weekday", "monday")
//! });
//! assert_eq!(day, "tuesday");
//! assert_eq!(host.log_messages(), vec!["reading config".to_owned()]);
//!
//! let inv = testing::invocation().local(2025, 3, 17, 9, 30).build();
//! assert_eq!(inv.weekday(), coalition_sdk::calendar::Weekday::Monday);
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;

use crate::calendar::{days_from_civil, MS_PER_DAY, MS_PER_MINUTE};
use crate::limits::{
    MAX_CODE_BYTES, MAX_DESCRIPTION_BYTES, MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINES_PER_CALL,
    MAX_PERKS, MAX_REASON_BYTES, MAX_SETTLEMENT_LINES, MAX_SETTLEMENT_MULTIPLE_OF_VALUE,
    MAX_TITLE_BYTES, WIT_PACKAGE,
};
use crate::log::Level;
use crate::{
    Bonus, BrandSpend, Cart, Coupon, CouponDecision, Grant, Hook, Invocation, MemberContext, Order,
    OrderLine, Perk, Plugin, RedeemDecision, RedeemRequest, SettleEvent, SettleKind,
    SettlementLine, PLATFORM,
};

// ---------------------------------------------------------------------------------------------
// Test host
// ---------------------------------------------------------------------------------------------

/// One log line a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
}

#[derive(Default)]
struct HostState {
    config: BTreeMap<String, String>,
    logs: Vec<LogLine>,
    log_bytes_this_call: usize,
    log_lines_this_call: usize,
    dropped_logs: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<HostState>>>> = const { RefCell::new(None) };
}

/// A stand-in for the host's imports on the current thread: admin configuration and a log sink
/// that applies the same per-call bounds as the real host (32 lines, 8 KiB; the rest is dropped
/// and counted).
///
/// Clone it cheaply: clones share the same state.
#[derive(Clone, Default)]
pub struct TestHost {
    state: Rc<RefCell<HostState>>,
}

impl fmt::Debug for TestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("TestHost")
            .field("config", &state.config)
            .field("logs", &state.logs)
            .field("dropped_logs", &state.dropped_logs)
            .finish()
    }
}

impl TestHost {
    /// A host with no configuration and no logs.
    pub fn new() -> TestHost {
        TestHost::default()
    }

    /// Sets a configuration value (builder style).
    pub fn with_config(self, key: impl Into<String>, value: impl Into<String>) -> TestHost {
        self.set_config(key, value);
        self
    }

    /// Sets every `default` of the manifest's `[config]` table, as an admin who accepted the
    /// defaults would.
    ///
    /// # Errors
    /// A [`Violation`] when the manifest does not parse.
    pub fn with_manifest_defaults(self, manifest_toml: &str) -> Result<TestHost, Violation> {
        let manifest = Manifest::parse(manifest_toml)?;
        for (key, entry) in manifest.config {
            if let Some(default) = entry.default {
                self.set_config(key, default);
            }
        }
        Ok(self)
    }

    /// Sets a configuration value.
    pub fn set_config(&self, key: impl Into<String>, value: impl Into<String>) {
        self.state
            .borrow_mut()
            .config
            .insert(key.into(), value.into());
    }

    /// Removes a configuration value.
    pub fn unset_config(&self, key: &str) {
        self.state.borrow_mut().config.remove(key);
    }

    /// Runs `call` (one hook call) with this host installed on the current thread, then
    /// restores the previous host. The log bounds restart for each call.
    pub fn run<R>(&self, call: impl FnOnce() -> R) -> R {
        {
            let mut state = self.state.borrow_mut();
            state.log_bytes_this_call = 0;
            state.log_lines_this_call = 0;
        }
        let previous = CURRENT.with(|current| current.replace(Some(Rc::clone(&self.state))));
        // Restore even when `call` panics (a failing assertion inside it), so one test's host
        // never leaks into the next test run on the same thread.
        struct Restore(Option<Rc<RefCell<HostState>>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|current| *current.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        call()
    }

    /// Every line kept so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// The messages of [`TestHost::logs`].
    pub fn log_messages(&self) -> Vec<String> {
        self.state
            .borrow()
            .logs
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }

    /// Lines dropped because a call went over the log bounds.
    pub fn dropped_logs(&self) -> usize {
        self.state.borrow().dropped_logs
    }

    /// Forgets the captured logs and the dropped count.
    pub fn clear_logs(&self) {
        let mut state = self.state.borrow_mut();
        state.logs.clear();
        state.dropped_logs = 0;
    }
}

pub(crate) fn host_log(level: Level, message: &str) {
    let installed = CURRENT.with(|current| current.borrow().clone());
    let Some(state) = installed else {
        eprintln!("[plugin {level:?}] {message}");
        return;
    };
    let mut state = state.borrow_mut();
    let bytes = state.log_bytes_this_call.saturating_add(message.len());
    if state.log_lines_this_call >= MAX_LOG_LINES_PER_CALL || bytes > MAX_LOG_BYTES_PER_CALL {
        state.dropped_logs += 1;
        return;
    }
    state.log_lines_this_call += 1;
    state.log_bytes_this_call = bytes;
    state.logs.push(LogLine {
        level,
        message: message.to_owned(),
    });
}

pub(crate) fn host_config(key: &str) -> Option<String> {
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .and_then(|state| state.borrow().config.get(key).cloned())
    })
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// UTC milliseconds of a local date-time in a zone `utc_offset_minutes` from UTC.
pub fn local_ms(
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    utc_offset_minutes: i32,
) -> i64 {
    days_from_civil(year, month, day) * MS_PER_DAY
        + (i64::from(hour) * 60 + i64::from(minute) - i64::from(utc_offset_minutes)) * MS_PER_MINUTE
}

/// Builds an [`Invocation`]. Defaults: Wednesday 2025-01-15 12:00 in UTC+8, seed 42, no brand.
pub fn invocation() -> InvocationBuilder {
    InvocationBuilder {
        inv: Invocation {
            now_ms: local_ms(2025, 1, 15, 12, 0, 480),
            utc_offset_minutes: 480,
            seed: 42,
            brand: String::new(),
            #[cfg(feature = "wit-0-2-0")]
            budgets: Vec::new(),
        },
    }
}

/// Builder returned by [`invocation`].
#[derive(Debug, Clone)]
pub struct InvocationBuilder {
    inv: Invocation,
}

impl InvocationBuilder {
    /// The call happens at this local date and time (in the builder's current offset; set
    /// [`InvocationBuilder::offset_minutes`] first to use another one).
    pub fn local(mut self, year: i64, month: u8, day: u8, hour: u8, minute: u8) -> Self {
        self.inv.now_ms = local_ms(year, month, day, hour, minute, self.inv.utc_offset_minutes);
        self
    }
    /// The call happens at this UTC instant.
    pub fn now_ms(mut self, now_ms: i64) -> Self {
        self.inv.now_ms = now_ms;
        self
    }
    /// The coalition's offset from UTC, minutes.
    pub fn offset_minutes(mut self, minutes: i32) -> Self {
        self.inv.utc_offset_minutes = minutes;
        self
    }
    /// The seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.inv.seed = seed;
        self
    }
    /// The brand at whose counter the call happens.
    pub fn brand(mut self, brand: impl Into<String>) -> Self {
        self.inv.brand = brand.into();
        self
    }
    /// What is left of a budget that applies to the plugin (`coalition:plugin@0.2.0`): the
    /// current period of `amount`, of which `remaining` is left, ending in 30 days.
    #[cfg(feature = "wit-0-2-0")]
    pub fn budget(
        mut self,
        brand: impl Into<String>,
        kind: crate::BudgetKind,
        amount: i64,
        remaining: i64,
    ) -> Self {
        self.inv.budgets.push(crate::BudgetRemaining {
            brand: brand.into(),
            kind,
            this_plugin_only: true,
            amount,
            remaining,
            period_ends_ms: self.inv.now_ms + 30 * MS_PER_DAY,
        });
        self
    }
    /// The invocation.
    pub fn build(self) -> Invocation {
        self.inv
    }
}

/// Builds a [`MemberContext`]. Defaults: tier "bronze" (rank 0), no tags, no birthday, no points,
/// no spend, member since 2024-01-01.
pub fn member(member_ref: impl Into<String>) -> MemberBuilder {
    MemberBuilder {
        member: MemberContext {
            member_ref: member_ref.into(),
            tier: "bronze".into(),
            tier_rank: 0,
            tags: Vec::new(),
            birthday_month: None,
            points_balance: 0,
            qualifying_spend_cents: 0,
            spend: Vec::new(),
            member_since_ms: local_ms(2024, 1, 1, 0, 0, 0),
            #[cfg(feature = "wit-0-2-0")]
            stored_value_cents: 0,
            #[cfg(feature = "wit-0-2-0")]
            pending_points: 0,
            #[cfg(feature = "wit-0-2-0")]
            membership: None,
        },
    }
}

/// Builder returned by [`member`].
#[derive(Debug, Clone)]
pub struct MemberBuilder {
    member: MemberContext,
}

impl MemberBuilder {
    /// Tier code and rank (0 is the lowest).
    pub fn tier(mut self, tier: impl Into<String>, rank: u32) -> Self {
        self.member.tier = tier.into();
        self.member.tier_rank = rank;
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.member.tags.push(tag.into());
        self
    }
    /// Birthday month, 1..=12.
    pub fn birthday_month(mut self, month: u8) -> Self {
        self.member.birthday_month = Some(month);
        self
    }
    /// Spendable points balance.
    pub fn points(mut self, points: i64) -> Self {
        self.member.points_balance = points;
        self
    }
    /// Qualifying spend in the tier window, cents.
    pub fn qualifying_spend(mut self, cents: i64) -> Self {
        self.member.qualifying_spend_cents = cents;
        self
    }
    /// Recent spend at `brand`: `cents_7d` in the last 7 days (also counted in the 30 days) and
    /// one visit. Replaces earlier spend at the same brand.
    pub fn spend(self, brand: impl Into<String>, cents_7d: i64) -> Self {
        self.spend_detailed(brand, cents_7d, cents_7d, 1)
    }
    /// Recent spend at `brand` with every field given.
    pub fn spend_detailed(
        mut self,
        brand: impl Into<String>,
        cents_7d: i64,
        cents_30d: i64,
        visits_30d: u32,
    ) -> Self {
        let brand = brand.into();
        self.member.spend.retain(|s| s.brand != brand);
        self.member.spend.push(BrandSpend {
            brand,
            spend_7d_cents: cents_7d,
            spend_30d_cents: cents_30d,
            visits_30d,
        });
        self
    }
    /// When the member joined, UTC ms.
    pub fn member_since_ms(mut self, ms: i64) -> Self {
        self.member.member_since_ms = ms;
        self
    }
    /// Stored-value balance, cents (`coalition:plugin@0.2.0`).
    #[cfg(feature = "wit-0-2-0")]
    pub fn stored_value(mut self, cents: i64) -> Self {
        self.member.stored_value_cents = cents;
        self
    }
    /// Points pending in a return window (`coalition:plugin@0.2.0`).
    #[cfg(feature = "wit-0-2-0")]
    pub fn pending_points(mut self, points: i64) -> Self {
        self.member.pending_points = points;
        self
    }
    /// An active membership card of `plan` (owned by `brand`) with these benefit flags, ×1
    /// earn, no tier floor, expiring in 30 days of 2025-01-15 (`coalition:plugin@0.2.0`).
    #[cfg(feature = "wit-0-2-0")]
    pub fn membership(
        mut self,
        plan: impl Into<String>,
        brand: impl Into<String>,
        benefits: &[&str],
    ) -> Self {
        self.member.membership = Some(crate::Membership {
            plan: plan.into(),
            brand: brand.into(),
            benefits: benefits.iter().map(|b| (*b).to_owned()).collect(),
            points_multiplier_percent: 100,
            tier_floor: None,
            expires_at_ms: local_ms(2025, 2, 14, 0, 0, 480),
        });
        self
    }
    /// The member.
    pub fn build(self) -> MemberContext {
        self.member
    }
}

/// A line with `line-id` `"l<n>"` numbered by the builders.
fn line(
    index: usize,
    sku: &str,
    category: &str,
    quantity: u32,
    unit_price_cents: i64,
    excluded: bool,
) -> OrderLine {
    OrderLine {
        line_id: format!("l{}", index + 1),
        sku: sku.into(),
        category: category.into(),
        quantity,
        unit_price_cents,
        excluded,
    }
}

fn total_of(lines: &[OrderLine]) -> i64 {
    // Builders make test inputs; an overflow here is a mistake in the test itself.
    crate::lines_total_cents(lines, |_| true).expect("test order lines overflow i64")
}

/// Builds an [`Order`]. Lines get ids `l1`, `l2`, ...; totals are computed. Base points default
/// to 1 point per 100 earning cents (non-excluded lines minus the part paid with points).
pub fn order(brand: impl Into<String>) -> OrderBuilder {
    OrderBuilder {
        order_id: "o-1".into(),
        brand: brand.into(),
        lines: Vec::new(),
        paid_with_points_cents: 0,
        base_points: None,
    }
}

/// Builder returned by [`order`].
#[derive(Debug, Clone)]
pub struct OrderBuilder {
    order_id: String,
    brand: String,
    lines: Vec<OrderLine>,
    paid_with_points_cents: i64,
    base_points: Option<i64>,
}

impl OrderBuilder {
    /// The order id.
    pub fn id(mut self, order_id: impl Into<String>) -> Self {
        self.order_id = order_id.into();
        self
    }
    /// Adds a line that earns points.
    pub fn line(mut self, sku: &str, category: &str, quantity: u32, unit_price_cents: i64) -> Self {
        let index = self.lines.len();
        self.lines.push(line(
            index,
            sku,
            category,
            quantity,
            unit_price_cents,
            false,
        ));
        self
    }
    /// Adds a line excluded from earning (gift card, delivery fee).
    pub fn excluded_line(
        mut self,
        sku: &str,
        category: &str,
        quantity: u32,
        unit_price_cents: i64,
    ) -> Self {
        let index = self.lines.len();
        self.lines
            .push(line(index, sku, category, quantity, unit_price_cents, true));
        self
    }
    /// Adds `count` lines of one unit each at `unit_price_cents`, skus `sku-1`, `sku-2`, ...
    pub fn lines(mut self, count: usize, category: &str, unit_price_cents: i64) -> Self {
        for _ in 0..count {
            let index = self.lines.len();
            let sku = format!("sku-{}", index + 1);
            self.lines
                .push(line(index, &sku, category, 1, unit_price_cents, false));
        }
        self
    }
    /// Part of the total paid with points, cents.
    pub fn paid_with_points(mut self, cents: i64) -> Self {
        self.paid_with_points_cents = cents;
        self
    }
    /// Points the host's base rule gives (overrides the default of 1 per 100 earning cents).
    pub fn base_points(mut self, points: i64) -> Self {
        self.base_points = Some(points);
        self
    }
    /// The order.
    ///
    /// # Panics
    /// When the line totals overflow `i64` (a mistake in the test).
    pub fn build(self) -> Order {
        let total_cents = total_of(&self.lines);
        let earning: i64 = crate::lines_total_cents(&self.lines, |l| !l.excluded)
            .expect("test order lines overflow i64");
        let base_points = self
            .base_points
            .unwrap_or_else(|| (earning - self.paid_with_points_cents).max(0) / 100);
        Order {
            order_id: self.order_id,
            brand: self.brand,
            lines: self.lines,
            total_cents,
            paid_with_points_cents: self.paid_with_points_cents,
            base_points,
        }
    }
}

/// Builds a [`Cart`]. Lines get ids `l1`, `l2`, ...; the total is computed.
pub fn cart(brand: impl Into<String>) -> CartBuilder {
    CartBuilder {
        brand: brand.into(),
        lines: Vec::new(),
        applied_templates: Vec::new(),
    }
}

/// Builder returned by [`cart`].
#[derive(Debug, Clone)]
pub struct CartBuilder {
    brand: String,
    lines: Vec<OrderLine>,
    applied_templates: Vec<String>,
}

impl CartBuilder {
    /// Adds a line.
    pub fn line(mut self, sku: &str, category: &str, quantity: u32, unit_price_cents: i64) -> Self {
        let index = self.lines.len();
        self.lines.push(line(
            index,
            sku,
            category,
            quantity,
            unit_price_cents,
            false,
        ));
        self
    }
    /// Adds an excluded line (gift card, delivery fee).
    pub fn excluded_line(
        mut self,
        sku: &str,
        category: &str,
        quantity: u32,
        unit_price_cents: i64,
    ) -> Self {
        let index = self.lines.len();
        self.lines
            .push(line(index, sku, category, quantity, unit_price_cents, true));
        self
    }
    /// Adds `count` lines of one unit each at `unit_price_cents`.
    pub fn lines(mut self, count: usize, category: &str, unit_price_cents: i64) -> Self {
        for _ in 0..count {
            let index = self.lines.len();
            let sku = format!("sku-{}", index + 1);
            self.lines
                .push(line(index, &sku, category, 1, unit_price_cents, false));
        }
        self
    }
    /// Records a coupon template as already applied.
    pub fn applied(mut self, template_id: impl Into<String>) -> Self {
        self.applied_templates.push(template_id.into());
        self
    }
    /// The cart.
    ///
    /// # Panics
    /// When the line totals overflow `i64` (a mistake in the test).
    pub fn build(self) -> Cart {
        Cart {
            total_cents: total_of(&self.lines),
            brand: self.brand,
            lines: self.lines,
            applied_templates: self.applied_templates,
        }
    }
}

/// Builds a [`Coupon`] of a template. Defaults: code `"C-1"`, funded by `"mall"`, no params.
pub fn coupon(template_id: impl Into<String>) -> CouponBuilder {
    CouponBuilder {
        coupon: Coupon {
            code: "C-1".into(),
            template_id: template_id.into(),
            funding_brand: "mall".into(),
            params: Vec::new(),
        },
    }
}

/// Builder returned by [`coupon`].
#[derive(Debug, Clone)]
pub struct CouponBuilder {
    coupon: Coupon,
}

impl CouponBuilder {
    /// Adds a template parameter.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.coupon.params.push((key.into(), value.into()));
        self
    }
    /// The funding brand.
    pub fn funding(mut self, brand: impl Into<String>) -> Self {
        self.coupon.funding_brand = brand.into();
        self
    }
    /// The coupon code.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.coupon.code = code.into();
        self
    }
    /// The coupon.
    pub fn build(self) -> Coupon {
        self.coupon
    }
}

/// Builds a [`SettleEvent`] of `kind` at `brand` (which also funds and honours it unless
/// changed), 0 points and 0 cents, at 2025-01-15 12:00 UTC+8.
pub fn settle_event(kind: SettleKind, brand: impl Into<String>) -> SettleEventBuilder {
    let brand = brand.into();
    SettleEventBuilder {
        event: SettleEvent {
            event_id: "ev-1".into(),
            kind,
            funding_brand: brand.clone(),
            honouring_brand: brand.clone(),
            brand,
            reference: None,
            points: 0,
            value_cents: 0,
            occurred_at_ms: local_ms(2025, 1, 15, 12, 0, 480),
        },
    }
}

/// Builder returned by [`settle_event`].
#[derive(Debug, Clone)]
pub struct SettleEventBuilder {
    event: SettleEvent,
}

impl SettleEventBuilder {
    /// The event id.
    pub fn id(mut self, event_id: impl Into<String>) -> Self {
        self.event.event_id = event_id.into();
        self
    }
    /// Funding and honouring brands.
    pub fn parties(mut self, funding: impl Into<String>, honouring: impl Into<String>) -> Self {
        self.event.funding_brand = funding.into();
        self.event.honouring_brand = honouring.into();
        self
    }
    /// The perk or coupon template involved.
    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.event.reference = Some(reference.into());
        self
    }
    /// Points involved.
    pub fn points(mut self, points: i64) -> Self {
        self.event.points = points;
        self
    }
    /// Face value, cents.
    pub fn value_cents(mut self, cents: i64) -> Self {
        self.event.value_cents = cents;
        self
    }
    /// The event.
    pub fn build(self) -> SettleEvent {
        self.event
    }
}

/// A [`RedeemRequest`] for `perk_id` with redemption id `"r-1"`.
pub fn redeem_request(perk_id: impl Into<String>) -> RedeemRequest {
    RedeemRequest {
        perk_id: perk_id.into(),
        redemption_id: "r-1".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Invariant checks
// ---------------------------------------------------------------------------------------------

/// A decision or manifest that breaks the contract, with what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn violation(message: impl Into<String>) -> Result<(), Violation> {
    Err(Violation(message.into()))
}

fn check_text(what: &str, text: &str, min: usize, max: usize) -> Result<(), Violation> {
    if text.len() < min || text.len() > max {
        return violation(format!(
            "{what} is {} bytes, allowed {min}..={max}",
            text.len()
        ));
    }
    Ok(())
}

/// Bonuses: each > 0 with a 1..=64-byte code and a 1..=200-byte reason; their sum may not
/// overflow nor exceed `cap_points` (the host caps the bonus per order; pass the cap the
/// platform configures, or a sanity ceiling).
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_bonuses(bonuses: &[Bonus], cap_points: i64) -> Result<(), Violation> {
    let mut sum: i64 = 0;
    for bonus in bonuses {
        if bonus.points <= 0 {
            return violation(format!(
                "bonus {} has {} points, must be > 0",
                bonus.code, bonus.points
            ));
        }
        check_text("bonus code", &bonus.code, 1, MAX_CODE_BYTES)?;
        check_text("bonus reason", &bonus.reason, 1, MAX_REASON_BYTES)?;
        sum = sum
            .checked_add(bonus.points)
            .ok_or_else(|| Violation("bonus points overflow".into()))?;
    }
    if sum > cap_points {
        return violation(format!("bonuses total {sum} points, cap {cap_points}"));
    }
    Ok(())
}

/// One perk: text sizes, non-negative cost and value, a positive discount grant.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_perk(perk: &Perk) -> Result<(), Violation> {
    check_text("perk id", &perk.id, 1, MAX_CODE_BYTES)?;
    check_text("perk title", &perk.title, 1, MAX_TITLE_BYTES)?;
    check_text(
        "perk description",
        &perk.description,
        0,
        MAX_DESCRIPTION_BYTES,
    )?;
    if perk.funding_brand.is_empty() || perk.honouring_brand.is_empty() {
        return violation(format!(
            "perk {} needs a funding and an honouring brand",
            perk.id
        ));
    }
    if perk.cost_points < 0 || perk.value_cents < 0 {
        return violation(format!("perk {} has a negative cost or value", perk.id));
    }
    if let Grant::DiscountCents(cents) = perk.grant {
        if cents <= 0 {
            return violation(format!(
                "perk {} grants a discount of {cents} cents",
                perk.id
            ));
        }
    }
    Ok(())
}

/// A perk list: at most 100 perks, unique ids, each valid.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_perks(perks: &[Perk]) -> Result<(), Violation> {
    if perks.len() > MAX_PERKS {
        return violation(format!("{} perks, at most {MAX_PERKS}", perks.len()));
    }
    let mut ids = BTreeSet::new();
    for perk in perks {
        check_perk(perk)?;
        if !ids.insert(perk.id.as_str()) {
            return violation(format!("perk id {} appears twice", perk.id));
        }
    }
    Ok(())
}

/// A redemption verdict: a valid granted perk or a 1..=200-byte refusal.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_redeem_decision(decision: &RedeemDecision) -> Result<(), Violation> {
    match decision {
        RedeemDecision::Granted(perk) => check_perk(perk),
        RedeemDecision::Refused(reason) => check_text("refusal", reason, 1, MAX_REASON_BYTES),
    }
}

/// A coupon verdict for `cart`: discounts name existing lines, at most once each, are never
/// negative and never above the line's total.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_coupon_decision(cart: &Cart, decision: &CouponDecision) -> Result<(), Violation> {
    let discounts = match decision {
        CouponDecision::Rejected(reason) => {
            return check_text("rejection", reason, 1, MAX_REASON_BYTES)
        }
        CouponDecision::Applied(discounts) => discounts,
    };
    let mut seen = BTreeSet::new();
    for discount in discounts {
        let Some(line) = cart.lines.iter().find(|l| l.line_id == discount.line_id) else {
            return violation(format!("discount on unknown line {}", discount.line_id));
        };
        if !seen.insert(discount.line_id.as_str()) {
            return violation(format!("line {} discounted twice", discount.line_id));
        }
        if discount.discount_cents < 0 {
            return violation(format!("negative discount on line {}", discount.line_id));
        }
        let line_total = line.total_cents().map_err(|e| Violation(e.to_string()))?;
        if discount.discount_cents > line_total {
            return violation(format!(
                "discount {} above line {} total {line_total}",
                discount.discount_cents, discount.line_id
            ));
        }
    }
    Ok(())
}

/// Settlement lines for `event`: at most 16; each amount > 0; payer ≠ payee; parties are the
/// event's brands or [`PLATFORM`]; the total moved is at most 2 × `value-cents`.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check_settlement(event: &SettleEvent, lines: &[SettlementLine]) -> Result<(), Violation> {
    if lines.len() > MAX_SETTLEMENT_LINES {
        return violation(format!(
            "{} settlement lines, at most {MAX_SETTLEMENT_LINES}",
            lines.len()
        ));
    }
    let party_ok = |party: &str| {
        party == PLATFORM
            || party == event.brand
            || party == event.funding_brand
            || party == event.honouring_brand
    };
    let mut moved: i64 = 0;
    for line in lines {
        if line.amount_cents <= 0 {
            return violation(format!(
                "settlement amount {} must be > 0",
                line.amount_cents
            ));
        }
        if line.payer == line.payee {
            return violation(format!("{} pays itself", line.payer));
        }
        for party in [&line.payer, &line.payee] {
            if !party_ok(party) {
                return violation(format!(
                    "{party} is not a party to event {}",
                    event.event_id
                ));
            }
        }
        check_text("settlement reason", &line.reason, 1, MAX_REASON_BYTES)?;
        moved = moved
            .checked_add(line.amount_cents)
            .ok_or_else(|| Violation("settlement total overflows".into()))?;
    }
    let ceiling = event
        .value_cents
        .saturating_mul(MAX_SETTLEMENT_MULTIPLE_OF_VALUE);
    if moved > ceiling {
        return violation(format!(
            "settlement moves {moved} cents, at most {ceiling} (2 x value)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------------

/// A config key declared in `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// `"string"`, `"integer"` or `"boolean"`.
    pub kind: String,
    /// The default, rendered as the string `config::get` would return.
    pub default: Option<String>,
    /// What the key tunes.
    pub description: String,
}

/// The parts of `plugin.toml` a plugin's tests compare with [`Plugin::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Plugin name.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// Targeted WIT package, for example `coalition:plugin@0.1.0`.
    pub wit: String,
    /// Implemented hooks, by WIT name.
    pub hooks: Vec<String>,
    /// Brands involved.
    pub brands: Vec<String>,
    /// Declared config keys.
    pub config: BTreeMap<String, ConfigEntry>,
}

fn as_str<'a>(table: &'a toml::Table, key: &str) -> Result<&'a str, Violation> {
    table
        .get(key)
        .and_then(toml::Value::as_str)
        .ok_or_else(|| Violation(format!("manifest: `{key}` must be a string")))
}

fn as_str_list(table: &toml::Table, key: &str) -> Result<Vec<String>, Violation> {
    let items = table
        .get(key)
        .and_then(toml::Value::as_array)
        .ok_or_else(|| Violation(format!("manifest: `{key}` must be a list of strings")))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| Violation(format!("manifest: `{key}` must be a list of strings")))
        })
        .collect()
}

fn check_limits(table: &toml::Table, path: &str) -> Result<(), Violation> {
    for (key, value) in table {
        match key.as_str() {
            "fuel" | "memory_mib" | "deadline_ms" => match value.as_integer() {
                Some(n) if n > 0 => {}
                _ => {
                    return violation(format!("manifest: {path}.{key} must be a positive integer"))
                }
            },
            hook if Hook::from_name(hook).is_some() && path == "limits" => {
                let overrides = value
                    .as_table()
                    .ok_or_else(|| Violation(format!("manifest: limits.{hook} must be a table")))?;
                check_limits(overrides, &format!("limits.{hook}"))?;
            }
            other => return violation(format!("manifest: unknown key {path}.{other}")),
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses and checks the schema of `plugin.toml` (see the SDK guide).
    ///
    /// # Errors
    /// A [`Violation`] naming the first key that is missing or malformed.
    pub fn parse(manifest_toml: &str) -> Result<Manifest, Violation> {
        let table: toml::Table = manifest_toml
            .parse()
            .map_err(|e| Violation(format!("manifest: not TOML: {e}")))?;
        let name = as_str(&table, "name")?.to_owned();
        let kebab = !name.is_empty()
            && name.len() <= MAX_CODE_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !kebab {
            return Err(Violation(format!(
                "manifest: name {name:?} is not kebab-case"
            )));
        }
        let version = as_str(&table, "version")?.to_owned();
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.parse::<u64>().is_err())
        {
            return Err(Violation(format!(
                "manifest: version {version:?} is not MAJOR.MINOR.PATCH"
            )));
        }
        let wit = as_str(&table, "wit")?.to_owned();
        as_str(&table, "description")?;
        let hooks = as_str_list(&table, "hooks")?;
        if let Some(bad) = hooks.iter().find(|h| Hook::from_name(h).is_none()) {
            return Err(Violation(format!("manifest: unknown hook {bad:?}")));
        }
        let brands = as_str_list(&table, "brands")?;
        let limits = table
            .get("limits")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| Violation("manifest: [limits] is required".into()))?;
        for key in ["fuel", "memory_mib", "deadline_ms"] {
            if !limits.contains_key(key) {
                return Err(Violation(format!("manifest: limits.{key} is required")));
            }
        }
        check_limits(limits, "limits")?;
        let mut config = BTreeMap::new();
        if let Some(entries) = table.get("config") {
            let entries = entries
                .as_table()
                .ok_or_else(|| Violation("manifest: [config] must be a table".into()))?;
            for (key, entry) in entries {
                let entry = entry
                    .as_table()
                    .ok_or_else(|| Violation(format!("manifest: config.{key} must be a table")))?;
                let kind = as_str(entry, "type")?.to_owned();
                let default = match (kind.as_str(), entry.get("default")) {
                    (_, None) => None,
                    ("string", Some(toml::Value::String(s))) => Some(s.clone()),
                    ("integer", Some(toml::Value::Integer(n))) => Some(n.to_string()),
                    ("boolean", Some(toml::Value::Boolean(b))) => Some(b.to_string()),
                    _ => {
                        return Err(Violation(format!(
                            "manifest: config.{key}: type {kind:?} or its default is invalid"
                        )))
                    }
                };
                let description = as_str(entry, "description")?.to_owned();
                config.insert(
                    key.clone(),
                    ConfigEntry {
                        kind,
                        default,
                        description,
                    },
                );
            }
        }
        Ok(Manifest {
            name,
            version,
            wit,
            hooks,
            brands,
            config,
        })
    }
}

/// Checks that `manifest_toml` parses and agrees with `P::info()`: same name, version, hooks
/// and brands (as sets), and targets the WIT package this SDK builds against.
///
/// ```
/// # use coalition_sdk::{Hook, Plugin, PluginInfo};
/// # struct Hello;
/// # impl Plugin for Hello {
/// #     fn info() -> PluginInfo {
/// #         PluginInfo { name: "hello".into(), version: "0.1.0".into(),
/// #             hooks: vec![Hook::Settle], brands: vec!["coffee".into()] }
/// #     }
/// # }
/// let manifest = format!(r#"
///     name = "hello"
///     version = "0.1.0"
///     wit = "{}"
///     description = "Says hello."
///     hooks = ["settle"]
///     brands = ["coffee"]
///     [limits]
///     fuel = 1_000_000
///     memory_mib = 16
///     deadline_ms = 20
/// "#, coalition_sdk::WIT_PACKAGE);
/// coalition_sdk::testing::check_manifest::<Hello>(&manifest).unwrap();
/// ```
///
/// # Errors
/// A [`Violation`] describing the first mismatch.
pub fn check_manifest<P: Plugin>(manifest_toml: &str) -> Result<Manifest, Violation> {
    let manifest = Manifest::parse(manifest_toml)?;
    let info = P::info();
    if manifest.name != info.name {
        return Err(Violation(format!(
            "manifest name {} != describe {}",
            manifest.name, info.name
        )));
    }
    if manifest.version != info.version {
        return Err(Violation(format!(
            "manifest version {} != describe {}",
            manifest.version, info.version
        )));
    }
    if manifest.wit != WIT_PACKAGE {
        return Err(Violation(format!(
            "manifest wit {} != {WIT_PACKAGE}",
            manifest.wit
        )));
    }
    let declared: BTreeSet<&str> = manifest.hooks.iter().map(String::as_str).collect();
    let described: BTreeSet<&str> = info.hooks.iter().map(|h| h.name()).collect();
    if declared != described {
        return Err(Violation(format!(
            "manifest hooks {declared:?} != describe {described:?}"
        )));
    }
    let declared: BTreeSet<&str> = manifest.brands.iter().map(String::as_str).collect();
    let described: BTreeSet<&str> = info.brands.iter().map(String::as_str).collect();
    if declared != described {
        return Err(Violation(format!(
            "manifest brands {declared:?} != describe {described:?}"
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, log};

    #[test]
    fn config_is_empty_and_logs_go_to_stderr_without_a_host() {
        assert_eq!(config::get("anything"), None);
        log::info("no host installed: printed, not captured");
    }

    #[test]
    fn host_is_restored_after_run_even_on_panic() {
        let host = TestHost::new().with_config("k", "v");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.run(|| panic!("a failing assertion inside a hook call"))
        }));
        assert!(caught.is_err());
        assert_eq!(config::get("k"), None);
    }

    #[test]
    fn log_bounds_match_the_host_and_restart_per_call() {
        let host = TestHost::new();
        host.run(|| {
            for i in 0..40 {
                log::debug(format!("line {i}"));
            }
        });
        assert_eq!(host.logs().len(), MAX_LOG_LINES_PER_CALL);
        assert_eq!(host.dropped_logs(), 40 - MAX_LOG_LINES_PER_CALL);
        host.run(|| log::warn("x".repeat(MAX_LOG_BYTES_PER_CALL + 1)));
        assert_eq!(host.dropped_logs(), 40 - MAX_LOG_LINES_PER_CALL + 1);
        host.run(|| log::error("next call logs again"));
        assert_eq!(host.logs().last().map(|l| l.level), Some(Level::Error));
    }

    #[test]
    fn typed_config_reports_malformed_values_by_key() {
        let host = TestHost::new()
            .with_config("bp", "5_00")
            .with_config("flag", "yes");
        host.run(|| {
            assert_eq!(config::get_i64_or("bp", 1), Ok(500));
            assert_eq!(config::get_i64_or("missing", 7), Ok(7));
            let err = config::get_bool_or("flag", false).expect_err("yes is not a boolean");
            assert!(err.to_string().contains("flag"), "{err}");
        });
    }

    #[test]
    fn builders_compute_totals_and_default_base_points() {
        let order = order("coffee")
            .line("latte", "coffee", 2, 450)
            .excluded_line("gift-card", "gift-card", 1, 5_000)
            .paid_with_points(100)
            .build();
        assert_eq!(order.total_cents, 5_900);
        assert_eq!(order.earning_cents(), Ok(800));
        assert_eq!(order.base_points, 8);
        assert_eq!(order.lines[1].line_id, "l2");
        let big = cart("mall").lines(500, "misc", 100).build();
        assert_eq!(big.lines.len(), 500);
        assert_eq!(big.total_cents, 50_000);
    }

    #[test]
    fn settlement_checks_catch_each_violation() {
        let event = settle_event(SettleKind::PerkRedeemed, "cinema")
            .parties("restaurant", "cinema")
            .value_cents(1_000)
            .build();
        let ok = SettlementLine::new("restaurant", "cinema", 500, "half");
        assert!(check_settlement(&event, std::slice::from_ref(&ok)).is_ok());
        let cases = [
            SettlementLine::new("cinema", "cinema", 1, "self"),
            SettlementLine::new("restaurant", "cinema", 0, "zero"),
            SettlementLine::new("restaurant", "bank", 1, "stranger"),
            SettlementLine::new("restaurant", "cinema", 2_001, "over 2x"),
        ];
        for bad in cases {
            assert!(
                check_settlement(&event, std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn manifest_schema_errors_name_the_key() {
        let err = Manifest::parse("name = \"Bad_Name\"").expect_err("bad name");
        assert!(err.0.contains("kebab"), "{err}");
        let missing_limits =
            "name='a'\nversion='1.0.0'\nwit='x'\ndescription=''\nhooks=[]\nbrands=[]";
        assert!(Manifest::parse(missing_limits)
            .expect_err("no limits")
            .0
            .contains("[limits]"));
    }
}
