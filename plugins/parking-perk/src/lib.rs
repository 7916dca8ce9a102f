//! **parking-perk** — free parking for the mall's best members.
//!
//! - `list-perks`: members with tier rank ≥ `min_tier_rank` (2, gold and above) see
//!   "2 hours free parking": a free item `parking-2h` for 0 points, face value
//!   `parking_value_cents`, funded by the mall, honoured by parking.
//! - `redeem-perk`: re-checks the tier (members can be downgraded between listing and
//!   redemption) and refuses with a reason.
//! - `settle` (`perk-redeemed`, reference `parking-2h`): the mall pays parking the face value
//!   minus the platform commission (`commission_bp`) and pays the platform that commission; the
//!   mall's total cost is the face value. A `refund` reverses both.

use coalition_sdk::money::{basis_points_of, format_cents, Rounding, BASIS_POINTS_PER_WHOLE};
use coalition_sdk::{
    config, export_plugin, Grant, Hook, HookError, HookResult, Invocation, MemberContext, Perk,
    Plugin, PluginInfo, RedeemDecision, RedeemRequest, SettleEvent, SettleKind, SettlementLine,
    PLATFORM,
};

/// The funding brand.
pub const MALL: &str = "mall";
/// The honouring brand.
pub const PARKING: &str = "parking";
/// Perk id, and the sku the parking operator hands over.
pub const PERK_ID: &str = "parking-2h";
/// Default of config `min_tier_rank` (keep equal to plugin.toml).
pub const DEFAULT_MIN_TIER_RANK: i64 = 2;
/// Default of config `parking_value_cents`.
pub const DEFAULT_VALUE_CENTS: i64 = 1_000;
/// Default of config `commission_bp`.
pub const DEFAULT_COMMISSION_BP: i64 = 500;

/// The parking operator's plugin. Public so the runtime can call it natively as a baseline.
pub struct ParkingPerk;

fn min_tier_rank() -> HookResult<i64> {
    config::get_i64_or("min_tier_rank", DEFAULT_MIN_TIER_RANK)
}

fn perk() -> HookResult<Perk> {
    let value_cents = config::get_i64_or("parking_value_cents", DEFAULT_VALUE_CENTS)?;
    if value_cents < 0 {
        return Err(HookError::failed("config parking_value_cents must be >= 0"));
    }
    Ok(Perk {
        id: PERK_ID.into(),
        title: "2 hours free parking".into(),
        description: "Two hours of free parking at the mall, with the compliments of the mall."
            .into(),
        funding_brand: MALL.into(),
        honouring_brand: PARKING.into(),
        cost_points: 0,
        value_cents,
        grant: Grant::FreeItem(PERK_ID.into()),
        valid_until_ms: None,
    })
}

impl Plugin for ParkingPerk {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "parking-perk".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::ListPerks, Hook::RedeemPerk, Hook::Settle],
            brands: vec![MALL.into(), PARKING.into()],
        }
    }

    fn list_perks(_inv: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        if i64::from(member.tier_rank) < min_tier_rank()? {
            return Ok(Vec::new());
        }
        Ok(vec![perk()?])
    }

    fn redeem_perk(
        _inv: &Invocation,
        member: &MemberContext,
        request: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        if request.perk_id != PERK_ID {
            return Err(HookError::invalid_input(format!(
                "unknown perk {}",
                request.perk_id
            )));
        }
        if i64::from(member.tier_rank) < min_tier_rank()? {
            return Ok(RedeemDecision::refused(format!(
                "Free parking is for gold members and above; your tier is {}.",
                member.tier
            )));
        }
        Ok(RedeemDecision::Granted(perk()?))
    }

    fn settle(_inv: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        let ours = event.reference.as_deref() == Some(PERK_ID)
            && event.funding_brand == MALL
            && event.honouring_brand == PARKING;
        let reversal = match event.kind {
            SettleKind::PerkRedeemed => false,
            SettleKind::Refund => true,
            _ => return Ok(Vec::new()),
        };
        if !ours || event.value_cents <= 0 {
            return Ok(Vec::new());
        }
        let commission_bp = config::get_i64_or("commission_bp", DEFAULT_COMMISSION_BP)?;
        if !(0..=BASIS_POINTS_PER_WHOLE).contains(&commission_bp) {
            return Err(HookError::failed("config commission_bp must be 0..=10000"));
        }
        // Rounded down: parking keeps any fraction of a cent the commission would have taken.
        let commission = basis_points_of(event.value_cents, commission_bp, Rounding::Down)
            .ok_or_else(|| HookError::invalid_input("value-cents too large"))?;
        let to_parking = event.value_cents - commission;
        let value = format_cents(event.value_cents);
        let verb = if reversal { "refund of " } else { "" };
        let mut lines = Vec::new();
        for (payer, payee, amount, why) in [
            (
                MALL,
                PARKING,
                to_parking,
                format!("{verb}free parking worth {value}, net of commission"),
            ),
            (
                MALL,
                PLATFORM,
                commission,
                format!("{verb}platform commission on free parking worth {value}"),
            ),
        ] {
            if amount > 0 {
                let (payer, payee) = if reversal {
                    (payee, payer)
                } else {
                    (payer, payee)
                };
                lines.push(SettlementLine::new(payer, payee, amount, why));
            }
        }
        Ok(lines)
    }
}

export_plugin!(ParkingPerk);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{
        self, check_perks, check_redeem_decision, check_settlement, TestHost,
    };

    const MANIFEST: &str = include_str!("../plugin.toml");

    fn member(tier: &str, rank: u32) -> MemberContext {
        testing::member("m-3").tier(tier, rank).build()
    }

    fn parking_redeemed(kind: SettleKind, value_cents: i64) -> SettleEvent {
        testing::settle_event(kind, PARKING)
            .parties(MALL, PARKING)
            .reference(PERK_ID)
            .value_cents(value_cents)
            .build()
    }

    fn moves(lines: &[SettlementLine]) -> Vec<(&str, &str, i64)> {
        lines
            .iter()
            .map(|l| (l.payer.as_str(), l.payee.as_str(), l.amount_cents))
            .collect()
    }

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<ParkingPerk>(MANIFEST).expect("plugin.toml agrees with info()");
    }

    #[test]
    fn gold_and_above_see_free_parking_silver_does_not() {
        let inv = testing::invocation().build();
        for (tier, rank, expected) in [("silver", 1, 0), ("gold", 2, 1), ("platinum", 3, 1)] {
            let perks = ParkingPerk::list_perks(&inv, &member(tier, rank)).expect("ok");
            check_perks(&perks).expect("valid perks");
            assert_eq!(perks.len(), expected, "{tier}");
        }
        let perks = ParkingPerk::list_perks(&inv, &member("gold", 2)).expect("ok");
        assert_eq!(perks[0].grant, Grant::FreeItem("parking-2h".into()));
        assert_eq!((perks[0].cost_points, perks[0].value_cents), (0, 1_000));
        assert_eq!(
            (
                perks[0].funding_brand.as_str(),
                perks[0].honouring_brand.as_str()
            ),
            ("mall", "parking")
        );
    }

    #[test]
    fn redeem_rechecks_the_tier() {
        let inv = testing::invocation().build();
        let request = testing::redeem_request(PERK_ID);
        let granted = ParkingPerk::redeem_perk(&inv, &member("gold", 2), &request).expect("ok");
        check_redeem_decision(&granted).expect("valid");
        assert!(
            matches!(granted, RedeemDecision::Granted(ref p) if p.id == "parking-2h"),
            "{granted:?}"
        );
        // Downgraded to silver since the perk was listed.
        let refused = ParkingPerk::redeem_perk(&inv, &member("silver", 1), &request).expect("ok");
        assert_eq!(
            refused,
            RedeemDecision::Refused(
                "Free parking is for gold members and above; your tier is silver.".into()
            )
        );
    }

    #[test]
    fn tier_threshold_comes_from_config() {
        let inv = testing::invocation().build();
        let host = TestHost::new().with_config("min_tier_rank", "1");
        assert_eq!(
            host.run(|| ParkingPerk::list_perks(&inv, &member("silver", 1)))
                .map(|p| p.len()),
            Ok(1)
        );
    }

    #[test]
    fn mall_pays_parking_value_minus_commission_and_the_platform_the_commission() {
        let inv = testing::invocation().build();
        let event = parking_redeemed(SettleKind::PerkRedeemed, 1_000);
        let lines = ParkingPerk::settle(&inv, &event).expect("ok");
        check_settlement(&event, &lines).expect("valid settlement");
        assert_eq!(
            moves(&lines),
            vec![("mall", "parking", 950), ("mall", "platform", 50)]
        );
    }

    #[test]
    fn commission_rounds_down_in_parkings_favour_and_refund_reverses() {
        let inv = testing::invocation().build();
        let lines = ParkingPerk::settle(&inv, &parking_redeemed(SettleKind::PerkRedeemed, 1_019))
            .expect("ok");
        assert_eq!(
            moves(&lines),
            vec![("mall", "parking", 969), ("mall", "platform", 50)]
        );
        let refund = parking_redeemed(SettleKind::Refund, 1_000);
        let lines = ParkingPerk::settle(&inv, &refund).expect("ok");
        check_settlement(&refund, &lines).expect("valid settlement");
        assert_eq!(
            moves(&lines),
            vec![("parking", "mall", 950), ("platform", "mall", 50)]
        );
    }

    #[test]
    fn zero_commission_gives_one_line() {
        let inv = testing::invocation().build();
        let host = TestHost::new().with_config("commission_bp", "0");
        let lines = host
            .run(|| ParkingPerk::settle(&inv, &parking_redeemed(SettleKind::PerkRedeemed, 1_000)))
            .expect("ok");
        assert_eq!(moves(&lines), vec![("mall", "parking", 1_000)]);
    }

    #[test]
    fn other_perks_and_kinds_settle_nothing() {
        let inv = testing::invocation().build();
        let cinema = testing::settle_event(SettleKind::PerkRedeemed, "cinema")
            .parties("restaurant", "cinema")
            .reference("cinema-ticket-half")
            .value_cents(4_000)
            .build();
        assert_eq!(ParkingPerk::settle(&inv, &cinema), Ok(Vec::new()));
        let issued = testing::settle_event(SettleKind::PointsIssued, PARKING)
            .value_cents(100)
            .build();
        assert_eq!(ParkingPerk::settle(&inv, &issued), Ok(Vec::new()));
    }
}
