//! **club-lounge** — the mall's lounge for membership card holders, written against
//! `coalition:plugin@0.2.0` to show what that version adds.
//!
//! - `list-perks`: a member whose card grants the benefit `lounge` sees "Members' lounge pass"
//!   (a free item `lounge-pass`, 0 points, face value `lounge_value_cents`, funded and honoured
//!   by the mall), called a VIP pass when their stored value is at least
//!   `stored_value_vip_cents`. It is not listed while the mall's perk-value budget has less
//!   left than one pass.
//! - `redeem-perk`: re-checks the card and the budget, and refuses with a reason.
//! - `points-bonus` (mall purchases): card holders get `card_bonus_bp` of the base points as a
//!   bonus, cut to what is left of the mall's bonus budget (the host would cut it anyway; the
//!   plugin says so in the bonus's reason).
//! - `settle`: a `membership-fee` for the mall's plan collected at another brand's counter: that
//!   brand pays the mall the fee minus `sales_commission_bp`; a `refund` of it reverses
//!   the same split.

use coalition_sdk::money::{basis_points_of, format_cents, Rounding, BASIS_POINTS_PER_WHOLE};
use coalition_sdk::{
    config, export_plugin, Bonus, BudgetKind, Grant, Hook, HookError, HookResult, Invocation,
    MemberContext, Order, Perk, Plugin, PluginInfo, RedeemDecision, RedeemRequest, SettleEvent,
    SettleKind, SettlementLine,
};

/// The brand: it funds and honours the pass and owns the plan.
pub const MALL: &str = "mall";
/// Perk id, and the sku handed over.
pub const PERK_ID: &str = "lounge-pass";
/// The card benefit that opens the lounge.
pub const BENEFIT: &str = "lounge";
/// Default of config `lounge_value_cents` (keep equal to plugin.toml).
pub const DEFAULT_VALUE_CENTS: i64 = 800;
/// Default of config `card_bonus_bp`.
pub const DEFAULT_CARD_BONUS_BP: i64 = 1_000;
/// Default of config `sales_commission_bp`.
pub const DEFAULT_SALES_COMMISSION_BP: i64 = 500;
/// Default of config `stored_value_vip_cents`.
pub const DEFAULT_VIP_CENTS: i64 = 20_000;

/// The mall's 0.2.0 plugin.
pub struct ClubLounge;

fn basis_points(key: &str, default: i64) -> HookResult<i64> {
    let bp = config::get_i64_or(key, default)?;
    if !(0..=BASIS_POINTS_PER_WHOLE).contains(&bp) {
        return Err(HookError::failed(format!("config {key} must be 0..=10000")));
    }
    Ok(bp)
}

/// What is left of the mall's budget of `kind`: the smallest of those that apply, none when no
/// budget applies.
fn remaining(inv: &Invocation, kind: BudgetKind) -> Option<i64> {
    inv.budgets
        .iter()
        .filter(|b| b.brand == MALL && b.kind == kind)
        .map(|b| b.remaining)
        .min()
}

fn has_lounge(member: &MemberContext) -> bool {
    member
        .membership
        .as_ref()
        .is_some_and(|card| card.benefits.iter().any(|b| b == BENEFIT))
}

fn pass(member: &MemberContext) -> HookResult<Perk> {
    let value_cents = config::get_i64_or("lounge_value_cents", DEFAULT_VALUE_CENTS)?;
    if value_cents < 0 {
        return Err(HookError::failed("config lounge_value_cents must be >= 0"));
    }
    let vip = member.stored_value_cents
        >= config::get_i64_or("stored_value_vip_cents", DEFAULT_VIP_CENTS)?;
    let plan = member.membership.as_ref().map_or("", |c| c.plan.as_str());
    Ok(Perk {
        id: PERK_ID.into(),
        title: if vip {
            "VIP lounge pass"
        } else {
            "Members' lounge pass"
        }
        .into(),
        description: format!("One visit to the mall's members' lounge, with your {plan} card."),
        funding_brand: MALL.into(),
        honouring_brand: MALL.into(),
        cost_points: 0,
        value_cents,
        grant: Grant::FreeItem(PERK_ID.into()),
        valid_until_ms: member.membership.as_ref().map(|c| c.expires_at_ms),
    })
}

impl Plugin for ClubLounge {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "club-lounge".into(),
            version: "1.0.0".into(),
            hooks: vec![
                Hook::PointsBonus,
                Hook::ListPerks,
                Hook::RedeemPerk,
                Hook::Settle,
            ],
            brands: vec![MALL.into()],
        }
    }

    fn points_bonus(
        inv: &Invocation,
        member: &MemberContext,
        order: &Order,
    ) -> HookResult<Vec<Bonus>> {
        if order.brand != MALL || member.membership.is_none() || order.base_points <= 0 {
            return Ok(Vec::new());
        }
        let bp = basis_points("card_bonus_bp", DEFAULT_CARD_BONUS_BP)?;
        let wanted = basis_points_of(order.base_points, bp, Rounding::Down)
            .ok_or_else(|| HookError::invalid_input("base-points too large"))?;
        let left = remaining(inv, BudgetKind::BonusPoints).unwrap_or(wanted);
        let points = wanted.min(left);
        if points <= 0 {
            return Ok(Vec::new());
        }
        let reason = if points < wanted {
            format!("Card holder bonus (cut to the {points} points left in the mall's budget)")
        } else {
            "Card holder bonus".to_owned()
        };
        Ok(vec![Bonus::new(points, "card-bonus", reason)])
    }

    fn list_perks(inv: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        if !has_lounge(member) {
            return Ok(Vec::new());
        }
        let perk = pass(member)?;
        if remaining(inv, BudgetKind::PerkValue).is_some_and(|left| left < perk.value_cents) {
            return Ok(Vec::new());
        }
        Ok(vec![perk])
    }

    fn redeem_perk(
        inv: &Invocation,
        member: &MemberContext,
        request: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        if request.perk_id != PERK_ID {
            return Err(HookError::invalid_input(format!(
                "unknown perk {}",
                request.perk_id
            )));
        }
        if !has_lounge(member) {
            return Ok(RedeemDecision::refused(
                "The lounge is for holders of a membership card with lounge access.",
            ));
        }
        let perk = pass(member)?;
        if let Some(left) =
            remaining(inv, BudgetKind::PerkValue).filter(|left| *left < perk.value_cents)
        {
            return Ok(RedeemDecision::refused(format!(
                "The lounge is full for this period: {} of passes left, one is {}.",
                format_cents(left),
                format_cents(perk.value_cents)
            )));
        }
        Ok(RedeemDecision::Granted(perk))
    }

    fn settle(_inv: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        // A fee for the mall's plan (the honouring brand) collected by another brand (the
        // funding brand, which owes it).
        let sold_elsewhere = event.honouring_brand == MALL && event.funding_brand != MALL;
        let reversal = match event.kind {
            SettleKind::MembershipFee => false,
            // Refunds reach this hook only for events it settled (the host routes a refund by
            // the rule of what it reverses); the lounge pass itself moves no money.
            SettleKind::Refund if event.reference.as_deref() != Some(PERK_ID) => true,
            _ => return Ok(Vec::new()),
        };
        if !sold_elsewhere || event.value_cents <= 0 {
            return Ok(Vec::new());
        }
        let commission_bp = basis_points("sales_commission_bp", DEFAULT_SALES_COMMISSION_BP)?;
        // Rounded down: the mall keeps any fraction of a cent.
        let commission = basis_points_of(event.value_cents, commission_bp, Rounding::Down)
            .ok_or_else(|| HookError::invalid_input("value-cents too large"))?;
        let to_mall = event.value_cents - commission;
        if to_mall <= 0 {
            return Ok(Vec::new());
        }
        let fee = format_cents(event.value_cents);
        let plan = event.reference.as_deref().unwrap_or("the mall's plan");
        let (payer, payee, why) = if reversal {
            (
                MALL,
                event.funding_brand.as_str(),
                format!("refund of the {plan} card fee of {fee}, net of the sales commission"),
            )
        } else {
            (
                event.funding_brand.as_str(),
                MALL,
                format!(
                    "{plan} card fee of {fee} collected for the mall, net of the sales commission"
                ),
            )
        };
        Ok(vec![SettlementLine::new(payer, payee, to_mall, why)])
    }
}

export_plugin!(ClubLounge);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{self, check_bonuses, check_perks, check_settlement, TestHost};

    const MANIFEST: &str = include_str!("../plugin.toml");

    fn card_holder() -> MemberContext {
        testing::member("m-1")
            .membership("coalition-plus", MALL, &["lounge", "free-delivery"])
            .build()
    }

    #[test]
    fn manifest_matches_describe_and_names_0_2_0() {
        testing::check_manifest::<ClubLounge>(MANIFEST).expect("plugin.toml agrees with info()");
        assert_eq!(coalition_sdk::WIT_PACKAGE, "coalition:plugin@0.2.0");
    }

    #[test]
    fn only_card_holders_with_the_lounge_benefit_see_the_pass() {
        let inv = testing::invocation().build();
        let none = ClubLounge::list_perks(&inv, &testing::member("m-2").build()).expect("ok");
        assert!(none.is_empty());
        let other_card = testing::member("m-3")
            .membership("basic", MALL, &["free-delivery"])
            .build();
        assert!(ClubLounge::list_perks(&inv, &other_card)
            .expect("ok")
            .is_empty());
        let perks = ClubLounge::list_perks(&inv, &card_holder()).expect("ok");
        check_perks(&perks).expect("valid");
        assert_eq!(perks.len(), 1);
        assert_eq!(perks[0].title, "Members' lounge pass");
        assert_eq!(
            perks[0].valid_until_ms,
            card_holder().membership.map(|c| c.expires_at_ms)
        );
    }

    #[test]
    fn stored_value_makes_it_a_vip_pass() {
        let inv = testing::invocation().build();
        let mut member = card_holder();
        member.stored_value_cents = 20_000;
        let perks = ClubLounge::list_perks(&inv, &member).expect("ok");
        assert_eq!(perks[0].title, "VIP lounge pass");
    }

    #[test]
    fn a_spent_perk_budget_hides_and_refuses_the_pass() {
        let inv = testing::invocation()
            .budget(MALL, BudgetKind::PerkValue, 10_000, 799)
            .build();
        assert!(ClubLounge::list_perks(&inv, &card_holder())
            .expect("ok")
            .is_empty());
        let request = RedeemRequest {
            perk_id: PERK_ID.into(),
            redemption_id: "r-1".into(),
        };
        match ClubLounge::redeem_perk(&inv, &card_holder(), &request).expect("ok") {
            RedeemDecision::Refused(reason) => assert!(reason.contains("7.99"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let roomy = testing::invocation()
            .budget(MALL, BudgetKind::PerkValue, 10_000, 800)
            .build();
        assert!(matches!(
            ClubLounge::redeem_perk(&roomy, &card_holder(), &request).expect("ok"),
            RedeemDecision::Granted(_)
        ));
    }

    #[test]
    fn the_card_bonus_is_cut_to_the_bonus_budget() {
        let order = testing::order(MALL)
            .line("bag", "fashion", 1, 10_000)
            .base_points(100)
            .build();
        let inv = testing::invocation().brand(MALL).build();
        let bonuses = ClubLounge::points_bonus(&inv, &card_holder(), &order).expect("ok");
        check_bonuses(&bonuses, 1_000).expect("valid");
        assert_eq!(bonuses[0].points, 10);
        let tight = testing::invocation()
            .brand(MALL)
            .budget(MALL, BudgetKind::BonusPoints, 1_000, 4)
            .build();
        let cut = ClubLounge::points_bonus(&tight, &card_holder(), &order).expect("ok");
        assert_eq!(cut[0].points, 4);
        assert!(cut[0].reason.contains("cut"), "{}", cut[0].reason);
        let no_card = testing::member("m-9").build();
        assert!(ClubLounge::points_bonus(&inv, &no_card, &order)
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn a_fee_sold_by_another_brand_pays_the_mall_net_of_commission() {
        let inv = testing::invocation().build();
        let fee = testing::settle_event(SettleKind::MembershipFee, "coffee")
            .parties("coffee", MALL)
            .reference("coalition-plus")
            .value_cents(9_900)
            .build();
        let lines = TestHost::new()
            .run(|| ClubLounge::settle(&inv, &fee))
            .expect("ok");
        check_settlement(&fee, &lines).expect("valid");
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (
                lines[0].payer.as_str(),
                lines[0].payee.as_str(),
                lines[0].amount_cents
            ),
            ("coffee", MALL, 9_405)
        );
        let refund = testing::settle_event(SettleKind::Refund, "coffee")
            .parties("coffee", MALL)
            .reference("coalition-plus")
            .value_cents(4_950)
            .build();
        let back = ClubLounge::settle(&inv, &refund).expect("ok");
        assert_eq!(
            (
                back[0].payer.as_str(),
                back[0].payee.as_str(),
                back[0].amount_cents
            ),
            (MALL, "coffee", 4_703)
        );
        let at_the_mall = testing::settle_event(SettleKind::MembershipFee, MALL)
            .parties(MALL, MALL)
            .value_cents(9_900)
            .build();
        assert!(ClubLounge::settle(&inv, &at_the_mall)
            .expect("ok")
            .is_empty());
    }
}
