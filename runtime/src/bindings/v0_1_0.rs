//! Bindings for the frozen `coalition:plugin@0.1.0` package and conversions to the model.

use wasmtime::component::HasData;
use wasmtime::Store;

use crate::bindings::GuestError;
use crate::model;
use crate::plugin::HookArgs;
use crate::sandbox::{CallState, HostCtx};

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit/coalition-plugin@0.1.0",
    ownership: Borrowing { duplicate_if_necessary: true },
});

use self::Plugin as World;

use self::coalition::plugin::host::LogLevel;
use self::coalition::plugin::types as wit;

struct HostData;

impl HasData for HostData {
    type Data<'a> = &'a mut HostCtx;
}

impl coalition::plugin::host::Host for HostCtx {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Debug => model::LogLevel::Debug,
            LogLevel::Info => model::LogLevel::Info,
            LogLevel::Warn => model::LogLevel::Warn,
            LogLevel::Error => model::LogLevel::Error,
        };
        HostCtx::log(self, level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        HostCtx::config(self, &key)
    }
}

impl wit::Host for HostCtx {}

pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    World::add_to_linker::<CallState, HostData>(linker, |state| &mut state.host)
}

pub(crate) fn describe(
    pre: &PluginPre<CallState>,
    store: &mut Store<CallState>,
) -> wasmtime::Result<model::PluginInfo> {
    let world = pre.instantiate(&mut *store)?;
    let info = world.coalition_plugin_hooks().call_describe(&mut *store)?;
    Ok(model::PluginInfo {
        name: info.name,
        version: info.version,
        hooks: info.hooks.into_iter().map(hook_from).collect(),
        brands: info.brands,
    })
}

pub(crate) fn call(
    pre: &PluginPre<CallState>,
    store: &mut Store<CallState>,
    invocation: &model::Invocation,
    args: &HookArgs<'_>,
) -> wasmtime::Result<Result<model::HookOutput, GuestError>> {
    let world = pre.instantiate(&mut *store)?;
    let hooks = world.coalition_plugin_hooks();
    // Arguments are lowered straight from the model's strings: the bindings borrow them
    // (`ownership: Borrowing`), so no string is copied on the host side.
    let inv = wit::Invocation {
        now_ms: invocation.now_ms,
        utc_offset_minutes: invocation.utc_offset_minutes,
        seed: invocation.seed,
        brand: &invocation.brand,
    };
    let output = match *args {
        HookArgs::PointsBonus { member, order } => {
            let member_parts = MemberParts::new(member);
            let lines = lines_to(&order.lines);
            let order = wit::Order {
                order_id: &order.order_id,
                brand: &order.brand,
                lines: &lines,
                total_cents: order.total_cents,
                paid_with_points_cents: order.paid_with_points_cents,
                base_points: order.base_points,
            };
            hooks
                .call_points_bonus(&mut *store, inv, member_parts.view(member), order)?
                .map(|bonuses| {
                    model::HookOutput::PointsBonus(bonuses.into_iter().map(bonus_from).collect())
                })
        }
        HookArgs::ListPerks { member } => {
            let member_parts = MemberParts::new(member);
            hooks
                .call_list_perks(&mut *store, inv, member_parts.view(member))?
                .map(|perks| {
                    model::HookOutput::ListPerks(perks.into_iter().map(perk_from).collect())
                })
        }
        HookArgs::RedeemPerk { member, request } => {
            let member_parts = MemberParts::new(member);
            let request = wit::RedeemRequest {
                perk_id: &request.perk_id,
                redemption_id: &request.redemption_id,
            };
            hooks
                .call_redeem_perk(&mut *store, inv, member_parts.view(member), request)?
                .map(|decision| {
                    model::HookOutput::RedeemPerk(match decision {
                        wit::RedeemDecision::Granted(perk) => {
                            model::RedeemDecision::Granted(perk_from(perk))
                        }
                        wit::RedeemDecision::Refused(reason) => {
                            model::RedeemDecision::Refused(reason)
                        }
                    })
                })
        }
        HookArgs::ApplyCoupon { coupon, cart } => {
            let params: Vec<(&str, &str)> = coupon
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let coupon = wit::Coupon {
                code: &coupon.code,
                template_id: &coupon.template_id,
                funding_brand: &coupon.funding_brand,
                params: &params,
            };
            let lines = lines_to(&cart.lines);
            let applied: Vec<&str> = cart.applied_templates.iter().map(String::as_str).collect();
            let cart = wit::Cart {
                brand: &cart.brand,
                lines: &lines,
                total_cents: cart.total_cents,
                applied_templates: &applied,
            };
            hooks
                .call_apply_coupon(&mut *store, inv, coupon, cart)?
                .map(|decision| {
                    model::HookOutput::ApplyCoupon(match decision {
                        wit::CouponDecision::Applied(lines) => model::CouponDecision::Applied(
                            lines
                                .into_iter()
                                .map(|l| model::LineDiscount {
                                    line_id: l.line_id,
                                    discount_cents: l.discount_cents,
                                })
                                .collect(),
                        ),
                        wit::CouponDecision::Rejected(reason) => {
                            model::CouponDecision::Rejected(reason)
                        }
                    })
                })
        }
        HookArgs::Settle { event } => {
            hooks
                .call_settle(&mut *store, inv, event_to(event))?
                .map(|lines| {
                    model::HookOutput::Settle(
                        lines
                            .into_iter()
                            .map(|l| model::SettlementLine {
                                payer: l.payer,
                                payee: l.payee,
                                amount_cents: l.amount_cents,
                                reason: l.reason,
                            })
                            .collect(),
                    )
                })
        }
    };
    Ok(output.map_err(|e| match e {
        wit::HookError::NotImplemented => GuestError::NotImplemented,
        wit::HookError::InvalidInput(reason) => {
            GuestError::Failure(model::HookFailure::InvalidInput(reason))
        }
        wit::HookError::Failed(reason) => GuestError::Failure(model::HookFailure::Failed(reason)),
    }))
}

/// The lists a borrowed `member-context` points into.
struct MemberParts<'a> {
    tags: Vec<&'a str>,
    spend: Vec<wit::BrandSpend<'a>>,
}

impl<'a> MemberParts<'a> {
    fn new(m: &'a model::MemberContext) -> Self {
        MemberParts {
            tags: m.tags.iter().map(String::as_str).collect(),
            spend: m
                .spend
                .iter()
                .map(|s| wit::BrandSpend {
                    brand: &s.brand,
                    spend_7d_cents: s.spend_7d_cents,
                    spend_30d_cents: s.spend_30d_cents,
                    visits_30d: s.visits_30d,
                })
                .collect(),
        }
    }

    fn view<'b>(&'b self, m: &'b model::MemberContext) -> wit::MemberContext<'b> {
        wit::MemberContext {
            member_ref: &m.member_ref,
            tier: &m.tier,
            tier_rank: m.tier_rank,
            tags: &self.tags,
            birthday_month: m.birthday_month,
            points_balance: m.points_balance,
            qualifying_spend_cents: m.qualifying_spend_cents,
            spend: &self.spend,
            member_since_ms: m.member_since_ms,
        }
    }
}

fn lines_to(lines: &[model::OrderLine]) -> Vec<wit::OrderLine<'_>> {
    lines
        .iter()
        .map(|l| wit::OrderLine {
            line_id: &l.line_id,
            sku: &l.sku,
            category: &l.category,
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
            excluded: l.excluded,
        })
        .collect()
}

fn event_to(e: &model::SettleEvent) -> wit::SettleEvent<'_> {
    wit::SettleEvent {
        event_id: &e.event_id,
        kind: match e.kind {
            model::SettleKind::PointsIssued => wit::SettleKind::PointsIssued,
            model::SettleKind::PointsRedeemed => wit::SettleKind::PointsRedeemed,
            model::SettleKind::PerkRedeemed => wit::SettleKind::PerkRedeemed,
            model::SettleKind::CouponHonoured => wit::SettleKind::CouponHonoured,
            model::SettleKind::Refund => wit::SettleKind::Refund,
        },
        brand: &e.brand,
        funding_brand: &e.funding_brand,
        honouring_brand: &e.honouring_brand,
        reference: e.reference.as_deref(),
        points: e.points,
        value_cents: e.value_cents,
        occurred_at_ms: e.occurred_at_ms,
    }
}

fn hook_from(hook: wit::Hook) -> model::Hook {
    match hook {
        wit::Hook::PointsBonus => model::Hook::PointsBonus,
        wit::Hook::ListPerks => model::Hook::ListPerks,
        wit::Hook::RedeemPerk => model::Hook::RedeemPerk,
        wit::Hook::ApplyCoupon => model::Hook::ApplyCoupon,
        wit::Hook::Settle => model::Hook::Settle,
    }
}

fn bonus_from(b: wit::Bonus) -> model::Bonus {
    model::Bonus {
        points: b.points,
        code: b.code,
        reason: b.reason,
    }
}

fn perk_from(p: wit::Perk) -> model::Perk {
    model::Perk {
        id: p.id,
        title: p.title,
        description: p.description,
        funding_brand: p.funding_brand,
        honouring_brand: p.honouring_brand,
        cost_points: p.cost_points,
        value_cents: p.value_cents,
        grant: match p.grant {
            wit::Grant::Coupon(template) => model::Grant::Coupon(template),
            wit::Grant::FreeItem(sku) => model::Grant::FreeItem(sku),
            wit::Grant::DiscountCents(cents) => model::Grant::DiscountCents(cents),
        },
        valid_until_ms: p.valid_until_ms,
    }
}
