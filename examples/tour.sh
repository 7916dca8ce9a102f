#!/usr/bin/env bash
# A guided tour of the API against the demo coalition. Start the demo first (`cargo xtask demo`),
# then run this in another terminal. It reads the keys from data/demo-keys.json.
set -euo pipefail
cd "$(dirname "$0")/.."
keys=data/demo-keys.json
[ -f "$keys" ] || { echo "no $keys: start the demo with 'cargo xtask demo' first" >&2; exit 1; }
k() { python3 -c "import json,sys; d=json.load(open('$keys')); print(eval(sys.argv[1]))" "$1"; }
base=$(k "d['base_url']")
admin=$(k "d['admin']")
coffee_counter=$(k "d['brands']['coffee']['counter']")
member=$(k "d['members'][0]['member_id']")
member_key=$(k "d['members'][0]['key']")
show() { echo; echo "\$ $*"; "$@"; echo; }

show curl -s "$base/healthz"
show curl -s "$base/members/$member" -H "Authorization: Bearer $member_key"
show curl -s "$base/members/$member/points" -H "Authorization: Bearer $member_key"
show curl -s "$base/members/$member/tier" -H "Authorization: Bearer $member_key"
show curl -s "$base/members/$member/perks" -H "Authorization: Bearer $member_key"
order="T-$(date +%s)"
show curl -s -X POST "$base/brands/coffee/purchases" \
  -H "Authorization: Bearer $coffee_counter" -H "Idempotency-Key: $order" \
  -H 'Content-Type: application/json' \
  -d "{\"order_id\":\"$order\",\"member_id\":\"$member\",\"lines\":[{\"line_id\":\"1\",\"sku\":\"latte\",\"category\":\"coffee\",\"quantity\":2,\"unit_price_cents\":3200}]}"
show curl -s "$base/plugins" -H "Authorization: Bearer $admin"
show curl -s -X POST "$base/brands/coffee/purchases" -H "Authorization: Bearer $coffee_counter" \
  -H 'Idempotency-Key: bad' -H 'Content-Type: application/json' -d '{"order_id": 42'

# The cinema perk: redeem it with points, then the cinema counter checks a cart out with the
# coupon and records the purchase, which redeems the coupon.
cinema_counter=$(k "d['brands']['cinema']['counter']")
redeemed=$(curl -s -X POST "$base/members/$member/perks/cinema-dinner/cinema-ticket-half/redeem" \
  -H "Authorization: Bearer $member_key" -H "Idempotency-Key: redeem-$order" \
  -H 'X-Device-Id: tour' -H 'Content-Type: application/json' -d '{"expected_cost_points": 500}')
echo "\$ POST /members/$member/perks/cinema-dinner/cinema-ticket-half/redeem"; echo "$redeemed"; echo
code=$(python3 -c "import json,sys; print((json.loads(sys.argv[1]).get('coupon') or {}).get('code', ''))" "$redeemed")
if [ -n "$code" ]; then
  cart="[{\"line_id\":\"t\",\"sku\":\"ticket-2d\",\"category\":\"ticket\",\"quantity\":2,\"unit_price_cents\":5000},{\"line_id\":\"p\",\"sku\":\"popcorn\",\"category\":\"snacks\",\"quantity\":1,\"unit_price_cents\":1200}]"
  checkout=$(curl -s -X POST "$base/brands/cinema/checkouts" \
    -H "Authorization: Bearer $cinema_counter" -H "Idempotency-Key: checkout-$order" \
    -H 'Content-Type: application/json' \
    -d "{\"member_id\":\"$member\",\"lines\":$cart,\"coupon_codes\":[\"$code\"]}")
  echo "\$ POST /brands/cinema/checkouts"; echo "$checkout"; echo
  checkout_id=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['id'])" "$checkout")
  show curl -s -X POST "$base/brands/cinema/purchases" \
    -H "Authorization: Bearer $cinema_counter" -H "Idempotency-Key: cinema-$order" \
    -H 'Content-Type: application/json' \
    -d "{\"order_id\":\"CIN-$order\",\"member_id\":\"$member\",\"lines\":$cart,\"checkout_id\":\"$checkout_id\"}"
  show curl -s "$base/members/$member/coupons" -H "Authorization: Bearer $member_key"
fi
