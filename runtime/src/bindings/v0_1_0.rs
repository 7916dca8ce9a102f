//! Bindings for the frozen `coalition:plugin@0.1.0` package and conversions to the model.

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
    path: "../wit/coalition-plugin@0.1.0",
    ownership: Borrowing { duplicate_if_necessary: true },
});

host_imports!();

hook_bindings!("coalition:plugin/hooks@0.1.0");

/// 0.1.0's invocation has no list: nothing to hold.
struct InvocationParts;

impl InvocationParts {
    fn new(_: &model::Invocation) -> Self {
        InvocationParts
    }

    fn view<'b>(&self, i: &'b model::Invocation) -> wit::Invocation<'b> {
        wit::Invocation {
            now_ms: i.now_ms,
            utc_offset_minutes: i.utc_offset_minutes,
            seed: i.seed,
            brand: &i.brand,
        }
    }
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

fn event_to(e: &model::SettleEvent) -> wit::SettleEvent<'_> {
    wit::SettleEvent {
        event_id: &e.event_id,
        kind: match e.kind {
            model::SettleKind::PointsIssued => wit::SettleKind::PointsIssued,
            model::SettleKind::PointsRedeemed => wit::SettleKind::PointsRedeemed,
            model::SettleKind::PerkRedeemed => wit::SettleKind::PerkRedeemed,
            model::SettleKind::CouponHonoured => wit::SettleKind::CouponHonoured,
            model::SettleKind::Refund => wit::SettleKind::Refund,
            // Never reached: the projection refuses a 0.1.0 call with a 0.2.0 kind
            // (`bindings::Projection`); a refund is the closest neutral 0.1.0 value.
            model::SettleKind::StoredValueRedeemed | model::SettleKind::MembershipFee => {
                wit::SettleKind::Refund
            }
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
