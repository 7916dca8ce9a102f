// Restaurant weekend ×3, in JavaScript: on Saturdays and Sundays (the programme's local time) a
// restaurant purchase earns twice its base points again as a bonus, three times in all.
//
// Built with `coalition plugin build` (componentize-js, no WASI). s64 values are BigInt; the
// only clock is inv.nowMs with inv.utcOffsetMinutes.

const BRAND = "restaurant";
const DAY_MS = 86_400_000n;

// 0 = Sunday … 6 = Saturday, in local time (1970-01-01 was a Thursday).
function localWeekday(inv) {
  const localMs = inv.nowMs + BigInt(inv.utcOffsetMinutes) * 60_000n;
  let days = localMs / DAY_MS;
  if (localMs < 0n && localMs % DAY_MS !== 0n) days -= 1n;
  return Number((((days + 4n) % 7n) + 7n) % 7n);
}

export const hooks = {
  describe() {
    return { name: "restaurant-weekend", version: "1.0.0", hooks: ["points-bonus"], brands: [BRAND] };
  },
  pointsBonus(inv, member, order) {
    const day = localWeekday(inv);
    if (order.brand !== BRAND || order.basePoints <= 0n || (day !== 0 && day !== 6)) return [];
    return [{
      points: order.basePoints * 2n,
      code: "weekend-x3",
      reason: "Weekend at the restaurant: triple points",
    }];
  },
  listPerks() {
    throw { tag: "not-implemented" };
  },
  redeemPerk() {
    throw { tag: "not-implemented" };
  },
  applyCoupon() {
    throw { tag: "not-implemented" };
  },
  settle() {
    throw { tag: "not-implemented" };
  },
};
