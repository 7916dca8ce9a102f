//! Hard invariants every decision must meet before the host may use it.
//!
//! Plugins propose, the host commits: a decision that breaks any rule here is discarded whole
//! and reported as `InvariantViolation` (or `OutputTooLarge` for size rules) against the plugin.
//! All arithmetic is checked: a plugin cannot overflow its way past a cap.

use std::collections::{HashMap, HashSet};

use crate::limits::{
    MAX_BONUSES, MAX_BONUS_MULTIPLE_OF_BASE, MAX_BONUS_POINTS_PER_ORDER, MAX_PERKS,
    MAX_SETTLEMENT_LINES,
};
use crate::model::{
    Bonus, Cart, CouponDecision, Grant, HookOutput, Invocation, Order, Perk, RedeemDecision,
    RedeemRequest, SettleEvent, SettlementLine, PLATFORM_PARTY,
};
use crate::plugin::HookArgs;

/// Longest machine code (bonus code, perk id, template, sku, brand), bytes (per the WIT).
pub const MAX_CODE_BYTES: usize = 64;
/// Longest reason shown to a member or on a statement, bytes (per the WIT).
pub const MAX_REASON_BYTES: usize = 200;
/// Longest perk title, bytes (per the WIT).
pub const MAX_TITLE_BYTES: usize = 120;
/// Longest perk description, bytes (per the WIT).
pub const MAX_DESCRIPTION_BYTES: usize = 1000;

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Too many items or too long a string.
    TooLarge(String),
    /// A rule of the contract is broken.
    Invariant(String),
}

type Checked = Result<(), Violation>;

fn rule(ok: bool, detail: impl FnOnce() -> String) -> Checked {
    if ok {
        Ok(())
    } else {
        Err(Violation::Invariant(detail()))
    }
}

fn text(field: &str, value: &str, min: usize, max: usize) -> Checked {
    if value.len() > max {
        return Err(Violation::TooLarge(format!(
            "{field} is {} bytes, more than {max}",
            value.len()
        )));
    }
    rule(value.len() >= min, || format!("{field} is empty"))
}

fn count(what: &str, n: usize, max: usize) -> Checked {
    if n > max {
        return Err(Violation::TooLarge(format!("{n} {what}, more than {max}")));
    }
    Ok(())
}

/// Checks a decision against the input it answers. `brands` are the plugin's declared brands:
/// a plugin may only fund and honour perks for brands its manifest names.
pub fn check(
    output: &HookOutput,
    args: &HookArgs<'_>,
    invocation: &Invocation,
    brands: &[String],
) -> Checked {
    match (output, args) {
        (HookOutput::PointsBonus(bonuses), HookArgs::PointsBonus { order, .. }) => {
            check_bonuses(bonuses, order)
        }
        (HookOutput::ListPerks(perks), HookArgs::ListPerks { .. }) => {
            check_perks(perks, invocation, brands)
        }
        (HookOutput::RedeemPerk(decision), HookArgs::RedeemPerk { request, .. }) => {
            check_redeem(decision, request, invocation, brands)
        }
        (HookOutput::ApplyCoupon(decision), HookArgs::ApplyCoupon { cart, .. }) => {
            check_coupon(decision, cart)
        }
        (HookOutput::Settle(lines), HookArgs::Settle { event }) => check_settlement(lines, event),
        (output, args) => Err(Violation::Invariant(format!(
            "a {} decision answers a {} call",
            output.hook(),
            args.hook()
        ))),
    }
}

/// Each bonus positive; the sum within 10× base points and the platform cap.
pub fn check_bonuses(bonuses: &[Bonus], order: &Order) -> Checked {
    count("bonuses", bonuses.len(), MAX_BONUSES)?;
    let mut total: i64 = 0;
    for (i, bonus) in bonuses.iter().enumerate() {
        text(&format!("bonus[{i}].code"), &bonus.code, 1, MAX_CODE_BYTES)?;
        text(
            &format!("bonus[{i}].reason"),
            &bonus.reason,
            1,
            MAX_REASON_BYTES,
        )?;
        rule(bonus.points > 0, || {
            format!(
                "bonus[{i}] `{}` has {} points; must be > 0",
                bonus.code, bonus.points
            )
        })?;
        total = total
            .checked_add(bonus.points)
            .ok_or_else(|| Violation::Invariant("bonus points overflow".to_string()))?;
    }
    let cap = order
        .base_points
        .max(0)
        .saturating_mul(MAX_BONUS_MULTIPLE_OF_BASE)
        .min(MAX_BONUS_POINTS_PER_ORDER);
    rule(total <= cap, || {
        format!(
            "bonuses total {total} points, more than the cap of {cap} \
             ({MAX_BONUS_MULTIPLE_OF_BASE}x base points {}, at most {MAX_BONUS_POINTS_PER_ORDER})",
            order.base_points
        )
    })
}

fn check_perk(at: &str, perk: &Perk, invocation: &Invocation, brands: &[String]) -> Checked {
    text(&format!("{at}.id"), &perk.id, 1, MAX_CODE_BYTES)?;
    text(&format!("{at}.title"), &perk.title, 1, MAX_TITLE_BYTES)?;
    text(
        &format!("{at}.description"),
        &perk.description,
        0,
        MAX_DESCRIPTION_BYTES,
    )?;
    text(
        &format!("{at}.funding_brand"),
        &perk.funding_brand,
        1,
        MAX_CODE_BYTES,
    )?;
    text(
        &format!("{at}.honouring_brand"),
        &perk.honouring_brand,
        1,
        MAX_CODE_BYTES,
    )?;
    for (role, brand) in [
        ("funding", &perk.funding_brand),
        ("honouring", &perk.honouring_brand),
    ] {
        rule(brands.contains(brand), || {
            format!(
                "{at} `{}` names {role} brand `{brand}`, which the manifest does not list ({})",
                perk.id,
                brands.join(", ")
            )
        })?;
    }
    rule(perk.cost_points >= 0, || {
        format!(
            "{at} `{}` costs {} points; must be >= 0",
            perk.id, perk.cost_points
        )
    })?;
    rule(perk.value_cents >= 0, || {
        format!(
            "{at} `{}` is worth {} cents; must be >= 0",
            perk.id, perk.value_cents
        )
    })?;
    match &perk.grant {
        Grant::Coupon(template) => {
            text(&format!("{at}.grant.coupon"), template, 1, MAX_CODE_BYTES)?
        }
        Grant::FreeItem(sku) => text(&format!("{at}.grant.free-item"), sku, 1, MAX_CODE_BYTES)?,
        Grant::DiscountCents(cents) => rule(*cents > 0, || {
            format!(
                "{at} `{}` grants a discount of {cents} cents; must be > 0",
                perk.id
            )
        })?,
    }
    if let Some(until) = perk.valid_until_ms {
        rule(until >= invocation.now_ms, || {
            format!(
                "{at} `{}` expired at {until}, before now ({})",
                perk.id, invocation.now_ms
            )
        })?;
    }
    Ok(())
}

/// At most 100 perks, unique ids, each perk well-formed and funded by declared brands.
pub fn check_perks(perks: &[Perk], invocation: &Invocation, brands: &[String]) -> Checked {
    count("perks", perks.len(), MAX_PERKS)?;
    let mut ids = HashSet::with_capacity(perks.len());
    for (i, perk) in perks.iter().enumerate() {
        check_perk(&format!("perk[{i}]"), perk, invocation, brands)?;
        rule(ids.insert(perk.id.as_str()), || {
            format!("perk id `{}` appears twice", perk.id)
        })?;
    }
    Ok(())
}

/// A granted perk is the one requested and well-formed; a refusal has a reason.
pub fn check_redeem(
    decision: &RedeemDecision,
    request: &RedeemRequest,
    invocation: &Invocation,
    brands: &[String],
) -> Checked {
    match decision {
        RedeemDecision::Granted(perk) => {
            check_perk("granted perk", perk, invocation, brands)?;
            rule(perk.id == request.perk_id, || {
                format!(
                    "granted perk `{}` but `{}` was requested",
                    perk.id, request.perk_id
                )
            })
        }
        RedeemDecision::Refused(reason) => text("refusal reason", reason, 1, MAX_REASON_BYTES),
    }
}

/// Discounts name known lines, each at most once, within 0..=quantity × unit price.
pub fn check_coupon(decision: &CouponDecision, cart: &Cart) -> Checked {
    let discounts = match decision {
        CouponDecision::Rejected(reason) => {
            return text("rejection reason", reason, 1, MAX_REASON_BYTES)
        }
        CouponDecision::Applied(discounts) => discounts,
    };
    count("line discounts", discounts.len(), cart.lines.len())?;
    let lines: HashMap<&str, &crate::model::OrderLine> =
        cart.lines.iter().map(|l| (l.line_id.as_str(), l)).collect();
    let mut seen = HashSet::with_capacity(discounts.len());
    for d in discounts {
        let line = lines.get(d.line_id.as_str()).ok_or_else(|| {
            Violation::Invariant(format!("discount names unknown line `{}`", d.line_id))
        })?;
        rule(seen.insert(d.line_id.as_str()), || {
            format!("line `{}` is discounted twice", d.line_id)
        })?;
        let amount = line.amount_cents().ok_or_else(|| {
            Violation::Invariant(format!("line `{}` amount overflows", d.line_id))
        })?;
        rule(d.discount_cents >= 0, || {
            format!(
                "line `{}` discount {} cents is negative",
                d.line_id, d.discount_cents
            )
        })?;
        rule(d.discount_cents <= amount, || {
            format!(
                "line `{}` discount {} cents exceeds the line amount {amount} cents",
                d.line_id, d.discount_cents
            )
        })?;
    }
    Ok(())
}

/// At most 16 lines; positive amounts between distinct parties of the event (or the platform);
/// in total at most twice the event's value.
pub fn check_settlement(lines: &[SettlementLine], event: &SettleEvent) -> Checked {
    count("settlement lines", lines.len(), MAX_SETTLEMENT_LINES)?;
    let parties = [
        event.brand.as_str(),
        event.funding_brand.as_str(),
        event.honouring_brand.as_str(),
        PLATFORM_PARTY,
    ];
    let mut total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        text(
            &format!("line[{i}].reason"),
            &line.reason,
            1,
            MAX_REASON_BYTES,
        )?;
        rule(line.amount_cents > 0, || {
            format!("line[{i}] moves {} cents; must be > 0", line.amount_cents)
        })?;
        rule(line.payer != line.payee, || {
            format!("line[{i}] has `{}` paying itself", line.payer)
        })?;
        for (role, party) in [("payer", &line.payer), ("payee", &line.payee)] {
            rule(parties.contains(&party.as_str()), || {
                format!(
                    "line[{i}] {role} `{party}` is not a party of event `{}` ({})",
                    event.event_id,
                    parties.join(", ")
                )
            })?;
        }
        total = total
            .checked_add(line.amount_cents)
            .ok_or_else(|| Violation::Invariant("settlement total overflows".to_string()))?;
    }
    let cap = event.value_cents.max(0).saturating_mul(2);
    rule(total <= cap, || {
        format!(
            "lines move {total} cents in total, more than twice the event value ({} cents)",
            event.value_cents
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LineDiscount, OrderLine, SettleKind};

    fn inv() -> Invocation {
        Invocation {
            now_ms: 1_000,
            utc_offset_minutes: 0,
            seed: 0,
            brand: "coffee".into(),
            budgets: Vec::new(),
        }
    }

    fn line(id: &str, quantity: u32, unit_price_cents: i64) -> OrderLine {
        OrderLine {
            line_id: id.into(),
            sku: "sku".into(),
            category: "coffee".into(),
            quantity,
            unit_price_cents,
            excluded: false,
        }
    }

    fn order(base_points: i64) -> Order {
        Order {
            order_id: "o1".into(),
            brand: "coffee".into(),
            lines: vec![line("l1", 1, 500)],
            total_cents: 500,
            paid_with_points_cents: 0,
            base_points,
        }
    }

    fn bonus(points: i64) -> Bonus {
        Bonus {
            points,
            code: "x2".into(),
            reason: "Monday".into(),
        }
    }

    fn perk(id: &str) -> Perk {
        Perk {
            id: id.into(),
            title: "Free popcorn".into(),
            description: String::new(),
            funding_brand: "coffee".into(),
            honouring_brand: "cinema".into(),
            cost_points: 0,
            value_cents: 300,
            grant: Grant::FreeItem("popcorn".into()),
            valid_until_ms: None,
        }
    }

    fn brands() -> Vec<String> {
        vec!["coffee".into(), "cinema".into()]
    }

    fn is_invariant(r: Checked) -> bool {
        matches!(r, Err(Violation::Invariant(_)))
    }

    fn is_too_large(r: Checked) -> bool {
        matches!(r, Err(Violation::TooLarge(_)))
    }

    #[test]
    fn bonuses() {
        assert_eq!(check_bonuses(&[bonus(50), bonus(50)], &order(10)), Ok(()));
        assert!(is_invariant(check_bonuses(&[bonus(0)], &order(10))));
        assert!(is_invariant(check_bonuses(&[bonus(-5)], &order(10))));
        assert!(
            is_invariant(check_bonuses(&[bonus(101)], &order(10))),
            "over 10x base"
        );
        assert!(
            is_invariant(check_bonuses(&[bonus(1)], &order(0))),
            "no base, no bonus"
        );
        assert!(
            is_invariant(check_bonuses(
                &[bonus(i64::MAX), bonus(i64::MAX)],
                &order(i64::MAX)
            )),
            "overflow is caught"
        );
        assert!(
            is_invariant(check_bonuses(
                &[bonus(MAX_BONUS_POINTS_PER_ORDER + 1)],
                &order(i64::MAX)
            )),
            "platform cap"
        );
        assert!(is_too_large(check_bonuses(
            &vec![bonus(1); MAX_BONUSES + 1],
            &order(1000)
        )));
        let mut empty_code = bonus(1);
        empty_code.code.clear();
        assert!(is_invariant(check_bonuses(&[empty_code], &order(10))));
        let mut long_reason = bonus(1);
        long_reason.reason = "r".repeat(MAX_REASON_BYTES + 1);
        assert!(is_too_large(check_bonuses(&[long_reason], &order(10))));
    }

    #[test]
    fn perks() {
        assert_eq!(
            check_perks(&[perk("a"), perk("b")], &inv(), &brands()),
            Ok(())
        );
        assert!(is_invariant(check_perks(
            &[perk("a"), perk("a")],
            &inv(),
            &brands()
        )));
        assert!(is_too_large(check_perks(
            &(0..=MAX_PERKS)
                .map(|i| perk(&i.to_string()))
                .collect::<Vec<_>>(),
            &inv(),
            &brands()
        )));
        let mut p = perk("a");
        p.cost_points = -1;
        assert!(is_invariant(check_perks(&[p], &inv(), &brands())));
        let mut p = perk("a");
        p.value_cents = -1;
        assert!(is_invariant(check_perks(&[p], &inv(), &brands())));
        let mut p = perk("a");
        p.funding_brand.clear();
        assert!(is_invariant(check_perks(&[p], &inv(), &brands())));
        let mut p = perk("a");
        p.funding_brand = "parking".into();
        assert!(
            is_invariant(check_perks(&[p], &inv(), &brands())),
            "undeclared brand"
        );
        let mut p = perk("a");
        p.grant = Grant::DiscountCents(0);
        assert!(is_invariant(check_perks(&[p], &inv(), &brands())));
        let mut p = perk("a");
        p.valid_until_ms = Some(999);
        assert!(
            is_invariant(check_perks(&[p], &inv(), &brands())),
            "expired"
        );
        let mut p = perk("a");
        p.description = "d".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert!(is_too_large(check_perks(&[p], &inv(), &brands())));
    }

    #[test]
    fn redeem_grants_the_requested_perk() {
        let request = RedeemRequest {
            perk_id: "a".into(),
            redemption_id: "r1".into(),
        };
        let ok = RedeemDecision::Granted(perk("a"));
        assert_eq!(check_redeem(&ok, &request, &inv(), &brands()), Ok(()));
        let other = RedeemDecision::Granted(perk("b"));
        assert!(is_invariant(check_redeem(
            &other,
            &request,
            &inv(),
            &brands()
        )));
        let silent = RedeemDecision::Refused(String::new());
        assert!(is_invariant(check_redeem(
            &silent,
            &request,
            &inv(),
            &brands()
        )));
    }

    #[test]
    fn coupon_discounts() {
        let cart = Cart {
            brand: "coffee".into(),
            lines: vec![line("l1", 2, 500), line("l2", 1, 300)],
            total_cents: 1300,
            applied_templates: vec![],
        };
        let d = |id: &str, cents| LineDiscount {
            line_id: id.into(),
            discount_cents: cents,
        };
        let applied = |v| CouponDecision::Applied(v);
        assert_eq!(
            check_coupon(&applied(vec![d("l1", 1000), d("l2", 0)]), &cart),
            Ok(())
        );
        assert!(
            is_invariant(check_coupon(&applied(vec![d("l1", 1001)]), &cart)),
            "above line"
        );
        assert!(
            is_invariant(check_coupon(&applied(vec![d("l1", -1)]), &cart)),
            "negative"
        );
        assert!(
            is_invariant(check_coupon(&applied(vec![d("zz", 1)]), &cart)),
            "unknown line"
        );
        assert!(is_invariant(check_coupon(
            &applied(vec![d("l2", 1), d("l2", 1)]),
            &cart
        )));
        assert!(is_too_large(check_coupon(
            &applied(vec![d("l1", 1), d("l2", 1), d("l2", 1)]),
            &cart
        )));
        assert!(is_invariant(check_coupon(
            &CouponDecision::Rejected(String::new()),
            &cart
        )));
        let huge = Cart {
            lines: vec![line("big", u32::MAX, i64::MAX)],
            ..cart
        };
        assert!(
            is_invariant(check_coupon(&applied(vec![d("big", 1)]), &huge)),
            "overflow"
        );
    }

    #[test]
    fn settlement_lines() {
        let event = SettleEvent {
            event_id: "e1".into(),
            kind: SettleKind::PerkRedeemed,
            brand: "cinema".into(),
            funding_brand: "coffee".into(),
            honouring_brand: "cinema".into(),
            reference: Some("popcorn".into()),
            points: 0,
            value_cents: 1000,
            occurred_at_ms: 0,
        };
        let l = |payer: &str, payee: &str, amount_cents| SettlementLine {
            payer: payer.into(),
            payee: payee.into(),
            amount_cents,
            reason: "share".into(),
        };
        assert_eq!(
            check_settlement(
                &[l("coffee", "cinema", 800), l("cinema", "platform", 50)],
                &event
            ),
            Ok(())
        );
        assert!(is_invariant(check_settlement(
            &[l("coffee", "coffee", 1)],
            &event
        )));
        assert!(is_invariant(check_settlement(
            &[l("coffee", "cinema", 0)],
            &event
        )));
        assert!(is_invariant(check_settlement(
            &[l("coffee", "parking", 1)],
            &event
        )));
        assert!(is_invariant(check_settlement(
            &[l("coffee", "cinema", 1500), l("cinema", "platform", 501)],
            &event
        )));
        assert!(is_invariant(check_settlement(
            &[
                l("coffee", "cinema", i64::MAX),
                l("cinema", "platform", i64::MAX)
            ],
            &event
        )));
        assert!(is_too_large(check_settlement(
            &vec![l("coffee", "cinema", 1); MAX_SETTLEMENT_LINES + 1],
            &event
        )));
    }
}
