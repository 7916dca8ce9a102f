//! **coupon-logic** — brand-agnostic coupon templates (`apply-coupon` only).
//!
//! The template kind is the coupon's `kind` param, or else its template id:
//!
//! | kind | params | discount |
//! |---|---|---|
//! | `threshold` | `threshold-cents`, `off-cents` | `off-cents` once eligible items reach `threshold-cents`, spread over them in proportion to their totals, exact to the cent |
//! | `percent-off-category` | `category`, `percent-bp`, optional `cap-cents` | `percent-bp` of the category's items, rounded down, at most `cap-cents`, spread likewise |
//! | `bogo` | `sku` | every second unit of the sku free, the cheapest units first |
//!
//! Any template may set `exclusive = "true"`; config `exclusive_templates` lists more. Excluded
//! lines (gift cards, delivery fees) are never discounted. Global caps from config bound every
//! coupon (`max_discount_cents`, `max_discount_bp_of_cart`, `max_coupons_per_cart`); a capped
//! discount is re-spread over the same lines, so it still never exceeds a line.
//!
//! A coupon that does not apply is *rejected* with a reason for the counter; a coupon whose
//! params are malformed is an *invalid-input* error (the template is misconfigured).

use coalition_sdk::money::{
    basis_points_of, format_cents, split_proportionally, Rounding, BASIS_POINTS_PER_WHOLE,
};
use coalition_sdk::{
    config, export_plugin, Cart, Coupon, CouponDecision, Hook, HookError, HookResult, Invocation,
    LineDiscount, OrderLine, Plugin, PluginInfo,
};

/// Default of config `max_coupons_per_cart` (keep equal to plugin.toml).
pub const DEFAULT_MAX_COUPONS_PER_CART: i64 = 3;
/// Default of config `max_discount_cents`.
pub const DEFAULT_MAX_DISCOUNT_CENTS: i64 = 50_000;
/// Default of config `max_discount_bp_of_cart`.
pub const DEFAULT_MAX_DISCOUNT_BP_OF_CART: i64 = 5_000;

/// The coupon engine. Public so the runtime can call it natively as a baseline.
pub struct CouponLogic;

/// A template, parsed from the coupon's params.
#[derive(Debug, PartialEq, Eq)]
enum Template {
    Threshold {
        threshold_cents: i64,
        off_cents: i64,
    },
    PercentOffCategory {
        category: String,
        percent_bp: i64,
        cap_cents: Option<i64>,
    },
    Bogo {
        sku: String,
    },
}

fn param<'a>(coupon: &'a Coupon, key: &str) -> Option<&'a str> {
    coupon
        .params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(coupon: &'a Coupon, key: &str) -> HookResult<&'a str> {
    param(coupon, key).ok_or_else(|| {
        HookError::invalid_input(format!("template {} lacks param {key}", coupon.template_id))
    })
}

fn integer(coupon: &Coupon, key: &str, range: std::ops::RangeInclusive<i64>) -> HookResult<i64> {
    let raw = required(coupon, key)?;
    match raw.trim().parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(HookError::invalid_input(format!(
            "template {}: param {key} = {raw:?} must be an integer in {}..={}",
            coupon.template_id,
            range.start(),
            range.end()
        ))),
    }
}

impl Template {
    fn parse(coupon: &Coupon) -> HookResult<Template> {
        let kind = param(coupon, "kind").unwrap_or(&coupon.template_id);
        match kind {
            "threshold" => Ok(Template::Threshold {
                threshold_cents: integer(coupon, "threshold-cents", 0..=i64::MAX)?,
                off_cents: integer(coupon, "off-cents", 1..=i64::MAX)?,
            }),
            "percent-off-category" => Ok(Template::PercentOffCategory {
                category: required(coupon, "category")?.to_owned(),
                percent_bp: integer(coupon, "percent-bp", 1..=BASIS_POINTS_PER_WHOLE)?,
                cap_cents: match param(coupon, "cap-cents") {
                    None => None,
                    Some(_) => Some(integer(coupon, "cap-cents", 0..=i64::MAX)?),
                },
            }),
            "bogo" => Ok(Template::Bogo {
                sku: required(coupon, "sku")?.to_owned(),
            }),
            other => Err(HookError::invalid_input(format!(
                "template {}: unknown kind {other:?} (threshold, percent-off-category, bogo)",
                coupon.template_id
            ))),
        }
    }
}

/// A line that may be discounted, with its total.
struct Eligible<'a> {
    line: &'a OrderLine,
    total_cents: i64,
}

fn eligible_lines(cart: &Cart, keep: impl Fn(&OrderLine) -> bool) -> HookResult<Vec<Eligible<'_>>> {
    let mut lines = Vec::new();
    for line in cart.lines.iter().filter(|l| !l.excluded && keep(l)) {
        let total_cents = line.total_cents()?;
        if total_cents > 0 {
            lines.push(Eligible { line, total_cents });
        }
    }
    Ok(lines)
}

fn sum(lines: &[Eligible<'_>]) -> HookResult<i64> {
    coalition_sdk::money::checked_sum(lines.iter().map(|e| e.total_cents))
        .ok_or_else(|| HookError::invalid_input("cart total overflows"))
}

/// Spreads `total_cents` over `lines` in proportion to their totals (never above a line when
/// `total_cents` ≤ their sum).
fn spread(total_cents: i64, lines: &[Eligible<'_>]) -> HookResult<Vec<(String, i64)>> {
    let weights: Vec<i64> = lines.iter().map(|e| e.total_cents).collect();
    let shares = split_proportionally(total_cents, &weights)
        .ok_or_else(|| HookError::failed("could not spread the discount"))?;
    Ok(lines
        .iter()
        .zip(shares)
        .map(|(e, share)| (e.line.line_id.clone(), share))
        .collect())
}

/// Per-line discounts, or the reason the coupon does not apply.
type Outcome = Result<Vec<(String, i64)>, String>;

fn threshold(cart: &Cart, threshold_cents: i64, off_cents: i64) -> HookResult<Outcome> {
    let lines = eligible_lines(cart, |_| true)?;
    let eligible_cents = sum(&lines)?;
    if eligible_cents < threshold_cents {
        return Ok(Err(format!(
            "Spend {} to use this coupon; eligible items come to {}.",
            format_cents(threshold_cents),
            format_cents(eligible_cents)
        )));
    }
    // Never more off than the eligible items cost (a 0 threshold with a big amount).
    Ok(Ok(spread(off_cents.min(eligible_cents), &lines)?))
}

fn percent_off_category(
    cart: &Cart,
    category: &str,
    percent_bp: i64,
    cap_cents: Option<i64>,
) -> HookResult<Outcome> {
    let lines = eligible_lines(cart, |l| l.category == category)?;
    if lines.is_empty() {
        return Ok(Err(format!("No {category} items in the cart.")));
    }
    let category_cents = sum(&lines)?;
    // One rounding for the whole category, not one per line: the member never loses a cent
    // per line to rounding.
    let mut off = basis_points_of(category_cents, percent_bp, Rounding::Down)
        .ok_or_else(|| HookError::invalid_input("category total too large"))?;
    if let Some(cap) = cap_cents {
        off = off.min(cap);
    }
    Ok(Ok(spread(off, &lines)?))
}

fn bogo(cart: &Cart, sku: &str) -> HookResult<Outcome> {
    let mut lines = eligible_lines(cart, |l| l.sku == sku)?;
    let units: u64 = lines.iter().map(|e| u64::from(e.line.quantity)).sum();
    if units < 2 {
        return Ok(Err(format!("Buy two of {sku} to get one free.")));
    }
    // Cheapest units go free first; equal prices keep cart order (stable sort).
    lines.sort_by_key(|e| e.line.unit_price_cents);
    let mut free_units = units / 2;
    let mut discounts = Vec::new();
    for e in &lines {
        if free_units == 0 {
            break;
        }
        let free_here = free_units.min(u64::from(e.line.quantity));
        free_units -= free_here;
        let free_here =
            i64::try_from(free_here).map_err(|_| HookError::invalid_input("quantity too large"))?;
        let off = e
            .line
            .unit_price_cents
            .checked_mul(free_here)
            .ok_or_else(|| HookError::invalid_input("line total overflows"))?;
        discounts.push((e.line.line_id.clone(), off));
    }
    Ok(Ok(discounts))
}

/// Stacking rules; `Some(reason)` when the coupon may not join the cart.
fn stacking_refusal(coupon: &Coupon, cart: &Cart) -> HookResult<Option<String>> {
    if cart.has_applied(&coupon.template_id) {
        return Ok(Some(
            "A coupon of this kind is already applied to the cart.".into(),
        ));
    }
    let exclusive = config::get_list("exclusive_templates");
    if let Some(blocker) = cart
        .applied_templates
        .iter()
        .find(|t| exclusive.contains(t))
    {
        return Ok(Some(format!(
            "Not stackable: coupon {blocker} already applied cannot be combined."
        )));
    }
    let this_exclusive =
        param(coupon, "exclusive") == Some("true") || exclusive.contains(&coupon.template_id);
    if this_exclusive && !cart.applied_templates.is_empty() {
        return Ok(Some(
            "Not stackable: this coupon cannot be combined with other coupons.".into(),
        ));
    }
    let max_coupons = config::get_i64_or("max_coupons_per_cart", DEFAULT_MAX_COUPONS_PER_CART)?;
    let applied = i64::try_from(cart.applied_templates.len()).unwrap_or(i64::MAX);
    if applied >= max_coupons {
        return Ok(Some(format!("At most {max_coupons} coupons per purchase.")));
    }
    Ok(None)
}

/// Applies the global caps; a capped total is re-spread over the same lines in proportion to
/// their uncapped discounts, so no line gets more than before.
fn capped(cart: &Cart, discounts: Vec<(String, i64)>) -> HookResult<Vec<(String, i64)>> {
    let max_cents = config::get_i64_or("max_discount_cents", DEFAULT_MAX_DISCOUNT_CENTS)?.max(0);
    let max_bp = config::get_i64_or("max_discount_bp_of_cart", DEFAULT_MAX_DISCOUNT_BP_OF_CART)?;
    let cart_cents = cart.lines_total_cents()?;
    let by_share = basis_points_of(
        cart_cents,
        max_bp.clamp(0, BASIS_POINTS_PER_WHOLE),
        Rounding::Down,
    )
    .ok_or_else(|| HookError::invalid_input("cart total too large"))?;
    let cap = max_cents.min(by_share);
    let weights: Vec<i64> = discounts.iter().map(|(_, d)| *d).collect();
    let total = coalition_sdk::money::checked_sum(weights.iter().copied())
        .ok_or_else(|| HookError::invalid_input("discount overflows"))?;
    if total <= cap {
        return Ok(discounts);
    }
    let shares = split_proportionally(cap, &weights)
        .ok_or_else(|| HookError::failed("could not cap the discount"))?;
    Ok(discounts
        .into_iter()
        .zip(shares)
        .map(|((line, _), share)| (line, share))
        .collect())
}

impl Plugin for CouponLogic {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "coupon-logic".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::ApplyCoupon],
            brands: Vec::new(),
        }
    }

    fn apply_coupon(_inv: &Invocation, coupon: &Coupon, cart: &Cart) -> HookResult<CouponDecision> {
        let template = Template::parse(coupon)?;
        if let Some(reason) = stacking_refusal(coupon, cart)? {
            return Ok(CouponDecision::rejected(reason));
        }
        let outcome = match &template {
            Template::Threshold {
                threshold_cents,
                off_cents,
            } => threshold(cart, *threshold_cents, *off_cents)?,
            Template::PercentOffCategory {
                category,
                percent_bp,
                cap_cents,
            } => percent_off_category(cart, category, *percent_bp, *cap_cents)?,
            Template::Bogo { sku } => bogo(cart, sku)?,
        };
        let discounts = match outcome {
            Ok(discounts) => capped(cart, discounts)?,
            Err(reason) => return Ok(CouponDecision::rejected(reason)),
        };
        let discounts: Vec<LineDiscount> = discounts
            .into_iter()
            .filter(|(_, cents)| *cents > 0)
            .map(|(line_id, discount_cents)| LineDiscount {
                line_id,
                discount_cents,
            })
            .collect();
        if discounts.is_empty() {
            return Ok(CouponDecision::rejected(
                "This coupon gives no discount on this cart.",
            ));
        }
        Ok(CouponDecision::Applied(discounts))
    }
}

export_plugin!(CouponLogic);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{self, check_coupon_decision, TestHost};

    const MANIFEST: &str = include_str!("../plugin.toml");

    fn spend_200_get_30() -> Coupon {
        testing::coupon("spend-200-get-30")
            .param("kind", "threshold")
            .param("threshold-cents", "20000")
            .param("off-cents", "3000")
            .build()
    }

    fn snacks_15_percent(cap: &str) -> Coupon {
        testing::coupon("snacks-15")
            .param("kind", "percent-off-category")
            .param("category", "snacks")
            .param("percent-bp", "1500")
            .param("cap-cents", cap)
            .build()
    }

    fn apply(coupon: &Coupon, cart: &Cart) -> CouponDecision {
        let decision = CouponLogic::apply_coupon(&testing::invocation().build(), coupon, cart)
            .expect("no hook error");
        check_coupon_decision(cart, &decision).expect("decision passes the host's invariants");
        decision
    }

    fn applied(decision: &CouponDecision) -> Vec<(&str, i64)> {
        match decision {
            CouponDecision::Applied(lines) => lines
                .iter()
                .map(|l| (l.line_id.as_str(), l.discount_cents))
                .collect(),
            CouponDecision::Rejected(reason) => panic!("rejected: {reason}"),
        }
    }

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<CouponLogic>(MANIFEST).expect("plugin.toml agrees with info()");
    }

    #[test]
    fn threshold_spreads_the_amount_in_proportion_and_skips_excluded_lines() {
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 10_000)
            .line("scarf", "fashion", 1, 5_000)
            .line("belt", "fashion", 1, 5_000)
            .excluded_line("gift-card", "gift-card", 1, 10_000)
            .build();
        assert_eq!(
            applied(&apply(&spend_200_get_30(), &cart)),
            vec![("l1", 1_500), ("l2", 750), ("l3", 750)]
        );
    }

    #[test]
    fn threshold_remainder_cents_are_not_lost() {
        let cart = testing::cart("mall").lines(3, "misc", 3_333).build();
        let coupon = testing::coupon("spend-50-get-10")
            .param("kind", "threshold")
            .param("threshold-cents", "5000")
            .param("off-cents", "1000")
            .build();
        // 1000 / 3 = 333.33: the spare cent goes to the first line; the total stays 1000.
        assert_eq!(
            applied(&apply(&coupon, &cart)),
            vec![("l1", 334), ("l2", 333), ("l3", 333)]
        );
    }

    #[test]
    fn below_threshold_is_rejected_with_amounts() {
        // The gift card does not count towards the threshold.
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 15_000)
            .excluded_line("gift-card", "gift-card", 1, 10_000)
            .build();
        assert_eq!(
            apply(&spend_200_get_30(), &cart),
            CouponDecision::Rejected(
                "Spend 200.00 to use this coupon; eligible items come to 150.00.".into()
            )
        );
    }

    #[test]
    fn percent_off_category_rounds_once_and_respects_the_cap() {
        let cart = testing::cart("cinema")
            .line("popcorn", "snacks", 1, 1_200)
            .line("ticket", "ticket", 2, 4_000)
            .line("soda", "snacks", 2, 900)
            .build();
        // 15% of 3000 snack cents = 450, spread 1200:1800.
        assert_eq!(
            applied(&apply(&snacks_15_percent("10000"), &cart)),
            vec![("l1", 180), ("l3", 270)]
        );
        // Capped at 300, spread likewise.
        assert_eq!(
            applied(&apply(&snacks_15_percent("300"), &cart)),
            vec![("l1", 120), ("l3", 180)]
        );
    }

    #[test]
    fn category_absent_is_rejected() {
        let cart = testing::cart("cinema")
            .line("ticket", "ticket", 2, 4_000)
            .build();
        assert_eq!(
            apply(&snacks_15_percent("300"), &cart),
            CouponDecision::Rejected("No snacks items in the cart.".into())
        );
    }

    #[test]
    fn bogo_makes_every_second_unit_free_cheapest_first() {
        let coupon = testing::coupon("bogo").param("sku", "popcorn").build();
        let cart = testing::cart("cinema")
            .line("popcorn", "snacks", 1, 600)
            .line("popcorn", "snacks", 3, 500)
            .line("soda", "snacks", 1, 400)
            .build();
        // Four popcorn units: two free, both at 500 on line l2.
        assert_eq!(applied(&apply(&coupon, &cart)), vec![("l2", 1_000)]);
        let cart = testing::cart("cinema")
            .line("popcorn", "snacks", 1, 600)
            .line("popcorn", "snacks", 2, 500)
            .build();
        // Three units: one free, the cheapest (500).
        assert_eq!(applied(&apply(&coupon, &cart)), vec![("l2", 500)]);
        let single = testing::cart("cinema")
            .line("popcorn", "snacks", 1, 600)
            .build();
        assert_eq!(
            apply(&coupon, &single),
            CouponDecision::Rejected("Buy two of popcorn to get one free.".into())
        );
    }

    #[test]
    fn exclusive_templates_do_not_stack() {
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 30_000)
            .applied("vip-night")
            .build();
        let host = TestHost::new().with_config("exclusive_templates", "vip-night, staff");
        let decision = host.run(|| apply(&spend_200_get_30(), &cart));
        assert_eq!(
            decision,
            CouponDecision::Rejected(
                "Not stackable: coupon vip-night already applied cannot be combined.".into()
            )
        );

        let exclusive = testing::coupon("solo")
            .param("kind", "threshold")
            .param("threshold-cents", "0")
            .param("off-cents", "100")
            .param("exclusive", "true")
            .build();
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 30_000)
            .applied("spend-200-get-30")
            .build();
        assert_eq!(
            apply(&exclusive, &cart),
            CouponDecision::Rejected(
                "Not stackable: this coupon cannot be combined with other coupons.".into()
            )
        );
    }

    #[test]
    fn same_template_twice_and_too_many_coupons_are_rejected() {
        let twice = testing::cart("mall")
            .line("dress", "fashion", 1, 30_000)
            .applied("spend-200-get-30")
            .build();
        assert_eq!(
            apply(&spend_200_get_30(), &twice),
            CouponDecision::Rejected(
                "A coupon of this kind is already applied to the cart.".into()
            )
        );
        let full = testing::cart("mall")
            .line("dress", "fashion", 1, 30_000)
            .applied("a")
            .applied("b")
            .applied("c")
            .build();
        assert_eq!(
            apply(&spend_200_get_30(), &full),
            CouponDecision::Rejected("At most 3 coupons per purchase.".into())
        );
    }

    #[test]
    fn global_caps_bound_the_discount_and_keep_the_split() {
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 10_000)
            .line("scarf", "fashion", 1, 5_000)
            .line("belt", "fashion", 1, 5_000)
            .build();
        let host = TestHost::new().with_config("max_discount_cents", "1000");
        assert_eq!(
            applied(&host.run(|| apply(&spend_200_get_30(), &cart))),
            vec![("l1", 500), ("l2", 250), ("l3", 250)]
        );
        // 10% of a 20000-cent cart = 2000 < 3000.
        let host = TestHost::new().with_config("max_discount_bp_of_cart", "1000");
        assert_eq!(
            applied(&host.run(|| apply(&spend_200_get_30(), &cart))),
            vec![("l1", 1_000), ("l2", 500), ("l3", 500)]
        );
    }

    #[test]
    fn malformed_params_are_invalid_input() {
        let cart = testing::cart("mall")
            .line("dress", "fashion", 1, 30_000)
            .build();
        for coupon in [
            testing::coupon("t")
                .param("kind", "threshold")
                .param("threshold-cents", "lots")
                .param("off-cents", "1")
                .build(),
            testing::coupon("t")
                .param("kind", "threshold")
                .param("threshold-cents", "100")
                .build(),
            testing::coupon("p")
                .param("kind", "percent-off-category")
                .param("category", "x")
                .param("percent-bp", "10001")
                .build(),
            testing::coupon("mystery").build(),
        ] {
            let result = CouponLogic::apply_coupon(&testing::invocation().build(), &coupon, &cart);
            assert!(
                matches!(result, Err(HookError::InvalidInput(_))),
                "{coupon:?} gave {result:?}"
            );
        }
    }

    /// Deterministic pseudo-random carts: whatever the template and cart, every decision passes
    /// the host's invariants and no line is discounted above its total.
    #[test]
    fn no_cart_ever_gets_a_discount_above_a_line() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % bound
        };
        let coupons = [
            spend_200_get_30(),
            snacks_15_percent("700"),
            testing::coupon("bogo").param("sku", "sku-1").build(),
            testing::coupon("t0")
                .param("kind", "threshold")
                .param("threshold-cents", "0")
                .param("off-cents", "999999")
                .build(),
        ];
        for _ in 0..500 {
            let mut builder = testing::cart("mall");
            for _ in 0..=next(12) {
                let category = if next(2) == 0 { "snacks" } else { "other" };
                let sku = format!("sku-{}", next(3));
                let quantity = u32::try_from(next(5) + 1).expect("small");
                let price = i64::try_from(next(5_000)).expect("small");
                builder = if next(6) == 0 {
                    builder.excluded_line(&sku, category, quantity, price)
                } else {
                    builder.line(&sku, category, quantity, price)
                };
            }
            let cart = builder.build();
            for coupon in &coupons {
                apply(coupon, &cart);
            }
        }
    }
}
