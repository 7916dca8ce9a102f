"""One call of each tag with the Python client generated from the served document
(`cargo xtask api-contract`). Every call must answer a documented 2xx that the client parses into
its model; a status the document does not list raises. A tag of the document without a call
here fails the run, so a new tag brings its call.

Environment: CONTRACT_CLIENT_DIR (the generated package's parent), CONTRACT_BASE_URL,
CONTRACT_KEYS_FILE (the demo's keys).
"""

import json
import os
import sys
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.environ["CONTRACT_CLIENT_DIR"])

from coalition_client import AuthenticatedClient  # noqa: E402
from coalition_client.api.brands import brands_list  # noqa: E402
from coalition_client.api.budgets import budgets_create, budgets_list  # noqa: E402
from coalition_client.api.campaigns import campaigns_create, campaigns_get  # noqa: E402
from coalition_client.api.coupons import coupon_templates_list  # noqa: E402
from coalition_client.api.health import health_live  # noqa: E402
from coalition_client.api.jobs import jobs_holds  # noqa: E402
from coalition_client.api.journeys import journeys_list  # noqa: E402
from coalition_client.api.keys import keys_list  # noqa: E402
from coalition_client.api.kpis import kpis_get  # noqa: E402
from coalition_client.api.members import members_export, members_list  # noqa: E402
from coalition_client.api.membership import membership_get, membership_plans_list  # noqa: E402
from coalition_client.api.offline import offline_conflicts_list  # noqa: E402
from coalition_client.api.passes import pass_keys_list, passes_png  # noqa: E402
from coalition_client.api.perks import perks_list, perks_redemptions_list  # noqa: E402
from coalition_client.api.plugin_lifecycle import (  # noqa: E402
    audit_list,
    audit_verify,
    plugins_package,
    plugins_shadow_results,
)
from coalition_client.api.plugins import plugin_receipts, plugin_stats, plugins_list, receipts_list  # noqa: E402
from coalition_client.api.points import points_get  # noqa: E402
from coalition_client.api.programme import programme_overview  # noqa: E402
from coalition_client.api.purchases import purchases_get  # noqa: E402
from coalition_client.api.referrals import referral_member_get, referral_programmes_list  # noqa: E402
from coalition_client.api.risk import blacklist_list, verification_create, verification_get  # noqa: E402
from coalition_client.api.segments import segments_rfm  # noqa: E402
from coalition_client.api.settlement import settlement_periods_list  # noqa: E402
from coalition_client.api.stages import stages_member_get, stages_rules_get  # noqa: E402
from coalition_client.api.stored_value import (  # noqa: E402
    stored_value_get,
    stored_value_liability,
    stored_value_topup,
)
from coalition_client.api.tiers import tiers_get  # noqa: E402
from coalition_client.api.webhooks import webhooks_deliveries, webhooks_list  # noqa: E402
from coalition_client.models import (  # noqa: E402
    AuditVerification,
    CampaignView,
    Overview,
    MembersExportFormat,
    BudgetKind,
    BudgetPeriod,
    BudgetView,
    LiabilityReport,
    NewBudget,
    MemberVerification,
    MembershipView,
    NewCampaign,
    Segment,
    StoredValueView,
    SubjectKind,
    TopupRequest,
    TopupView,
    VerificationRequest,
)


def main():
    base_url = os.environ["CONTRACT_BASE_URL"]
    with open(os.environ["CONTRACT_KEYS_FILE"]) as f:
        keys = json.load(f)
    client = AuthenticatedClient(base_url=base_url, token=keys["admin"], raise_on_unexpected_status=True)
    member = keys["members"][0]["member_id"]
    # Schemathesis ran first against the same demo with its real ids, and may have blocked this
    # member (`POST /members/{id}/block`); the calls below read it as a member, so it gets its
    # status back first (409 `member_not_blocked`: nothing to undo).
    unblock = urllib.request.Request(
        f"{base_url}/members/{member}/unblock",
        data=json.dumps({"reason": "contract check: the client calls read this member"}).encode(),
        headers={
            "Authorization": f"Bearer {keys['admin']}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        },
        method="POST",
    )
    try:
        urllib.request.urlopen(unblock, timeout=30).close()
    except urllib.error.HTTPError as err:
        if err.code != 409:
            raise
    called = {}

    def call(tag, what, function, *args, expect=None, **kwargs):
        response = function.sync_detailed(*args, client=client, **kwargs)
        status = int(response.status_code)
        parsed = response.parsed
        ok = 200 <= status < 300 and parsed is not None
        if ok and expect is not None:
            ok = isinstance(parsed, expect)
        print(f"  {tag:17} {what:45} {status} {type(parsed).__name__}")
        if not ok:
            raise SystemExit(f"{what}: {status} {response.content[:500]!r}")
        called[tag] = called.get(tag, 0) + 1
        return parsed

    def key():
        return str(uuid.uuid4())

    call("health", "GET /healthz", health_live)
    call("brands", "GET /brands", brands_list)
    call("members", "GET /members?limit=5", members_list, limit=5)
    csv = call("members", "GET /members/export?format=csv", members_export, format_=MembersExportFormat.CSV)
    assert csv.startswith("id,") or "phone" in csv.splitlines()[0], csv[:200]
    call("keys", "GET /keys", keys_list)
    call("points", "GET /members/{id}/points", points_get, member)
    call("purchases", "GET /brands/coffee/purchases/C-3001", purchases_get, "coffee", "C-3001")
    call("tiers", "GET /tiers", tiers_get)
    call("jobs", "POST /jobs/holds", jobs_holds, idempotency_key=key())
    call("perks", "GET /members/{id}/perks", perks_list, member)
    call("perks", "GET /perks/redemptions", perks_redemptions_list)
    call("coupons", "GET /coupon-templates", coupon_templates_list)
    installed = call("plugins", "GET /plugins", plugins_list)
    call("plugins", "GET /receipts (query)", receipts_list, subject_kind="purchase", subject_id="none")
    version = installed[0].id
    call("plugins", "GET /plugins/{id}/receipts (query)", plugin_receipts, version, limit=5)
    call("plugins", "GET /plugins/{id}/stats", plugin_stats, version)
    call("plugin lifecycle", "GET /plugins/{id}/package", plugins_package, version)
    call("plugin lifecycle", "GET /audit?limit=5 (query)", audit_list, limit=5)
    call("plugin lifecycle", "GET /audit/verify", audit_verify, expect=AuditVerification)
    call(
        "plugin lifecycle",
        "GET /plugins/{id}/shadow-results (query)",
        plugins_shadow_results,
        installed[0].id,
        limit=5,
    )
    campaign = call(
        "campaigns",
        "POST /campaigns",
        campaigns_create,
        body=NewCampaign(
            title="Client check",
            template_id="cinema-ticket-half",
            segment=Segment(tags=["vip"]),
            cap=5,
        ),
        idempotency_key=key(),
        expect=CampaignView,
    )
    call("campaigns", "GET /campaigns/{id}", campaigns_get, campaign.id, expect=CampaignView)
    call("passes", "GET /pass-keys", pass_keys_list)
    png = call("passes", "GET /members/{id}/pass.png", passes_png, member)
    data = png if isinstance(png, bytes) else png.payload.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG"
    call("offline", "GET /brands/coffee/offline-conflicts", offline_conflicts_list, "coffee")
    call("risk", "GET /risk/blacklist?kind=member (query)", blacklist_list, kind=SubjectKind.MEMBER)
    call(
        "risk",
        "POST /members/{id}/verification",
        verification_create,
        member,
        body=VerificationRequest(reference="client-check"),
        idempotency_key=key(),
        expect=MemberVerification,
    )
    verified = call(
        "risk", "GET /members/{id}/verification", verification_get, member, expect=MemberVerification
    )
    assert verified.member_id == member, verified
    call("settlement", "GET /settlement/periods", settlement_periods_list)
    # A member of its own: the fuzzer may have filled the demo members' stored value to a limit.
    join = urllib.request.Request(
        f"{base_url}/members",
        data=json.dumps({"phone": f"+86139{uuid.uuid4().int % 10**8:08d}", "name": "Client Check"}).encode(),
        headers={
            "Authorization": f"Bearer {keys['admin']}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        },
        method="POST",
    )
    with urllib.request.urlopen(join, timeout=30) as response:
        saver = json.load(response)["id"]
    topped = call(
        "stored-value",
        "POST /brands/coffee/stored-value/topups",
        stored_value_topup,
        "coffee",
        body=TopupRequest(topup_id=key(), member_id=saver, amount_cents=1_000),
        idempotency_key=key(),
        expect=TopupView,
    )
    sv = call("stored-value", "GET /members/{id}/stored-value", stored_value_get, saver, expect=StoredValueView)
    assert sv.balance_cents == topped.balance_after_cents, (sv, topped)
    call("stored-value", "GET /stored-value/liability", stored_value_liability, expect=LiabilityReport)
    call("stages", "GET /stages/rules", stages_rules_get)
    call("stages", "GET /members/{id}/stage", stages_member_get, member)
    call("journeys", "GET /journeys", journeys_list)
    call("webhooks", "GET /webhooks", webhooks_list)
    call("webhooks", "GET /webhooks/deliveries", webhooks_deliveries)
    call("referrals", "GET /referrals/programmes", referral_programmes_list)
    call("referrals", "GET /members/{id}/referrals", referral_member_get, member)
    call("kpis", "GET /kpis", kpis_get)
    call("segments", "GET /segments/rfm", segments_rfm)
    call("membership", "GET /membership/plans", membership_plans_list)
    card = call("membership", "GET /members/{id}/membership", membership_get, saver, expect=MembershipView)
    assert card.member_id == saver and card.benefits == [], card
    made = call(
        "budgets",
        "POST /brands/coffee/budgets",
        budgets_create,
        "coffee",
        body=NewBudget(kind=BudgetKind.PERK_VALUE, period=BudgetPeriod.MONTH, amount=1_000_000),
        idempotency_key=key(),
        expect=BudgetView,
    )
    listed = call("budgets", "GET /brands/coffee/budgets", budgets_list, "coffee")
    assert any(b.id == made.id for b in listed), listed
    overview = call("programme", "GET /programme/overview?days=7 (query)", programme_overview, days=7, expect=Overview)
    assert overview.window_days == 7 and len(overview.daily) == 7, overview

    with urllib.request.urlopen(base_url + "/openapi.json", timeout=30) as response:
        document = json.load(response)
    tags = {
        tag
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for tag in operation.get("tags", [])
    }
    missing = sorted(tags - set(called))
    if missing:
        raise SystemExit(f"no call of tag(s) {missing}: add one to xtask/contract/client_calls.py")
    print(f"generated client: {sum(called.values())} calls, {len(called)} tags, all answered")


if __name__ == "__main__":
    main()
