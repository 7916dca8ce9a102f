//! Version-independent domain types: what the host builds and receives.
//!
//! These mirror the records of the newest supported WIT package (`coalition:plugin@0.2.0` today);
//! each binding module converts them to and from its own generated types, so the host never sees
//! a generated type and components built against older WIT versions keep working. What a
//! version does not know is projected away before the call (`bindings::Projection`): a 0.1.0
//! component is never given, and its receipt never records, a stored-value balance, pending
//! points, a membership or budgets. Units follow the WIT: money in cents, points in points, time
//! in Unix milliseconds UTC.
//!
//! The serde form is also the canonical serialization hashed into receipts, so field order and
//! names here are part of the receipt format: add fields at the end, never rename.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When, where and with what seed a hook runs: the plugin's only clock and only randomness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// The current time, Unix ms UTC, frozen for the whole call.
    pub now_ms: i64,
    /// The coalition's offset from UTC in minutes (480 for UTC+8), -720..=840.
    pub utc_offset_minutes: i32,
    /// Seed for any pseudo-randomness; recorded in the receipt.
    pub seed: u64,
    /// Brand at whose counter the call happens; empty when the platform calls.
    pub brand: String,
    /// What is left of the budgets in force (0.2.0); a call keeps those that apply to the
    /// called plugin. Absent from the canonical form when empty, so 0.1.0 receipts are
    /// unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetRemaining>,
}

impl Invocation {
    /// An invocation without budgets.
    pub fn new(now_ms: i64, utc_offset_minutes: i32, seed: u64, brand: impl Into<String>) -> Self {
        Invocation {
            now_ms,
            utc_offset_minutes,
            seed,
            brand: brand.into(),
            budgets: Vec::new(),
        }
    }
}

/// What a budget limits (0.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetKind {
    /// Bonus points, points.
    BonusPoints,
    /// Face value of perks redeemed, cents.
    PerkValue,
    /// Value of coupon discounts honoured, cents.
    CouponValue,
}

/// What is left of one budget in its current period (0.2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRemaining {
    /// The funding brand.
    pub brand: String,
    /// What it limits.
    pub kind: BudgetKind,
    /// The plugin the budget names; none when it applies to all the brand's plugins. The host
    /// may pass every budget in force: each plugin is handed only those of its brands that
    /// name it or no plugin (and the WIT's `this-plugin-only` is `plugin.is_some()`).
    pub plugin: Option<String>,
    /// The amount per period, >= 0.
    pub amount: i64,
    /// What is left now, 0..=amount.
    pub remaining: i64,
    /// When the current period ends, Unix ms UTC.
    pub period_ends_ms: i64,
}

/// The member's active paid membership card (0.2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Plan id.
    pub plan: String,
    /// Brand whose plan it is.
    pub brand: String,
    /// Benefit flags, at most 32.
    pub benefits: Vec<String>,
    /// Base-earn multiplier in percent, 100..=500.
    pub points_multiplier_percent: u32,
    /// Lowest tier the card guarantees.
    pub tier_floor: Option<String>,
    /// End of the paid period, Unix ms UTC.
    pub expires_at_ms: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// A member's recent activity at one brand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrandSpend {
    /// Brand id.
    pub brand: String,
    /// Net qualifying spend at this brand in the last 7 days, cents.
    pub spend_7d_cents: i64,
    /// Net qualifying spend at this brand in the last 30 days, cents.
    pub spend_30d_cents: i64,
    /// Purchases at this brand in the last 30 days.
    pub visits_30d: u32,
}

/// The member as a plugin sees them: pseudonymous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberContext {
    /// Stable opaque reference to the member; not personal data.
    pub member_ref: String,
    /// Tier code, for example "gold".
    pub tier: String,
    /// Position of the tier in the ladder, 0 lowest.
    pub tier_rank: u32,
    /// Tags, at most 64.
    pub tags: Vec<String>,
    /// Birthday month 1..=12, when known.
    pub birthday_month: Option<u8>,
    /// Spendable points balance.
    pub points_balance: i64,
    /// Qualifying spend in the tier window, cents.
    pub qualifying_spend_cents: i64,
    /// Recent activity per brand.
    pub spend: Vec<BrandSpend>,
    /// When the member joined, Unix ms UTC.
    pub member_since_ms: i64,
    /// Stored-value balance, cents (0.2.0; absent from the canonical form when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stored_value_cents: i64,
    /// Points pending in a return window (0.2.0; absent when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_points: i64,
    /// The active paid card (0.2.0; absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
}

impl MemberContext {
    /// True when the member carries nothing 0.1.0 does not know.
    pub fn is_v0_1_0(&self) -> bool {
        self.stored_value_cents == 0 && self.pending_points == 0 && self.membership.is_none()
    }

    /// The member as 0.1.0 sees them: the 0.2.0 fields at their neutral values.
    pub fn to_v0_1_0(&self) -> MemberContext {
        MemberContext {
            stored_value_cents: 0,
            pending_points: 0,
            membership: None,
            ..self.clone()
        }
    }
}

/// One line of an order or a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Unique within its order.
    pub line_id: String,
    /// The brand's stock-keeping unit.
    pub sku: String,
    /// Product category.
    pub category: String,
    /// Units, 1..=10000.
    pub quantity: u32,
    /// Price of one unit, cents, 0..=100_000_000.
    pub unit_price_cents: i64,
    /// Excluded from earning points (gift cards, delivery fees).
    pub excluded: bool,
}

impl OrderLine {
    /// quantity × unit price, cents; `None` on overflow (impossible within the WIT ranges).
    pub fn amount_cents(&self) -> Option<i64> {
        self.unit_price_cents.checked_mul(i64::from(self.quantity))
    }
}

/// A purchase being recorded at a brand's counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The brand's order id.
    pub order_id: String,
    /// Brand where the purchase happens.
    pub brand: String,
    /// The lines, 1..=500.
    pub lines: Vec<OrderLine>,
    /// Sum of quantity × unit price, cents.
    pub total_cents: i64,
    /// Part of the total paid with points, cents.
    pub paid_with_points_cents: i64,
    /// Points of the host's base earn rule, before bonuses.
    pub base_points: i64,
}

/// Extra points a plugin proposes for a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bonus {
    /// Bonus points, > 0.
    pub points: i64,
    /// Stable machine code, 1..=64 bytes.
    pub code: String,
    /// Reason shown to the member, 1..=200 bytes.
    pub reason: String,
}

/// What a perk grants when redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// A coupon from the named template.
    Coupon(String),
    /// A free item, by sku.
    FreeItem(String),
    /// A fixed discount on the next purchase at the honouring brand, cents, > 0.
    DiscountCents(i64),
}

/// A perk a member may see and redeem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perk {
    /// Unique within the plugin, 1..=64 bytes.
    pub id: String,
    /// Short title, 1..=120 bytes.
    pub title: String,
    /// Longer description, 0..=1000 bytes.
    pub description: String,
    /// Brand that pays for the perk.
    pub funding_brand: String,
    /// Brand that hands it over.
    pub honouring_brand: String,
    /// Points the member pays, >= 0.
    pub cost_points: i64,
    /// Face value, cents, >= 0.
    pub value_cents: i64,
    /// What the member receives.
    pub grant: Grant,
    /// Last moment it can be redeemed, Unix ms UTC.
    pub valid_until_ms: Option<i64>,
}

/// A member's request to redeem a perk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemRequest {
    /// The perk id, as listed.
    pub perk_id: String,
    /// Idempotency key of the redemption.
    pub redemption_id: String,
}

/// The plugin's verdict on a redemption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedeemDecision {
    /// Redeem it, as this perk.
    Granted(Perk),
    /// Refuse it, with a reason for the member.
    Refused(String),
}

/// A coupon presented at a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// The coupon's code.
    pub code: String,
    /// Template the coupon was issued from.
    pub template_id: String,
    /// Brand that funds the coupon.
    pub funding_brand: String,
    /// Template parameters, in the order the platform set them.
    pub params: Vec<(String, String)>,
}

/// A cart at a brand's counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Brand id of the counter.
    pub brand: String,
    /// The lines, 1..=500.
    pub lines: Vec<OrderLine>,
    /// Sum of quantity × unit price, cents.
    pub total_cents: i64,
    /// Templates of coupons already applied, in order.
    pub applied_templates: Vec<String>,
}

/// A discount on one cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    /// The line, by `OrderLine::line_id`.
    pub line_id: String,
    /// Discount, cents, 0..=the line's amount.
    pub discount_cents: i64,
}

/// The plugin's verdict on a coupon for a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CouponDecision {
    /// Apply these discounts, at most one per line.
    Applied(Vec<LineDiscount>),
    /// The coupon does not apply, with a reason for the counter.
    Rejected(String),
}

/// What kind of money-relevant event is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettleKind {
    /// Points were issued by the brand.
    PointsIssued,
    /// Points were spent as payment at the brand's counter.
    PointsRedeemed,
    /// A perk was redeemed.
    PerkRedeemed,
    /// A coupon was honoured.
    CouponHonoured,
    /// A refund reversed an earlier event.
    Refund,
    /// Stored value held by the funding brand spent at the honouring brand (0.2.0).
    StoredValueRedeemed,
    /// A membership fee of the honouring brand's plan collected by the funding brand (0.2.0).
    MembershipFee,
}

impl SettleKind {
    /// True for the kinds `coalition:plugin@0.1.0` has.
    pub fn in_v0_1_0(self) -> bool {
        !matches!(
            self,
            SettleKind::StoredValueRedeemed | SettleKind::MembershipFee
        )
    }
}

/// A money-relevant event to settle between brands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleEvent {
    /// Unique event id.
    pub event_id: String,
    /// What happened.
    pub kind: SettleKind,
    /// Brand where it happened.
    pub brand: String,
    /// Brand that funds it.
    pub funding_brand: String,
    /// Brand that honours it.
    pub honouring_brand: String,
    /// Perk or coupon template involved.
    pub reference: Option<String>,
    /// Points involved, >= 0.
    pub points: i64,
    /// Face value, cents, >= 0; lines may move at most twice this.
    pub value_cents: i64,
    /// When it happened, Unix ms UTC.
    pub occurred_at_ms: i64,
}

/// One transfer owed between two parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLine {
    /// Party that pays: a brand of the event, or "platform".
    pub payer: String,
    /// Party that receives: a brand of the event, or "platform".
    pub payee: String,
    /// Amount, cents, > 0.
    pub amount_cents: i64,
    /// Why, 1..=200 bytes.
    pub reason: String,
}

/// The party name settlement lines use for the platform operator.
pub const PLATFORM_PARTY: &str = "platform";

/// A hook a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Bonus points for a purchase.
    PointsBonus,
    /// Perks a member may see.
    ListPerks,
    /// Validate a redemption.
    RedeemPerk,
    /// Apply a coupon to a cart.
    ApplyCoupon,
    /// Settlement lines for an event.
    Settle,
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 5] = [
        Hook::PointsBonus,
        Hook::ListPerks,
        Hook::RedeemPerk,
        Hook::ApplyCoupon,
        Hook::Settle,
    ];

    /// The WIT (and manifest) name, for example "points-bonus".
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::PointsBonus => "points-bonus",
            Hook::ListPerks => "list-perks",
            Hook::RedeemPerk => "redeem-perk",
            Hook::ApplyCoupon => "apply-coupon",
            Hook::Settle => "settle",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Hook {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Hook::ALL.iter().map(|h| h.as_str()).collect();
                format!("unknown hook `{s}` (known: {})", known.join(", "))
            })
    }
}

/// What a plugin says about itself in `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Plugin name, kebab-case.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// Hooks it implements.
    pub hooks: Vec<Hook>,
    /// Brands it involves.
    pub brands: Vec<String>,
}

/// A plugin's own error from a hook (not a trap): never a refusal, refusals are decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookFailure {
    /// The input does not make sense to the plugin.
    InvalidInput(String),
    /// The plugin failed.
    Failed(String),
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookFailure::InvalidInput(reason) => write!(f, "invalid input: {reason}"),
            HookFailure::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// Severity of a plugin log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// A log line a plugin wrote during a call (kept within the per-call log budget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// The message as the plugin wrote it.
    pub message: String,
}

/// The arguments of one hook call, besides invocation and config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookInput {
    /// `points-bonus(member, order)`.
    PointsBonus {
        /// The member.
        member: MemberContext,
        /// The purchase.
        order: Order,
    },
    /// `list-perks(member)`.
    ListPerks {
        /// The member.
        member: MemberContext,
    },
    /// `redeem-perk(member, request)`.
    RedeemPerk {
        /// The member.
        member: MemberContext,
        /// The redemption.
        request: RedeemRequest,
    },
    /// `apply-coupon(coupon, cart)`.
    ApplyCoupon {
        /// The coupon presented.
        coupon: Coupon,
        /// The cart.
        cart: Cart,
    },
    /// `settle(event)`.
    Settle {
        /// The event.
        event: SettleEvent,
    },
}

impl HookInput {
    /// The hook these arguments are for.
    pub fn hook(&self) -> Hook {
        match self {
            HookInput::PointsBonus { .. } => Hook::PointsBonus,
            HookInput::ListPerks { .. } => Hook::ListPerks,
            HookInput::RedeemPerk { .. } => Hook::RedeemPerk,
            HookInput::ApplyCoupon { .. } => Hook::ApplyCoupon,
            HookInput::Settle { .. } => Hook::Settle,
        }
    }
}

/// The decision of one hook call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookOutput {
    /// From `points-bonus`.
    PointsBonus(Vec<Bonus>),
    /// From `list-perks`.
    ListPerks(Vec<Perk>),
    /// From `redeem-perk`.
    RedeemPerk(RedeemDecision),
    /// From `apply-coupon`.
    ApplyCoupon(CouponDecision),
    /// From `settle`.
    Settle(Vec<SettlementLine>),
}

impl HookOutput {
    /// The hook this decision came from.
    pub fn hook(&self) -> Hook {
        match self {
            HookOutput::PointsBonus(_) => Hook::PointsBonus,
            HookOutput::ListPerks(_) => Hook::ListPerks,
            HookOutput::RedeemPerk(_) => Hook::RedeemPerk,
            HookOutput::ApplyCoupon(_) => Hook::ApplyCoupon,
            HookOutput::Settle(_) => Hook::Settle,
        }
    }
}

/// Admin-set configuration values of a plugin, by key (sorted, so it serializes canonically).
pub type Config = BTreeMap<String, String>;

/// Everything one call depends on: hashed into its receipt and enough to replay it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInput {
    /// Time, offset, seed and brand of the call.
    pub invocation: Invocation,
    /// The effective configuration the `config` import answered from (defaults applied).
    pub config: Config,
    /// The hook and its arguments.
    pub input: HookInput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_round_trip_and_match_serde() {
        for hook in Hook::ALL {
            assert_eq!(hook.as_str().parse::<Hook>(), Ok(hook));
            let json = serde_json::to_string(&hook).expect("serialize");
            assert_eq!(json, format!("\"{}\"", hook.as_str()));
        }
        assert!("points_bonus".parse::<Hook>().is_err());
    }
}
