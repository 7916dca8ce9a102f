//! The example plugins give the expected decisions through the runtime.

use coalition_runtime::model::{
    Bonus, Config, CouponDecision, Grant, HookFailure, RedeemDecision, RedeemRequest, SettleKind,
    SettlementLine,
};
use coalition_runtime::{ArtifactSource, CallContext, ErrorKind};

use crate::helpers::*;

fn codes(bonuses: &[Bonus]) -> Vec<(&str, i64)> {
    bonuses
        .iter()
        .map(|b| (b.code.as_str(), b.points))
        .collect()
}

#[test]
fn coffee_bonus_doubles_monday_and_birthday_month() {
    let t = runtime();
    let coffee = load(&t.runtime, "coffee-bonus");
    assert_eq!(coffee.artifact_source(), ArtifactSource::Compiled);
    assert!(!coffee.uses_wasi(), "a plain component gets no WASI");

    let order = order("coffee", 20);
    let monday = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let birthday = coffee
        .points_bonus(&monday, &member(Some(3)), &order)
        .expect("bonus");
    assert_eq!(
        codes(&birthday.value),
        vec![
            ("birthday-x2", order.base_points),
            ("weekday-x2", order.base_points)
        ]
    );
    let receipt = &birthday.receipt;
    assert_eq!(receipt.plugin, "coffee-bonus");
    assert_eq!(receipt.component_sha256, coffee.component_sha256());
    assert!(
        receipt.fuel_used > 0 && receipt.fuel_used < 2_000_000,
        "{}",
        receipt.fuel_used
    );
    assert!(receipt.input_is_intact());

    let tuesday = CallContext::new(invocation(TUESDAY_MARCH_18_0930_UTC8_MS, "coffee"));
    let nothing = coffee
        .points_bonus(&tuesday, &member(Some(4)), &order)
        .expect("no bonus");
    assert!(nothing.value.is_empty());
}

#[test]
fn coffee_bonus_reads_admin_config_over_manifest_defaults() {
    let t = runtime();
    let coffee = load(&t.runtime, "coffee-bonus");
    let order = order("coffee", 20);
    let ctx = CallContext {
        invocation: invocation(TUESDAY_MARCH_18_0930_UTC8_MS, "coffee"),
        config: Config::from([("double_weekday".to_string(), "tuesday".to_string())]),
    };
    let decision = coffee
        .points_bonus(&ctx, &member(None), &order)
        .expect("bonus");
    assert_eq!(
        codes(&decision.value),
        vec![("weekday-x2", order.base_points)]
    );
    // The receipt records the effective config, defaults included, so a replay is exact.
    let input = decision.receipt.call_input().expect("parses");
    assert_eq!(
        input.config.get("double_weekday").map(String::as_str),
        Some("tuesday")
    );
    assert_eq!(
        input.config.get("max_bonus_points").map(String::as_str),
        Some("10000")
    );

    let undeclared = CallContext {
        config: Config::from([("teleport".to_string(), "yes".to_string())]),
        ..ctx
    };
    let err = coffee
        .points_bonus(&undeclared, &member(None), &order)
        .expect_err("undeclared config key");
    assert!(
        matches!(err.kind, ErrorKind::InputRejected(ref r) if r.contains("teleport")),
        "{err}"
    );
}

#[test]
fn coffee_bonus_settles_points_issued_with_the_platform() {
    let t = runtime();
    let coffee = load(&t.runtime, "coffee-bonus");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));
    let issued = event(SettleKind::PointsIssued, "coffee", "coffee", "coffee", 60);
    let decision = coffee.settle(&ctx, &issued).expect("settles");
    assert_eq!(
        decision.value,
        vec![SettlementLine {
            payer: "coffee".into(),
            payee: "platform".into(),
            amount_cents: 60,
            reason: "60 points issued at coffee".into(),
        }]
    );
}

#[test]
fn hooks_the_plugin_does_not_list_are_never_called() {
    let t = runtime();
    let coffee = load(&t.runtime, "coffee-bonus");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
    let err = coffee
        .list_perks(&ctx, &member(None))
        .expect_err("not listed");
    assert_eq!(attributed(&err, &coffee), ErrorKind::NotImplemented);
    assert_eq!(err.hook(), Some(coalition_runtime::model::Hook::ListPerks));
}

#[test]
fn cinema_dinner_offers_redeems_and_settles_the_half_price_ticket() {
    let t = runtime();
    let cinema = load(&t.runtime, "cinema-dinner");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));

    // 250.00 at the restaurant this week unlocks the perk.
    let perks = cinema.list_perks(&ctx, &member(None)).expect("perks").value;
    assert_eq!(perks.len(), 1);
    let perk = &perks[0];
    assert_eq!(perk.id, "cinema-ticket-half");
    assert_eq!(
        (perk.funding_brand.as_str(), perk.honouring_brand.as_str()),
        ("restaurant", "cinema")
    );
    assert_eq!((perk.cost_points, perk.value_cents), (500, 4_000));
    assert_eq!(perk.grant, Grant::Coupon("cinema-ticket-half".into()));

    let mut thrifty = member(None);
    thrifty.spend[0].spend_7d_cents = 19_999;
    assert!(cinema
        .list_perks(&ctx, &thrifty)
        .expect("perks")
        .value
        .is_empty());

    let request = RedeemRequest {
        perk_id: "cinema-ticket-half".into(),
        redemption_id: "r-1".into(),
    };
    let granted = cinema
        .redeem_perk(&ctx, &member(None), &request)
        .expect("redeem")
        .value;
    assert!(matches!(granted, RedeemDecision::Granted(ref p) if p.id == "cinema-ticket-half"));
    let mut poor = member(None);
    poor.points_balance = 499;
    let refused = cinema
        .redeem_perk(&ctx, &poor, &request)
        .expect("redeem")
        .value;
    assert!(
        matches!(refused, RedeemDecision::Refused(ref r) if r.contains("500 points")),
        "{refused:?}"
    );

    let mut redeemed = event(
        SettleKind::PerkRedeemed,
        "cinema",
        "restaurant",
        "cinema",
        4_000,
    );
    redeemed.reference = Some("cinema-ticket-half".into());
    let lines = cinema.settle(&ctx, &redeemed).expect("settles").value;
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
fn parking_perk_is_for_gold_and_above() {
    let t = runtime();
    let parking = load(&t.runtime, "parking-perk");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));
    let gold = member(None);
    let perks = parking.list_perks(&ctx, &gold).expect("perks").value;
    assert_eq!(perks.len(), 1);
    assert_eq!(perks[0].grant, Grant::FreeItem("parking-2h".into()));
    assert_eq!(
        (
            perks[0].funding_brand.as_str(),
            perks[0].honouring_brand.as_str()
        ),
        ("mall", "parking")
    );

    let mut silver = member(None);
    silver.tier = "silver".into();
    silver.tier_rank = 1;
    assert!(parking
        .list_perks(&ctx, &silver)
        .expect("perks")
        .value
        .is_empty());
    let request = RedeemRequest {
        perk_id: "parking-2h".into(),
        redemption_id: "r-2".into(),
    };
    let refused = parking
        .redeem_perk(&ctx, &silver, &request)
        .expect("redeem")
        .value;
    assert!(matches!(refused, RedeemDecision::Refused(_)), "{refused:?}");

    let mut redeemed = event(
        SettleKind::PerkRedeemed,
        "parking",
        "mall",
        "parking",
        1_000,
    );
    redeemed.reference = Some("parking-2h".into());
    let lines = parking.settle(&ctx, &redeemed).expect("settles").value;
    let moves: Vec<_> = lines
        .iter()
        .map(|l| (l.payer.as_str(), l.payee.as_str(), l.amount_cents))
        .collect();
    assert_eq!(
        moves,
        vec![("mall", "parking", 950), ("mall", "platform", 50)]
    );
}

#[test]
fn coupon_logic_spreads_a_threshold_discount_over_eligible_lines() {
    let t = runtime();
    let coupons = load(&t.runtime, "coupon-logic");
    assert!(coupons.manifest().brands.is_empty(), "brand-agnostic");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "mall"));
    let spend_200_get_30 = coupon(
        "spend-200-get-30",
        "mall",
        &[
            ("kind", "threshold"),
            ("threshold-cents", "20000"),
            ("off-cents", "3000"),
        ],
    );
    let mut basket = cart("mall", 3, "fashion", 10_000);
    basket.lines[2].excluded = true;
    let decision = coupons
        .apply_coupon(&ctx, &spend_200_get_30, &basket)
        .expect("applies");
    match decision.value {
        CouponDecision::Applied(discounts) => {
            let total: i64 = discounts.iter().map(|d| d.discount_cents).sum();
            assert_eq!(total, 3_000);
            assert!(
                discounts.iter().all(|d| d.line_id != "l2"),
                "excluded line untouched"
            );
        }
        other => panic!("expected a discount, got {other:?}"),
    }

    let small = cart("mall", 1, "fashion", 1_000);
    let rejected = coupons
        .apply_coupon(&ctx, &spend_200_get_30, &small)
        .expect("decides");
    assert!(matches!(rejected.value, CouponDecision::Rejected(_)));

    // A malformed template is the plugin's own invalid-input error, not a decision.
    let broken = coupon("spend-200-get-30", "mall", &[("kind", "threshold")]);
    let err = coupons
        .apply_coupon(&ctx, &broken, &small)
        .expect_err("malformed");
    assert!(
        matches!(err.kind, ErrorKind::HookError(HookFailure::InvalidInput(_))),
        "{err}"
    );
}
