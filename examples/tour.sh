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
