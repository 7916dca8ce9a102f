//! `coalition:plugin@0.1.0` and `@0.2.0` components side by side in one runtime: each is given
//! what its version knows, its receipt records exactly that, and replays hold.

use coalition_runtime::model::{
    BudgetKind, BudgetRemaining, Grant, Membership, RedeemDecision, RedeemRequest, SettleKind,
};
use coalition_runtime::{CallContext, ErrorKind, WitVersion};

use crate::helpers::*;

/// A gold member holding the mall's card with the lounge benefit, stored value and pending
/// points.
fn card_holder() -> coalition_runtime::model::MemberContext {
    let mut member = member(Some(3));
    member.stored_value_cents = 25_000;
    member.pending_points = 120;
    member.membership = Some(Membership {
        plan: "coalition-plus".into(),
        brand: "mall".into(),
        benefits: vec!["lounge".into(), "free-delivery".into()],
        points_multiplier_percent: 150,
        tier_floor: Some("gold".into()),
        expires_at_ms: MONDAY_MARCH_17_0930_UTC8_MS + 30 * 86_400_000,
    });
    member
}

fn budget(brand: &str, kind: BudgetKind, plugin: Option<&str>, remaining: i64) -> BudgetRemaining {
    BudgetRemaining {
        brand: brand.into(),
        kind,
        plugin: plugin.map(Into::into),
        amount: 10_000,
        remaining,
        period_ends_ms: MONDAY_MARCH_17_0930_UTC8_MS + 86_400_000,
    }
}

#[test]
fn both_versions_load_and_say_which_they_are() {
    let t = runtime();
    let old = load(&t.runtime, "parking-perk");
    let new = load(&t.runtime, "club-lounge");
    assert_eq!(old.manifest().wit, WitVersion::V0_1_0);
    assert_eq!(new.manifest().wit, WitVersion::V0_2_0);
    assert_eq!(
        WitVersion::from_package_id("coalition:plugin@0.2.0"),
        Some(WitVersion::V0_2_0)
    );
}

#[test]
fn a_0_1_0_and_a_0_2_0_plugin_serve_the_same_member_each_with_what_its_version_knows() {
    let t = runtime();
    let old = load(&t.runtime, "parking-perk");
    let new = load(&t.runtime, "club-lounge");
    let mut inv = invocation(MONDAY_MARCH_17_0930_UTC8_MS, "");
    inv.budgets = vec![budget("mall", BudgetKind::PerkValue, None, 5_000)];
    let ctx = CallContext::new(inv);
    let member = card_holder();

    let parking = old.list_perks(&ctx, &member).expect("0.1.0 lists");
    assert_eq!(parking.value.len(), 1, "gold member: free parking");
    let lounge = new.list_perks(&ctx, &member).expect("0.2.0 lists");
    assert_eq!(
        lounge.value.len(),
        1,
        "the card's lounge benefit opens the lounge"
    );
    assert_eq!(
        lounge.value[0].title, "VIP lounge pass",
        "stored value >= 200.00"
    );
    assert_eq!(lounge.value[0].grant, Grant::FreeItem("lounge-pass".into()));

    // The 0.1.0 receipt records the member without what 0.1.0 does not know; the 0.2.0 one
    // records all of it.
    let old_input = parking.receipt.call_input().expect("input");
    let new_input = lounge.receipt.call_input().expect("input");
    for hidden in [
        "stored_value_cents",
        "pending_points",
        "membership",
        "budgets",
    ] {
        assert!(
            !parking.receipt.input.contains(hidden),
            "0.1.0 saw {hidden}"
        );
        assert!(
            lounge.receipt.input.contains(hidden),
            "0.2.0 missed {hidden}"
        );
    }
    assert_eq!(old_input.invocation.budgets, Vec::new());
    assert_eq!(new_input.invocation.budgets.len(), 1);

    // Without the card the 0.2.0 plugin offers nothing, the 0.1.0 one is unchanged.
    let mut plain = card_holder();
    plain.membership = None;
    assert!(new
        .list_perks(&ctx, &plain)
        .expect("lists")
        .value
        .is_empty());
    let again = old.list_perks(&ctx, &plain).expect("lists");
    assert_eq!(again.value, parking.value);
    assert_eq!(
        again.receipt.input_sha256, parking.receipt.input_sha256,
        "a 0.1.0 receipt does not depend on what 0.1.0 cannot see"
    );

    // Both replay bit for bit.
    for (plugin, receipt) in [(&old, &parking.receipt), (&new, &lounge.receipt)] {
        let replay = plugin.replay(receipt).expect("replays");
        assert!(replay.matches, "{}", receipt.plugin);
        assert_eq!(replay.replayed_fuel_used, receipt.fuel_used);
    }
}

#[test]
fn a_0_2_0_plugin_is_handed_only_the_budgets_of_its_brands_that_name_it_or_no_plugin() {
    let t = runtime();
    let new = load(&t.runtime, "club-lounge");
    let mut inv = invocation(MONDAY_MARCH_17_0930_UTC8_MS, "");
    inv.budgets = vec![
        budget("coffee", BudgetKind::PerkValue, None, 0),
        budget("mall", BudgetKind::PerkValue, Some("parking-perk"), 0),
        budget("mall", BudgetKind::PerkValue, Some("club-lounge"), 799),
    ];
    let ctx = CallContext::new(inv);
    let listed = new.list_perks(&ctx, &card_holder()).expect("lists");
    assert!(
        listed.value.is_empty(),
        "799 left of the lounge's own budget: less than a pass"
    );
    let seen = listed
        .receipt
        .call_input()
        .expect("input")
        .invocation
        .budgets;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].plugin.as_deref(), Some("club-lounge"));

    let request = RedeemRequest {
        perk_id: "lounge-pass".into(),
        redemption_id: "r-1".into(),
    };
    match new
        .redeem_perk(&ctx, &card_holder(), &request)
        .expect("decides")
        .value
    {
        RedeemDecision::Refused(reason) => assert!(reason.contains("7.99"), "{reason}"),
        other => panic!("expected a refusal: {other:?}"),
    }
    // The other plugins' budgets are not the lounge's business: with only those, it lists.
    let mut others = invocation(MONDAY_MARCH_17_0930_UTC8_MS, "");
    others.budgets = vec![
        budget("coffee", BudgetKind::PerkValue, None, 0),
        budget("mall", BudgetKind::PerkValue, Some("parking-perk"), 0),
    ];
    let listed = new
        .list_perks(&CallContext::new(others), &card_holder())
        .expect("lists");
    assert_eq!(listed.value.len(), 1);
}

#[test]
fn the_new_settle_kinds_reach_0_2_0_and_never_0_1_0() {
    let t = runtime();
    let old = load(&t.runtime, "parking-perk");
    let new = load(&t.runtime, "club-lounge");
    let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, ""));
    let mut fee = event(SettleKind::MembershipFee, "coffee", "coffee", "mall", 9_900);
    fee.reference = Some("coalition-plus".into());
    let lines = new.settle(&ctx, &fee).expect("0.2.0 settles a fee");
    assert_eq!(lines.value.len(), 1);
    assert_eq!(
        (
            lines.value[0].payer.as_str(),
            lines.value[0].payee.as_str(),
            lines.value[0].amount_cents
        ),
        ("coffee", "mall", 9_405)
    );
    let refused = old
        .settle(&ctx, &fee)
        .expect_err("0.1.0 has no membership-fee");
    assert!(
        matches!(&refused.kind, ErrorKind::InputRejected(reason) if reason.contains("0.1.0")),
        "{refused:?}"
    );
    assert!(
        !refused.kind.is_plugin_fault(),
        "the host's mistake, not the plugin's"
    );
    assert!(!WitVersion::V0_1_0.knows_settle_kind(SettleKind::StoredValueRedeemed));
    assert!(WitVersion::V0_2_0.knows_settle_kind(SettleKind::StoredValueRedeemed));
}

#[test]
fn a_0_2_0_bonus_sees_the_multiplied_base_and_keeps_within_the_bonus_budget() {
    let t = runtime();
    let new = load(&t.runtime, "club-lounge");
    let mut inv = invocation(MONDAY_MARCH_17_0930_UTC8_MS, "mall");
    inv.budgets = vec![budget("mall", BudgetKind::BonusPoints, None, 4)];
    let order = order("mall", 20);
    assert_eq!(order.base_points, 175);
    let bonuses = new
        .points_bonus(&CallContext::new(inv.clone()), &card_holder(), &order)
        .expect("bonus");
    assert_eq!(bonuses.value.len(), 1);
    assert_eq!(
        bonuses.value[0].points, 4,
        "10% of 175 is 17, cut to the 4 left"
    );
    assert!(
        bonuses.value[0].reason.contains("cut"),
        "{}",
        bonuses.value[0].reason
    );
    inv.budgets.clear();
    let whole = new
        .points_bonus(&CallContext::new(inv), &card_holder(), &order)
        .expect("bonus");
    assert_eq!(whole.value[0].points, 17);
}

#[test]
fn a_component_loads_only_under_the_version_it_was_built_for() {
    let t = runtime();
    for (name, wrong) in [
        ("club-lounge", WitVersion::V0_1_0),
        ("parking-perk", WitVersion::V0_2_0),
    ] {
        let f = fixture(name);
        let mut manifest = f.manifest();
        manifest.wit = wrong;
        let err = t
            .runtime
            .load(&manifest, &f.bytes, None)
            .expect_err("the other version's manifest is refused");
        let text = err.to_string();
        assert!(text.contains("coalition:plugin/"), "{name}: {text}");
    }
}
