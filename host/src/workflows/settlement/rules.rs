//! The platform's own settlement rules (used where no plugin governs an event), the `[settlement]`
//! configuration, and the pure functions that turn an event into lines. Pure, so the
//! reconciliation recomputes platform lines from the stored event and rates bit for bit.

use serde::{Deserialize, Serialize};

use crate::ledger::outbox::EventKind;

/// Largest accepted rate per 100 points, cents: 100.00 per point is already absurd.
const MAX_RATE_CENTS_PER_100_POINTS: i64 = 1_000_000;
/// Basis points in a whole.
pub const BASIS_POINTS: i64 = 10_000;
/// Shortest interval between settlement runs, so a misconfiguration cannot spin the database.
const MIN_RUN_INTERVAL_MS: u64 = 1_000;
/// The party name of the platform operator in lines and statements.
pub const PLATFORM: &str = coalition_runtime::model::PLATFORM_PARTY;

/// The `[settlement]` configuration section: the platform's default rules and the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementConfig {
    /// A brand pays the platform this many cents per 100 points it issues (rounded down per
    /// event), unless a plugin governs its issuance.
    pub issue_rate_cents_per_100_points: i64,
    /// The platform pays a brand this many cents per 100 points redeemed at its counter.
    pub redeem_rate_cents_per_100_points: i64,
    /// Platform commission in basis points: on points redeemed (paid by the redeeming brand)
    /// and on perks and coupons (paid by the funding brand), rounded down.
    pub commission_bp: i64,
    /// How often `coalition serve` settles pending and held events (when `[jobs] enabled`).
    pub run_interval_ms: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            issue_rate_cents_per_100_points: 100,
            redeem_rate_cents_per_100_points: 100,
            commission_bp: 500,
            run_interval_ms: 60 * 1000,
        }
    }
}

impl SettlementConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, rate) in [
            (
                "issue_rate_cents_per_100_points",
                self.issue_rate_cents_per_100_points,
            ),
            (
                "redeem_rate_cents_per_100_points",
                self.redeem_rate_cents_per_100_points,
            ),
        ] {
            anyhow::ensure!(
                (0..=MAX_RATE_CENTS_PER_100_POINTS).contains(&rate),
                "settlement.{name} must be within 0..={MAX_RATE_CENTS_PER_100_POINTS}"
            );
        }
        anyhow::ensure!(
            (0..=BASIS_POINTS).contains(&self.commission_bp),
            "settlement.commission_bp must be within 0..={BASIS_POINTS}"
        );
        anyhow::ensure!(
            self.run_interval_ms >= MIN_RUN_INTERVAL_MS,
            "settlement.run_interval_ms must be at least {MIN_RUN_INTERVAL_MS}"
        );
        Ok(())
    }

    /// The rates a platform rule uses, as stored beside its lines.
    pub fn params(&self) -> Params {
        Params {
            issue_rate_cents_per_100_points: self.issue_rate_cents_per_100_points,
            redeem_rate_cents_per_100_points: self.redeem_rate_cents_per_100_points,
            commission_bp: self.commission_bp,
        }
    }
}

/// The rates one platform-governed event was settled with (stored as canonical JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// See [`SettlementConfig::issue_rate_cents_per_100_points`].
    pub issue_rate_cents_per_100_points: i64,
    /// See [`SettlementConfig::redeem_rate_cents_per_100_points`].
    pub redeem_rate_cents_per_100_points: i64,
    /// See [`SettlementConfig::commission_bp`].
    pub commission_bp: i64,
}

/// A line as a rule produces it, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Who pays.
    pub payer: String,
    /// Who receives.
    pub payee: String,
    /// Cents, > 0.
    pub amount_cents: i64,
    /// Why.
    pub reason: String,
    /// `points`, `perk`, `coupon`, `stored-value`, `commission` or `refund`.
    pub category: String,
    /// Platform reversals: the line reversed.
    pub original_line_id: Option<String>,
}

/// The event fields the rules read.
#[derive(Debug, Clone)]
pub struct EventFacts {
    /// Event id.
    pub id: String,
    /// Kind.
    pub kind: EventKind,
    /// Where it happened.
    pub brand: String,
    /// Who funds it.
    pub funding_brand: String,
    /// Who honours it.
    pub honouring_brand: String,
    /// Perk or coupon template (refunds: the kind reversed).
    pub reference: Option<String>,
    /// Points.
    pub points: i64,
    /// Face value, cents.
    pub value_cents: i64,
}

/// A stored line of the event a refund reverses.
#[derive(Debug, Clone)]
pub struct OriginalLine {
    /// Line id.
    pub id: String,
    /// Who paid.
    pub payer: String,
    /// Who received.
    pub payee: String,
    /// Cents.
    pub amount_cents: i64,
    /// Category.
    pub category: String,
}

/// The category of a line a plugin proposed: commission when it pays the platform (or a
/// refund pays it back) and says so; else by the event's kind.
pub fn plugin_category(kind: EventKind, payer: &str, payee: &str, reason: &str) -> String {
    let platform_side = payer == PLATFORM || payee == PLATFORM;
    if platform_side && reason.to_ascii_lowercase().contains("commission") {
        return "commission".into();
    }
    kind_category(kind).into()
}

fn kind_category(kind: EventKind) -> &'static str {
    match kind {
        EventKind::PointsIssued | EventKind::PointsRedeemed => "points",
        EventKind::PerkRedeemed => "perk",
        EventKind::CouponHonoured => "coupon",
        EventKind::Refund => "refund",
        EventKind::StoredValueRedeemed => "stored-value",
        EventKind::MembershipFee => "membership-fee",
    }
}

/// `amount * numerator / denominator`, rounded down, without overflow (None if it would not fit).
fn mul_div(amount: i64, numerator: i64, denominator: i64) -> Option<i64> {
    if denominator <= 0 {
        return None;
    }
    i64::try_from(i128::from(amount) * i128::from(numerator) / i128::from(denominator)).ok()
}

fn push(lines: &mut Vec<Line>, payer: &str, payee: &str, amount: i64, reason: String, cat: &str) {
    if amount > 0 && payer != payee {
        lines.push(Line {
            payer: payer.to_owned(),
            payee: payee.to_owned(),
            amount_cents: amount,
            reason,
            category: cat.to_owned(),
            original_line_id: None,
        });
    }
}

/// The platform rule's name for an event (stored as `platform:<name>`).
pub fn platform_rule(event: &EventFacts, reversing: bool) -> &'static str {
    if reversing {
        return "platform:reversal";
    }
    match event.kind {
        EventKind::PointsIssued => "platform:issue",
        EventKind::PointsRedeemed => "platform:redeem",
        EventKind::PerkRedeemed => "platform:perk",
        EventKind::CouponHonoured => "platform:coupon",
        EventKind::Refund => "platform:refund",
        EventKind::StoredValueRedeemed => "platform:stored-value",
        EventKind::MembershipFee => "platform:membership-fee",
    }
}

/// Lines of an event under the platform's default rules (not for reversals, see [`reverse`]).
/// None when an amount does not fit in 64 bits (the event is then held).
pub fn platform_lines(event: &EventFacts, p: &Params) -> Option<Vec<Line>> {
    let mut lines = Vec::new();
    let b = event.brand.as_str();
    match event.kind {
        EventKind::PointsIssued => {
            let fee = mul_div(event.points, p.issue_rate_cents_per_100_points, 100)?;
            push(
                &mut lines,
                b,
                PLATFORM,
                fee,
                format!("{} points issued at {b}", event.points),
                "points",
            );
        }
        EventKind::PointsRedeemed => {
            let paid = mul_div(event.points, p.redeem_rate_cents_per_100_points, 100)?;
            push(
                &mut lines,
                PLATFORM,
                b,
                paid,
                format!("{} points redeemed at {b}", event.points),
                "points",
            );
            let commission = mul_div(paid, p.commission_bp, BASIS_POINTS)?;
            push(
                &mut lines,
                b,
                PLATFORM,
                commission,
                format!("commission on {} points redeemed at {b}", event.points),
                "commission",
            );
        }
        EventKind::PerkRedeemed | EventKind::CouponHonoured => {
            let what = if event.kind == EventKind::PerkRedeemed {
                "perk"
            } else {
                "coupon"
            };
            let reference = event.reference.as_deref().unwrap_or("-");
            let funding = event.funding_brand.as_str();
            let honouring = event.honouring_brand.as_str();
            push(
                &mut lines,
                funding,
                honouring,
                event.value_cents,
                format!("{what} {reference} honoured by {honouring}"),
                what,
            );
            let commission = mul_div(event.value_cents, p.commission_bp, BASIS_POINTS)?;
            push(
                &mut lines,
                funding,
                PLATFORM,
                commission,
                format!("commission on {what} {reference}"),
                "commission",
            );
        }
        // The brand that took the money at the top-up pays the brand that accepted it as
        // payment, at face value and without commission: the money was the member's, the
        // platform earned nothing on its way.
        EventKind::StoredValueRedeemed => {
            let funding = event.funding_brand.as_str();
            let honouring = event.honouring_brand.as_str();
            push(
                &mut lines,
                funding,
                honouring,
                event.value_cents,
                format!("stored value held by {funding} spent at {honouring}"),
                "stored-value",
            );
        }
        // The brand that sold a card for another brand's plan took the fee at its counter and
        // passes it on to the plan's owner, at face value and without commission.
        EventKind::MembershipFee => {
            let seller = event.funding_brand.as_str();
            let owner = event.honouring_brand.as_str();
            let plan = event.reference.as_deref().unwrap_or("-");
            push(
                &mut lines,
                seller,
                owner,
                event.value_cents,
                format!("membership fee of plan {plan} sold by {seller} for {owner}"),
                "membership-fee",
            );
        }
        // A refund that reverses no known event moves nothing under the platform's rules: there
        // is nothing to reverse (a plugin may still govern it).
        EventKind::Refund => {}
    }
    Some(lines)
}

/// Lines of a refund reversing a platform-settled event: every original line in the opposite
/// direction, proportionally to the points (or value) refunded. `before` is what earlier
/// refunds of the same event reversed; amounts are cumulative differences of rounded-down
/// shares, so any number of partial refunds never reverse more than the original and a full
/// refund reverses it exactly.
pub fn reverse(
    refund: &EventFacts,
    original: &EventFacts,
    original_lines: &[OriginalLine],
    before: i64,
) -> Option<Vec<Line>> {
    let (basis, this) = if original.points > 0 {
        (original.points, refund.points)
    } else {
        (original.value_cents, refund.value_cents)
    };
    if basis <= 0 {
        return Some(Vec::new());
    }
    let done = before.clamp(0, basis);
    let upto = before.saturating_add(this).clamp(0, basis);
    let mut lines = Vec::new();
    for line in original_lines {
        let amount =
            mul_div(line.amount_cents, upto, basis)? - mul_div(line.amount_cents, done, basis)?;
        if amount > 0 {
            lines.push(Line {
                payer: line.payee.clone(),
                payee: line.payer.clone(),
                amount_cents: amount,
                reason: format!(
                    "refund of {this} of {basis} {}: reverses line {}",
                    if original.points > 0 {
                        "points"
                    } else {
                        "cents"
                    },
                    line.id
                ),
                category: line.category.clone(),
                original_line_id: Some(line.id.clone()),
            });
        }
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, points: i64, value: i64) -> EventFacts {
        EventFacts {
            id: "e".into(),
            kind,
            brand: "cafe".into(),
            funding_brand: "cafe".into(),
            honouring_brand: "cafe".into(),
            reference: None,
            points,
            value_cents: value,
        }
    }

    #[test]
    fn default_rules_price_points_and_commission() {
        let p = SettlementConfig::default().params();
        let issued = platform_lines(&event(EventKind::PointsIssued, 250, 250), &p).expect("fits");
        assert_eq!(issued.len(), 1);
        assert_eq!(
            (issued[0].payer.as_str(), issued[0].amount_cents),
            ("cafe", 250)
        );
        let redeemed =
            platform_lines(&event(EventKind::PointsRedeemed, 1_000, 1_000), &p).expect("fits");
        assert_eq!(redeemed[0].payer, PLATFORM);
        assert_eq!(redeemed[0].amount_cents, 1_000);
        assert_eq!(redeemed[1].category, "commission");
        assert_eq!(redeemed[1].amount_cents, 50);
    }

    #[test]
    fn partial_refunds_never_reverse_more_than_the_original() {
        let original = event(EventKind::PointsIssued, 3, 3);
        let lines = vec![OriginalLine {
            id: "l1".into(),
            payer: "cafe".into(),
            payee: PLATFORM.into(),
            amount_cents: 10,
            category: "points".into(),
        }];
        let mut total = 0;
        for before in 0..3 {
            let refund = event(EventKind::Refund, 1, 1);
            let out = reverse(&refund, &original, &lines, before).expect("fits");
            total += out.iter().map(|l| l.amount_cents).sum::<i64>();
            assert!(out.iter().all(|l| l.payer == PLATFORM && l.payee == "cafe"));
        }
        assert_eq!(total, 10, "three thirds reverse exactly the whole");
        let extra = reverse(&event(EventKind::Refund, 1, 1), &original, &lines, 3).expect("fits");
        assert!(extra.is_empty(), "nothing left to reverse");
    }
}
