"""Cinema popcorn, in Python: a free medium popcorn for 200 points to members who dined at the
restaurant in the last 7 days, funded and handed over by the cinema.

Built with `coalition plugin build` (componentize-py). The member context is pseudonymous: the
plugin sees recent spend per brand, never who the member is.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types as t

CINEMA = "cinema"
RESTAURANT = "restaurant"
PERK_ID = "popcorn-after-dinner"


def popcorn():
    return t.Perk(
        id=PERK_ID,
        title="Free medium popcorn",
        description="Dined at the restaurant this week? Your popcorn is on the cinema.",
        funding_brand=CINEMA,
        honouring_brand=CINEMA,
        cost_points=200,
        value_cents=800,
        grant=t.Grant_FreeItem("popcorn-m"),
        valid_until_ms=None,
    )


def dined_this_week(member):
    return any(s.brand == RESTAURANT and s.spend_7d_cents > 0 for s in member.spend)


class Hooks(exports.Hooks):
    def describe(self):
        return t.PluginInfo(
            name="cinema-popcorn",
            version="1.0.0",
            hooks=[t.Hook.LIST_PERKS, t.Hook.REDEEM_PERK],
            brands=[CINEMA],
        )

    def points_bonus(self, inv, member, order):
        raise Err(t.HookError_NotImplemented())

    def list_perks(self, inv, member):
        return [popcorn()] if dined_this_week(member) else []

    def redeem_perk(self, inv, member, request):
        if request.perk_id != PERK_ID:
            return t.RedeemDecision_Refused("No such perk")
        if not dined_this_week(member):
            return t.RedeemDecision_Refused("Dine at the restaurant this week first")
        return t.RedeemDecision_Granted(popcorn())

    def apply_coupon(self, inv, coupon, cart):
        raise Err(t.HookError_NotImplemented())

    def settle(self, inv, event):
        raise Err(t.HookError_NotImplemented())
