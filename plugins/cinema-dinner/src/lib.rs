//! **cinema-dinner** — a cross-brand perk of the cinema and restaurant alliance.
//!
//! - `list-perks`: a member who spent at least `restaurant_spend_threshold_cents` (200.00) at
//!   the restaurant in the last 7 days sees "Half-price cinema ticket": a coupon of template
//!   `cinema-ticket-half`, bought for `ticket_cost_points` (500) points, face value
//!   `ticket_value_cents` (40.00), funded by the restaurant, honoured by the cinema.
//! - `redeem-perk`: re-checks spend and points balance (both may have changed since listing)
//!   and refuses with a reason the member can act on.
//! - `settle` (`perk-redeemed`, reference `cinema-ticket-half`): the restaurant pays the cinema
//!   `restaurant_share_bp` (50%) of the face value — the other half is the cinema's own
//!   funding — and pays the platform `commission_bp` (5%). A `refund` of the perk reverses both.

use coalition_sdk::money::{basis_points_of, format_cents, Rounding, BASIS_POINTS_PER_WHOLE};
use coalition_sdk::{
    config, export_plugin, Grant, Hook, HookError, HookResult, Invocation, MemberContext, Perk,
    Plugin, PluginInfo, RedeemDecision, RedeemRequest, SettleEvent, SettleKind, SettlementLine,
    PLATFORM,
};

/// The brand that honours the perk.
pub const CINEMA: &str = "cinema";
/// The brand whose spend unlocks the perk and which funds half of it.
pub const RESTAURANT: &str = "restaurant";
/// Perk id, and the coupon template it grants.
pub const PERK_ID: &str = "cinema-ticket-half";
/// Default of config `restaurant_spend_threshold_cents` (keep equal to plugin.toml).
pub const DEFAULT_THRESHOLD_CENTS: i64 = 20_000;
/// Default of config `ticket_cost_points`.
pub const DEFAULT_COST_POINTS: i64 = 500;
/// Default of config `ticket_value_cents`.
pub const DEFAULT_VALUE_CENTS: i64 = 4_000;
/// Default of config `restaurant_share_bp`: the alliance funds the ticket 50/50.
pub const DEFAULT_RESTAURANT_SHARE_BP: i64 = 5_000;
/// Default of config `commission_bp`.
pub const DEFAULT_COMMISSION_BP: i64 = 500;

/// The alliance's plugin. Public so the runtime can call it natively as a baseline.
pub struct CinemaDinner;

/// Tunables, read once per call.
struct Terms {
    threshold_cents: i64,
    cost_points: i64,
    value_cents: i64,
    restaurant_share_bp: i64,
    commission_bp: i64,
}

impl Terms {
    fn from_config() -> HookResult<Terms> {
        let terms = Terms {
            threshold_cents: config::get_i64_or(
                "restaurant_spend_threshold_cents",
                DEFAULT_THRESHOLD_CENTS,
            )?,
            cost_points: config::get_i64_or("ticket_cost_points", DEFAULT_COST_POINTS)?,
            value_cents: config::get_i64_or("ticket_value_cents", DEFAULT_VALUE_CENTS)?,
            restaurant_share_bp: config::get_i64_or(
                "restaurant_share_bp",
                DEFAULT_RESTAURANT_SHARE_BP,
            )?,
            commission_bp: config::get_i64_or("commission_bp", DEFAULT_COMMISSION_BP)?,
        };
        let bp_range = 0..=BASIS_POINTS_PER_WHOLE;
        // Share + commission ≤ 100% keeps every event within the host's 2 × value ceiling.
        let shares_ok = bp_range.contains(&terms.restaurant_share_bp)
            && bp_range.contains(&terms.commission_bp)
            && terms.restaurant_share_bp + terms.commission_bp <= BASIS_POINTS_PER_WHOLE;
        if !shares_ok || terms.cost_points < 0 || terms.value_cents < 0 || terms.threshold_cents < 0
        {
            return Err(HookError::failed(
                "config: shares must be 0..=10000 bp and sum to at most 10000; amounts >= 0",
            ));
        }
        Ok(terms)
    }

    fn perk(&self, inv: &Invocation) -> Perk {
        Perk {
            id: PERK_ID.into(),
            title: "Half-price cinema ticket".into(),
            description: format!(
                "You spent {} or more at the restaurant this week: enjoy a cinema ticket at half price.",
                format_cents(self.threshold_cents)
            ),
            funding_brand: RESTAURANT.into(),
            honouring_brand: CINEMA.into(),
            cost_points: self.cost_points,
            value_cents: self.value_cents,
            grant: Grant::Coupon(PERK_ID.into()),
            // Eligibility is a rolling week: offer it until local midnight, then look again.
            valid_until_ms: Some(inv.end_of_local_day_ms()),
        }
    }

    fn eligible(&self, member: &MemberContext) -> bool {
        member.spend_7d_cents_at(RESTAURANT) >= self.threshold_cents
    }
}

impl Plugin for CinemaDinner {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "cinema-dinner".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::ListPerks, Hook::RedeemPerk, Hook::Settle],
            brands: vec![CINEMA.into(), RESTAURANT.into()],
        }
    }

    fn list_perks(inv: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        let terms = Terms::from_config()?;
        if !terms.eligible(member) {
            return Ok(Vec::new());
        }
        Ok(vec![terms.perk(inv)])
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
        let terms = Terms::from_config()?;
        if !terms.eligible(member) {
            return Ok(RedeemDecision::refused(format!(
                "Spend {} at the restaurant within 7 days to unlock this perk; you have spent {}.",
                format_cents(terms.threshold_cents),
                format_cents(member.spend_7d_cents_at(RESTAURANT))
            )));
        }
        if member.points_balance < terms.cost_points {
            return Ok(RedeemDecision::refused(format!(
                "This perk costs {} points; you have {}.",
                terms.cost_points, member.points_balance
            )));
        }
        Ok(RedeemDecision::Granted(terms.perk(inv)))
    }

    fn settle(_inv: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        let ours = event.reference.as_deref() == Some(PERK_ID)
            && event.funding_brand == RESTAURANT
            && event.honouring_brand == CINEMA;
        let reversal = match event.kind {
            SettleKind::PerkRedeemed => false,
            SettleKind::Refund => true,
            _ => return Ok(Vec::new()),
        };
        if !ours || event.value_cents <= 0 {
            return Ok(Vec::new());
        }
        let terms = Terms::from_config()?;
        let overflow = || HookError::invalid_input("value-cents too large");
        // Rounded down: a fraction of a cent stays with the payer, never invented.
        let share = basis_points_of(event.value_cents, terms.restaurant_share_bp, Rounding::Down)
            .ok_or_else(overflow)?;
        let commission = basis_points_of(event.value_cents, terms.commission_bp, Rounding::Down)
            .ok_or_else(overflow)?;
        let value = format_cents(event.value_cents);
        let mut lines = Vec::new();
        let mut owe = |payer: &str, payee: &str, amount: i64, why: String| {
            if amount > 0 {
                let (payer, payee) = if reversal {
                    (payee, payer)
                } else {
                    (payer, payee)
                };
                lines.push(SettlementLine::new(payer, payee, amount, why));
            }
        };
        let verb = if reversal { "refund of " } else { "" };
        owe(
            RESTAURANT,
            CINEMA,
            share,
            format!("{verb}restaurant's share of a {value} cinema ticket perk"),
        );
        owe(
            RESTAURANT,
            PLATFORM,
            commission,
            format!("{verb}platform commission on a {value} cinema ticket perk"),
        );
        Ok(lines)
    }
}

export_plugin!(CinemaDinner);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{
        self, check_perks, check_redeem_decision, check_settlement, TestHost,
    };

    const MANIFEST: &str = include_str!("../plugin.toml");

    fn diner(spent_7d_cents: i64) -> MemberContext {
        testing::member("m-7")
            .points(1_200)
            .spend("restaurant", spent_7d_cents)
            .build()
    }

    fn perk_redeemed(value_cents: i64) -> SettleEvent {
        testing::settle_event(SettleKind::PerkRedeemed, CINEMA)
            .parties(RESTAURANT, CINEMA)
            .reference(PERK_ID)
            .points(500)
            .value_cents(value_cents)
            .build()
    }

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<CinemaDinner>(MANIFEST).expect("plugin.toml agrees with info()");
    }

    #[test]
    fn diner_who_spent_200_this_week_sees_the_discounted_ticket() {
        let inv = testing::invocation().local(2025, 3, 17, 19, 0).build();
        let perks = CinemaDinner::list_perks(&inv, &diner(20_000)).expect("ok");
        check_perks(&perks).expect("valid perks");
        let [perk] = perks.as_slice() else {
            panic!("expected one perk, got {perks:?}")
        };
        assert_eq!(perk.id, "cinema-ticket-half");
        assert_eq!(perk.grant, Grant::Coupon("cinema-ticket-half".into()));
        assert_eq!((perk.cost_points, perk.value_cents), (500, 4_000));
        assert_eq!(
            (perk.funding_brand.as_str(), perk.honouring_brand.as_str()),
            ("restaurant", "cinema")
        );
        // Valid until local midnight of 17 March in UTC+8 (= 16:00 UTC), minus one ms.
        assert_eq!(
            perk.valid_until_ms,
            Some(testing::local_ms(2025, 3, 18, 0, 0, 480) - 1)
        );
    }

    #[test]
    fn spend_below_threshold_elsewhere_or_older_than_a_week_does_not_count() {
        let inv = testing::invocation().build();
        assert_eq!(
            CinemaDinner::list_perks(&inv, &diner(19_999)),
            Ok(Vec::new())
        );
        let coffee_lover = testing::member("m-8").spend("coffee", 90_000).build();
        assert_eq!(
            CinemaDinner::list_perks(&inv, &coffee_lover),
            Ok(Vec::new())
        );
        let last_month = testing::member("m-9")
            .spend_detailed("restaurant", 0, 50_000, 4)
            .build();
        assert_eq!(CinemaDinner::list_perks(&inv, &last_month), Ok(Vec::new()));
    }

    #[test]
    fn threshold_and_prices_come_from_config() {
        let inv = testing::invocation().build();
        let host = TestHost::new()
            .with_config("restaurant_spend_threshold_cents", "10000")
            .with_config("ticket_cost_points", "300");
        let perks = host
            .run(|| CinemaDinner::list_perks(&inv, &diner(12_000)))
            .expect("ok");
        assert_eq!(
            perks.iter().map(|p| p.cost_points).collect::<Vec<_>>(),
            vec![300]
        );
    }

    #[test]
    fn redeem_grants_when_still_eligible() {
        let inv = testing::invocation().build();
        let decision =
            CinemaDinner::redeem_perk(&inv, &diner(25_000), &testing::redeem_request(PERK_ID))
                .expect("ok");
        check_redeem_decision(&decision).expect("valid decision");
        assert!(
            matches!(decision, RedeemDecision::Granted(ref perk) if perk.cost_points == 500),
            "{decision:?}"
        );
    }

    #[test]
    fn redeem_rechecks_eligibility_and_refuses_with_a_reason() {
        let inv = testing::invocation().build();
        let request = testing::redeem_request(PERK_ID);
        // Listed yesterday, but a refund since brought the week's spend under the threshold.
        let decision = CinemaDinner::redeem_perk(&inv, &diner(15_000), &request).expect("ok");
        assert_eq!(
            decision,
            RedeemDecision::Refused(
                "Spend 200.00 at the restaurant within 7 days to unlock this perk; you have spent 150.00.".into()
            )
        );
        let poor = testing::member("m-7")
            .points(499)
            .spend("restaurant", 30_000)
            .build();
        let decision = CinemaDinner::redeem_perk(&inv, &poor, &request).expect("ok");
        assert_eq!(
            decision,
            RedeemDecision::Refused("This perk costs 500 points; you have 499.".into())
        );
    }

    #[test]
    fn unknown_perk_is_invalid_input() {
        let inv = testing::invocation().build();
        let err = CinemaDinner::redeem_perk(
            &inv,
            &diner(25_000),
            &testing::redeem_request("free-popcorn"),
        );
        assert!(matches!(err, Err(HookError::InvalidInput(_))), "{err:?}");
    }

    #[test]
    fn restaurant_pays_cinema_half_and_the_platform_its_commission() {
        let inv = testing::invocation().build();
        let event = perk_redeemed(4_000);
        let lines = CinemaDinner::settle(&inv, &event).expect("ok");
        check_settlement(&event, &lines).expect("valid settlement");
        let moves: Vec<_> = lines
            .iter()
            .map(|l| (l.payer.as_str(), l.payee.as_str(), l.amount_cents))
            .collect();
        assert_eq!(
            moves,
            vec![
                ("restaurant", "cinema", 2_000),
                ("restaurant", "platform", 200)
            ]
        );
    }

    #[test]
    fn odd_cents_round_down_for_the_payer() {
        let inv = testing::invocation().build();
        let lines = CinemaDinner::settle(&inv, &perk_redeemed(3_999)).expect("ok");
        let amounts: Vec<i64> = lines.iter().map(|l| l.amount_cents).collect();
        assert_eq!(amounts, vec![1_999, 199]);
    }

    #[test]
    fn refund_reverses_both_lines() {
        let inv = testing::invocation().build();
        let refund = testing::settle_event(SettleKind::Refund, CINEMA)
            .parties(RESTAURANT, CINEMA)
            .reference(PERK_ID)
            .value_cents(4_000)
            .build();
        let lines = CinemaDinner::settle(&inv, &refund).expect("ok");
        check_settlement(&refund, &lines).expect("valid settlement");
        let moves: Vec<_> = lines
            .iter()
            .map(|l| (l.payer.as_str(), l.payee.as_str(), l.amount_cents))
            .collect();
        assert_eq!(
            moves,
            vec![
                ("cinema", "restaurant", 2_000),
                ("platform", "restaurant", 200)
            ]
        );
    }

    #[test]
    fn commission_is_configurable_and_bad_shares_fail_closed() {
        let inv = testing::invocation().build();
        let host = TestHost::new().with_config("commission_bp", "1000");
        let lines = host
            .run(|| CinemaDinner::settle(&inv, &perk_redeemed(4_000)))
            .expect("ok");
        assert_eq!(lines.last().map(|l| l.amount_cents), Some(400));
        let greedy = TestHost::new().with_config("commission_bp", "6000");
        let err = greedy.run(|| CinemaDinner::settle(&inv, &perk_redeemed(4_000)));
        assert!(matches!(err, Err(HookError::Failed(_))), "{err:?}");
    }

    #[test]
    fn other_events_settle_nothing() {
        let inv = testing::invocation().build();
        let coupon = testing::settle_event(SettleKind::CouponHonoured, CINEMA)
            .value_cents(4_000)
            .build();
        assert_eq!(CinemaDinner::settle(&inv, &coupon), Ok(Vec::new()));
        let other_perk = testing::settle_event(SettleKind::PerkRedeemed, CINEMA)
            .parties(RESTAURANT, CINEMA)
            .reference("free-popcorn")
            .value_cents(4_000)
            .build();
        assert_eq!(CinemaDinner::settle(&inv, &other_perk), Ok(Vec::new()));
    }
}
