"""schemathesis hooks of `cargo xtask api-contract` (loaded through SCHEMATHESIS_HOOKS).

- Every call that carries a valid `Idempotency-Key` gets a fresh one (a UUID), as a real client
  would send; an absent or invalid key is left as generated, so that the server's refusal of it
  is still tested.
- Path parameters (and body fields) naming a member, brand, plugin, version, perk, template,
  hold, campaign, key or receipt are often replaced by ids of the demo coalition (and of a hold
  and a campaign made at start), so that real handlers run past their 404s.
- Every call and every check result is counted; the counts are written as JSON to
  $CONTRACT_STATS when the run ends, for the summary line and the verdict.
"""

import atexit
import json
import os
import random
import re
import threading
import urllib.request
import uuid

import schemathesis
from schemathesis.core.parameters import ParameterLocation

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Replace a generated path id with a real one this often, so both kinds are exercised.
REAL_ID_SHARE = 0.6

_lock = threading.Lock()
_stats = {"calls": 0, "server_errors": 0, "success": 0, "operations": set(), "statuses": {}}
_random = random.Random(20260302)


def _call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        os.environ["CONTRACT_BASE_URL"] + path,
        data=data,
        method=method,
        headers={
            "Authorization": "Bearer " + os.environ["CONTRACT_ADMIN_KEY"],
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _get(path):
    return _call("GET", path)


def _made(method, path, body):
    """The id of a resource made for the run, or none if the demo no longer allows it (the run
    goes on with generated ids for it)."""
    try:
        return [_call(method, path, body)["id"]]
    except (OSError, KeyError, ValueError) as err:
        print(f"hooks: could not make {path}: {err}")
        return []


# Orders the demo records on first start (host/src/demo.rs), by brand.
DEMO_ORDERS = {"restaurant": ["R-1001"], "mall": ["M-2001"], "coffee": ["C-3001", "C-3002"]}


def _known_ids():
    """Ids of the demo coalition (and of a hold and a campaign made here), by parameter name."""
    with open(os.environ["CONTRACT_KEYS_FILE"]) as f:
        keys = json.load(f)
    members = [m["id"] for m in _get("/members?limit=50")["items"]]
    brands = sorted(keys["brands"])
    plugins = _get("/plugins")
    purchases = [
        _get(f"/brands/{brand}/purchases/{order}")["id"]
        for brand, orders in DEMO_ORDERS.items()
        for order in orders
    ]
    receipts = [
        r["id"] for p in purchases for r in _get(f"/receipts?subject_kind=purchase&subject_id={p}")
    ]
    # Never the admin key: revoking it would turn the rest of the run into 401s.
    keys_ids = [k["id"] for k in _get("/keys")["items"] if k["role"] != "admin"]
    holds = _made("POST", f"/members/{members[0]}/points/holds", {"points": 10, "reason": "contract"})
    campaigns = _made(
        "POST",
        "/campaigns",
        {
            "title": "Contract check",
            "template_id": "cinema-ticket-half",
            "segment": {"tags": ["vip"]},
            "cap": 10,
        },
    )
    known = {
        "member_id": members,
        "subject": members,
        "brand_id": brands,
        "party": brands + ["platform"],
        "order_id": sorted(o for orders in DEMO_ORDERS.values() for o in orders),
        "version_id": sorted({p["id"] for p in plugins}),
        "name": sorted({p["name"] for p in plugins}),
        "plugin": sorted({p["name"] for p in plugins}),
        "template_id": ["cinema-ticket-half"],
        "perk_id": ["cinema-ticket-half", "parking-2h"],
        "receipt_id": receipts,
        "key_id": keys_ids,
        "hold_id": holds,
        "campaign_id": campaigns,
        "period_id": [p["id"] for p in _get("/settlement/periods")],
        "tag": ["vip", "movie-fan"],
    }
    return {name: values for name, values in known.items() if values}


KNOWN_IDS = _known_ids()
# Body fields that name the same things as path parameters.
BODY_FIELDS = {
    "member_id": "member_id",
    "brand_id": "brand_id",
    "funding_brand": "brand_id",
    "honouring_brand": "brand_id",
    "plugin": "plugin",
    "template_id": "template_id",
}
def _key_is_valid(value, operation):
    """Whether `value` is a key the document allows (so replacing it keeps the case valid)."""
    for parameter in operation.definition.raw.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") == IDEMPOTENCY_HEADER:
            schema = parameter.get("schema", {})
            if not isinstance(value, str):
                return False
            if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30):
                return False
            pattern = schema.get("pattern")
            return pattern is None or re.search(pattern, value) is not None
    return False


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers
    if headers is not None:
        for name in list(headers):
            if name.lower() == IDEMPOTENCY_HEADER.lower() and _key_is_valid(headers[name], case.operation):
                headers[name] = str(uuid.uuid4())
    parameters = case.path_parameters
    if parameters:
        for name in list(parameters):
            values = KNOWN_IDS.get(name)
            if values and _random.random() < REAL_ID_SHARE:
                parameters[name] = _random.choice(values)
    body = case.body
    if isinstance(body, dict):
        for field, kind in BODY_FIELDS.items():
            values = KNOWN_IDS.get(kind)
            if isinstance(body.get(field), str) and values and _random.random() < REAL_ID_SHARE:
                body[field] = _random.choice(values)


@schemathesis.hook
def after_call(context, case, response):
    with _lock:
        _stats["calls"] += 1
        _stats["operations"].add(case.operation.label)
        if response.status_code >= 500:
            _stats["server_errors"] += 1
        if 200 <= response.status_code < 300:
            _stats["success"] += 1
        statuses = _stats["statuses"].setdefault(case.operation.label, {})
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1


@atexit.register
def _write_stats():
    path = os.environ.get("CONTRACT_STATS")
    if not path:
        return
    with _lock:
        stats = dict(_stats)
        stats["operations"] = len(_stats["operations"])
    with open(path, "w") as f:
        json.dump(stats, f, indent=2, sort_keys=True)


@schemathesis.hook
def filter_case(context, case):
    """Drops negative bodies of text media types (CSV, JSON lines): on the wire any body is a
    string of bytes, so a "not a string" body reaches the server as text that is valid for the
    schema, and its acceptance is no defect."""
    meta = case.meta
    media_type = (case.media_type or "").split(";")[0].strip().lower()
    if meta is None or media_type in ("", "application/json"):
        return True
    return not meta.is_negative_at(ParameterLocation.BODY)
