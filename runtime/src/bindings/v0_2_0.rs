//! Bindings for the frozen `coalition:plugin@0.2.0` package and conversions to the model: 0.1.0
//! plus budgets in the invocation, stored value, pending points and the membership card in the
//! member context, and two settle kinds.

use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, HasData, Instance, InstancePre, Lift, Lower,
};

use crate::bindings::common::{hook_bindings, host_imports};
use wasmtime::Store;

use crate::bindings::GuestError;
use crate::model;
use crate::plugin::HookArgs;
use crate::sandbox::{CallState, HostCtx};

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit/coalition-plugin@0.2.0",
    ownership: Borrowing { duplicate_if_necessary: true },
});

host_imports!();

hook_bindings!("coalition:plugin/hooks@0.2.0");

/// The budgets a borrowed `invocation` points into.
struct InvocationParts<'a> {
    budgets: Vec<wit::BudgetRemaining<'a>>,
}

impl<'a> InvocationParts<'a> {
    fn new(i: &'a model::Invocation) -> Self {
        InvocationParts {
            budgets: i
                .budgets
                .iter()
                .map(|b| wit::BudgetRemaining {
                    brand: &b.brand,
                    kind: match b.kind {
                        model::BudgetKind::BonusPoints => wit::BudgetKind::BonusPoints,
                        model::BudgetKind::PerkValue => wit::BudgetKind::PerkValue,
                        model::BudgetKind::CouponValue => wit::BudgetKind::CouponValue,
                    },
                    this_plugin_only: b.plugin.is_some(),
                    amount: b.amount,
                    remaining: b.remaining,
                    period_ends_ms: b.period_ends_ms,
                })
                .collect(),
        }
    }

    fn view<'b>(&'b self, i: &'b model::Invocation) -> wit::Invocation<'b> {
        wit::Invocation {
            now_ms: i.now_ms,
            utc_offset_minutes: i.utc_offset_minutes,
            seed: i.seed,
            brand: &i.brand,
            budgets: &self.budgets,
        }
    }
}

/// The lists a borrowed `member-context` points into.
struct MemberParts<'a> {
    tags: Vec<&'a str>,
    spend: Vec<wit::BrandSpend<'a>>,
    benefits: Vec<&'a str>,
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
            benefits: m
                .membership
                .iter()
                .flat_map(|c| c.benefits.iter().map(String::as_str))
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
            stored_value_cents: m.stored_value_cents,
            pending_points: m.pending_points,
            membership: m.membership.as_ref().map(|c| wit::Membership {
                plan: &c.plan,
                brand: &c.brand,
                benefits: &self.benefits,
                points_multiplier_percent: c.points_multiplier_percent,
                tier_floor: c.tier_floor.as_deref(),
                expires_at_ms: c.expires_at_ms,
            }),
        }
    }
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
            model::SettleKind::StoredValueRedeemed => wit::SettleKind::StoredValueRedeemed,
            model::SettleKind::MembershipFee => wit::SettleKind::MembershipFee,
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
