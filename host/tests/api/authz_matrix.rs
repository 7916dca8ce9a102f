//! The authorization matrix, generated from the served OpenAPI document.
//!
//! Every operation of `GET /openapi.json` is called by five outsiders — no key, an unknown key,
//! another member's key, and a counter key and a brand key of a brand that has nothing to do
//! with the data — with path parameters naming a seeded member, brand, order, hold, coupon,
//! perk, plugin … that belong to someone else, and a body that would succeed for the owner (so
//! that a business error cannot hide a missing check; idempotency keys are fresh per call).
//! Each must be answered 401 (no or unknown key) or 401/403/404; an operation an outsider may
//! legitimately call is listed with the reason, and any 2xx it gets must not carry the owner's
//! data. Then the owner makes the same call, which must succeed where practical: proof the
//! outsiders were refused for who they are, not for what they sent.
//!
//! Every operation of the document must be classified in [`case`]: a new one fails the test
//! until it is, and public operations are listed with the reason they are skipped.

use std::collections::BTreeMap;

use base64::Engine;
use coalition::plugins::signing;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, install_plugin};
use crate::helpers::{TestApp, T0_MS};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoKey,
    BadKey,
    /// A member key of another member.
    OtherMember,
    /// A counter key of a brand that is not party to the data.
    OtherCounter,
    /// A brand key of that brand.
    OtherBrand,
}

const OUTSIDERS: [Who; 5] = [
    Who::NoKey,
    Who::BadKey,
    Who::OtherMember,
    Who::OtherCounter,
    Who::OtherBrand,
];

/// Who owns the data an operation is called on.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Admin,
    /// The member's own key.
    Member,
    /// The home brand's counter.
    Counter,
    /// The home brand's back office.
    Brand,
    /// The mall, which funds the home brand's perk.
    FundingBrand,
}

/// What outsiders may do with an operation.
enum Policy {
    /// Not checked: needs no key by design.
    Public(&'static str),
    /// Every outsider is refused (401 without a valid key, else 401/403/404).
    Deny,
    /// These outsiders may be answered (any non-5xx); a 2xx must not carry the owner's data.
    Allow(&'static [Who], &'static str),
}

/// A request body.
#[derive(Clone)]
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// How one operation is exercised.
struct Case {
    policy: Policy,
    body: Option<Body>,
    /// The owner's call after the outsiders', which must answer 2xx; `Err` says why there is
    /// none.
    control: Result<Owner, &'static str>,
}

impl Case {
    fn deny(control: Owner) -> Case {
        Case {
            policy: Policy::Deny,
            body: None,
            control: Ok(control),
        }
    }

    fn allow(who: &'static [Who], why: &'static str, control: Owner) -> Case {
        Case {
            policy: Policy::Allow(who, why),
            ..Case::deny(control)
        }
    }

    fn public(why: &'static str) -> Case {
        Case {
            policy: Policy::Public(why),
            ..Case::deny(Owner::Admin)
        }
    }

    fn json(mut self, body: Value) -> Case {
        self.body = Some(Body::Json(body));
        self
    }

    fn no_control(mut self, why: &'static str) -> Case {
        self.control = Err(why);
        self
    }
}

/// The seeded coalition: the home brand `parking` (with the `mall` funding its perk), member A
/// with a purchase, holds, coupons, a redemption, a checkout … and the outsiders: member B and
/// the brand `rival`.
struct World {
    admin: String,
    member: String,
    member_key: String,
    member_phone: String,
    member_name: String,
    blockable: String,
    blocked: String,
    counter_key: String,
    counter_key_id: String,
    brand_key: String,
    brand_key_id: String,
    mall_key: String,
    spare_key_id: String,
    order_id: String,
    refund_order_id: String,
    private_sku: String,
    hold_get: String,
    hold_capture: String,
    hold_release: String,
    checkout_id: String,
    counter_coupon: String,
    return_coupon: String,
    redemption_id: String,
    receipt_id: String,
    settle_event_id: String,
    template_id: String,
    campaign_id: String,
    budget_id: String,
    plan_id: String,
    journey_id: String,
    card_member: String,
    webhook_subscription: String,
    webhook_deletable: String,
    webhook_delivery: String,
    pass_token: String,
    signing_key_id: String,
    signing_secret: String,
    signing_public: String,
    pending_signing_key: String,
    revocable_signing_key: String,
    version_id: String,
    blacklisted_device: String,
    verification_reference: String,
    ladder: Value,
    other_member_key: String,
    other_counter_key: String,
    other_brand_key: String,
    bad_key: String,
}

const HOME: &str = "parking";
const PERK_PLUGIN: &str = "parking-perk";
const PERK_ID: &str = "parking-2h";
const PERIOD: &str = "2026-03";
const REFERRAL_PROGRAMME: &str = "matrix-friends";
const TAG: &str = "vip";

async fn ok(app: &TestApp, method: Method, path: &str, key: &str, body: Value) -> Value {
    let (status, resp) = app
        .call(method.clone(), path, Some(key), Some(&idem()), Some(&body))
        .await;
    assert!(
        status.is_success(),
        "seeding {method} {path}: {status} {resp}"
    );
    resp
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

fn purchase_body(order_id: &str, member: &str, sku: &str) -> Value {
    json!({ "order_id": order_id, "member_id": member, "lines": [
        { "line_id": "1", "sku": sku, "category": "parking", "quantity": 1,
          "unit_price_cents": 20_000 } ] })
}

async fn signing_key(app: &TestApp, brand_key: &str, approve: bool) -> (String, String, String) {
    let (secret, public) = signing::generate_keypair();
    let key = ok(
        app,
        Method::POST,
        &format!("/brands/{HOME}/signing-keys"),
        brand_key,
        json!({ "public_key": public, "label": "matrix" }),
    )
    .await;
    let id = id_of(&key);
    if approve {
        ok(
            app,
            Method::POST,
            &format!("/signing-keys/{id}/approve"),
            &app.admin_key,
            json!({ "reason": "matrix" }),
        )
        .await;
    }
    (id, secret, public)
}

impl World {
    async fn seed(app: &TestApp) -> World {
        let admin = app.admin_key.clone();
        for brand in [HOME, "mall", "rival", "coffee", "cinema", "restaurant"] {
            create_brand(app, brand).await;
        }
        install_plugin(app, PERK_PLUGIN, json!({ "min_tier_rank": 0 })).await;
        install_plugin(app, "coupon-logic", json!({})).await;
        install_plugin(app, "coffee-bonus", json!({})).await;
        install_plugin(app, "cinema-dinner", json!({})).await;
        let counter_key = create_key(app, "counter", Some(HOME), None).await;
        let brand_key = create_key(app, "brand", Some(HOME), None).await;
        let mall_key = create_key(app, "brand", Some("mall"), None).await;
        create_key(app, "counter", Some(HOME), None).await;
        let other_counter_key = create_key(app, "counter", Some("rival"), None).await;
        let other_brand_key = create_key(app, "brand", Some("rival"), None).await;
        // Which key id is which: the listing shows each key's prefix of its secret.
        let keys = ok(
            app,
            Method::GET,
            "/keys?brand_id=parking",
            &admin,
            json!({}),
        )
        .await;
        let key_ids: Vec<(String, String)> = keys["items"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| (id_of(k), k["prefix"].as_str().unwrap_or("-").to_owned()))
            .collect();
        let id_for = |secret: &str| -> String {
            key_ids
                .iter()
                .find(|(_, prefix)| secret.starts_with(prefix.as_str()))
                .map(|(id, _)| id.clone())
                .expect("key id")
        };
        let counter_key_id = id_for(&counter_key);
        let brand_key_id = id_for(&brand_key);
        let spare_key_id = key_ids
            .iter()
            .map(|(id, _)| id)
            .find(|id| **id != counter_key_id && **id != brand_key_id)
            .expect("spare key")
            .clone();

        let member_phone = "+8613900000101".to_owned();
        let member_name = "Quillon Marrowby".to_owned();
        let member = id_of(
            &ok(
                app,
                Method::POST,
                "/members",
                &admin,
                json!({ "phone": member_phone, "name": member_name, "tags": [TAG] }),
            )
            .await,
        );
        let member_key = create_key(app, "member", None, Some(&member)).await;
        let other = id_of(
            &ok(
                app,
                Method::POST,
                "/members",
                &admin,
                json!({ "phone": "+8613900000102", "name": "Bo Other" }),
            )
            .await,
        );
        let other_member_key = create_key(app, "member", None, Some(&other)).await;
        let blockable = id_of(
            &ok(
                app,
                Method::POST,
                "/members",
                &admin,
                json!({ "phone": "+8613900000103", "name": "Cy Blockable" }),
            )
            .await,
        );
        let blocked = id_of(
            &ok(
                app,
                Method::POST,
                "/members",
                &admin,
                json!({ "phone": "+8613900000104", "name": "Di Blocked" }),
            )
            .await,
        );
        ok(
            app,
            Method::POST,
            &format!("/members/{blocked}/block"),
            &admin,
            json!({ "reason": "matrix" }),
        )
        .await;

        // Purchases at the home brand: points for holds and perks.
        let private_sku = "pk-private-sku-7f3a".to_owned();
        let order_id = "PK-ORDER-1".to_owned();
        let refund_order_id = "PK-ORDER-2".to_owned();
        for order in [&order_id, &refund_order_id] {
            ok(
                app,
                Method::POST,
                &format!("/brands/{HOME}/purchases"),
                &counter_key,
                purchase_body(order, &member, &private_sku),
            )
            .await;
        }
        let mut holds = Vec::new();
        for _ in 0..3 {
            holds.push(id_of(
                &ok(
                    app,
                    Method::POST,
                    &format!("/members/{member}/points/holds"),
                    &member_key,
                    json!({ "points": 10, "brand_id": HOME, "reason": "matrix" }),
                )
                .await,
            ));
        }
        let checkout_id = id_of(
            &ok(
                app,
                Method::POST,
                &format!("/brands/{HOME}/checkouts"),
                &counter_key,
                json!({ "member_id": member, "coupon_codes": [], "lines": [
                    { "line_id": "1", "sku": "day-ticket", "category": "parking",
                      "quantity": 1, "unit_price_cents": 1_000 } ] }),
            )
            .await,
        );

        // Two free-parking redemptions: one coupon to look up at the counter, one to return.
        let redeem = format!("/members/{member}/perks/{PERK_PLUGIN}/{PERK_ID}/redeem");
        let first = ok(app, Method::POST, &redeem, &counter_key, json!({})).await;
        let second = ok(app, Method::POST, &redeem, &member_key, json!({})).await;
        let code = |r: &Value| r["coupon"]["code"].as_str().expect("code").to_owned();
        let redemption_id = id_of(&first);
        let receipt_id = first["receipt_id"].as_str().expect("receipt").to_owned();
        let (settle_event_id,): (String,) =
            sqlx::query_as("SELECT id FROM settle_events WHERE subject_id = $1")
                .bind(&redemption_id)
                .fetch_one(app.state.store.read())
                .await
                .expect("settle event");
        ok(app, Method::POST, "/settlement/run", &admin, json!({})).await;

        let template_id = "pk-wash-10".to_owned();
        ok(
            app,
            Method::POST,
            "/coupon-templates",
            &brand_key,
            json!({ "id": template_id, "title": "10% off a wash",
                    "funding_brand": HOME, "honouring_brand": HOME, "plugin": "coupon-logic",
                    "params": { "kind": "percent-off-category", "category": "parking",
                                "percent-bp": "1000", "cap-cents": "500" },
                    "validity_days": 30, "value_cents": 500 }),
        )
        .await;
        let budget_id = id_of(
            &ok(
                app,
                Method::POST,
                &format!("/brands/{HOME}/budgets"),
                &brand_key,
                json!({ "kind": "perk_value", "period": "month", "amount": 1_000_000 }),
            )
            .await,
        );
        let campaign_id = id_of(
            &ok(
                app,
                Method::POST,
                "/campaigns",
                &brand_key,
                json!({ "template_id": template_id, "title": "Spring", "cap": 10,
                        "segment": { "tags": [TAG] } }),
            )
            .await,
        );
        let pass_token = ok(
            app,
            Method::GET,
            &format!("/members/{member}/pass"),
            &member_key,
            json!({}),
        )
        .await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let (signing_key_id, signing_secret, signing_public) =
            signing_key(app, &brand_key, true).await;
        let (pending_signing_key, _, _) = signing_key(app, &brand_key, false).await;
        let (revocable_signing_key, _, _) = signing_key(app, &brand_key, true).await;
        let version_id = ok(app, Method::GET, "/plugins", &admin, json!({}))
            .await
            .as_array()
            .expect("plugins")
            .iter()
            .find(|v| v["name"] == PERK_PLUGIN)
            .map(id_of)
            .expect("perk plugin version");
        ok(
            app,
            Method::POST,
            "/plugin-names/cinema-dinner/kill",
            &admin,
            json!({ "reason": "matrix" }),
        )
        .await;
        let blacklisted_device = "matrix-device-1".to_owned();
        ok(
            app,
            Method::POST,
            "/risk/blacklist",
            &admin,
            json!({ "kind": "device", "subject": blacklisted_device, "reason": "matrix" }),
        )
        .await;
        let verification_reference = "ID-CHECK-93817".to_owned();
        ok(
            app,
            Method::POST,
            &format!("/members/{member}/verification"),
            &brand_key,
            json!({ "reference": verification_reference }),
        )
        .await;
        let ladder = ok(app, Method::GET, "/tiers", &admin, json!({})).await["tiers"].clone();
        let journey_id = id_of(
            &ok(
                app,
                Method::POST,
                "/journeys",
                &brand_key,
                json!({ "title": "Welcome", "trigger": { "kind": "joined", "within_days": 30 },
                        "actions": [{ "kind": "webhook", "brand_id": HOME }] }),
            )
            .await,
        );
        // A referral programme the home brand funds (its figures are the home brand's).
        ok(
            app,
            Method::POST,
            "/referrals/programmes",
            &admin,
            json!({ "id": REFERRAL_PROGRAMME, "title": "Friends", "referrer_points": 100,
                    "invitee_points": 50, "funding_brand": HOME,
                    "cap_per_referrer_per_month": 5 }),
        )
        .await;
        let plan_id = "matrix-plus".to_owned();
        ok(
            app,
            Method::POST,
            "/membership/plans",
            &admin,
            json!({ "id": plan_id, "title": "Plus", "brand_id": HOME, "fee_cents": 1_000,
                    "period": "month", "benefits": ["free-parking"] }),
        )
        .await;
        // A member with a card the cancellation is tried on (repeatable: a cancelled card
        // answers with its cancellation).
        let card_member = id_of(
            &ok(
                app,
                Method::POST,
                "/members",
                &admin,
                json!({ "phone": "+8613900000131", "name": "Ed Cardholder" }),
            )
            .await,
        );
        ok(
            app,
            Method::POST,
            &format!("/members/{card_member}/membership"),
            &counter_key,
            json!({ "purchase_id": "MX-1", "plan_id": plan_id, "payment": "cash" }),
        )
        .await;
        // Two webhook subscriptions of the home brand (one to delete, one to rotate and replay
        // on) and a dead-lettered delivery, written with the event in one transaction so the
        // worker never attempts it.
        let mut webhook_subs = Vec::new();
        for _ in 0..2 {
            let created = ok(
                app,
                Method::POST,
                "/webhooks",
                &brand_key,
                json!({ "url": "http://8.8.8.8/matrix-hook", "event_types": ["tier-changed"] }),
            )
            .await;
            webhook_subs.push(id_of(&created["subscription"]));
        }
        let mut tx = app.state.store.begin().await.expect("tx");
        coalition::domain::webhooks::record(
            &mut tx,
            HOME,
            coalition::domain::webhooks::EventType::TierChanged,
            Some(&member),
            json!({ "from": "bronze", "to": "silver" }),
        )
        .await
        .expect("record");
        sqlx::query("UPDATE webhook_deliveries SET status = 'dead'")
            .execute(&mut *tx)
            .await
            .expect("dead letter");
        tx.commit().await.expect("commit");
        let (webhook_delivery,): (String,) =
            sqlx::query_as("SELECT id FROM webhook_deliveries WHERE subscription_id = $1")
                .bind(&webhook_subs[0])
                .fetch_one(app.state.store.read())
                .await
                .expect("delivery");
        World {
            admin,
            member,
            member_key,
            member_phone,
            member_name,
            blockable,
            blocked,
            counter_key,
            counter_key_id,
            brand_key,
            brand_key_id,
            mall_key,
            spare_key_id,
            order_id,
            refund_order_id,
            private_sku,
            hold_get: holds[0].clone(),
            hold_capture: holds[1].clone(),
            hold_release: holds[2].clone(),
            checkout_id,
            counter_coupon: code(&first),
            return_coupon: code(&second),
            redemption_id,
            receipt_id,
            settle_event_id,
            template_id,
            campaign_id,
            budget_id,
            plan_id,
            journey_id,
            card_member,
            webhook_subscription: webhook_subs[0].clone(),
            webhook_deletable: webhook_subs[1].clone(),
            webhook_delivery,
            pass_token,
            signing_key_id,
            signing_secret,
            signing_public,
            pending_signing_key,
            revocable_signing_key,
            version_id,
            blacklisted_device,
            verification_reference,
            ladder,
            other_member_key,
            other_counter_key,
            other_brand_key,
            bad_key: format!("coa_{}", "0badc0de".repeat(8)),
        }
    }

    /// The value of parameter `name` of the operation at `path` (the path template).
    fn param(&self, path: &str, name: &str) -> String {
        let v = match (name, path) {
            ("brand_id", _) | ("party", _) => HOME,
            ("member_id", p) if p.ends_with("/unblock") => &self.blocked,
            ("member_id", p) if p.ends_with("/block") => &self.blockable,
            ("member_id", p) if p.ends_with("/membership/cancel") => &self.card_member,
            ("plan_id", _) => &self.plan_id,
            ("programme_id", _) => REFERRAL_PROGRAMME,
            ("member_id", _) => &self.member,
            ("checkout_id", _) => &self.checkout_id,
            ("code", p) if p.starts_with("/brands/") => &self.counter_coupon,
            ("code", _) => &self.return_coupon,
            ("order_id", p) if p.ends_with("/refunds") => &self.refund_order_id,
            ("order_id", _) => &self.order_id,
            ("campaign_id", _) => &self.campaign_id,
            ("subscription_id", p) if p.ends_with("/rotate-secret") => &self.webhook_subscription,
            ("subscription_id", _) => &self.webhook_deletable,
            ("delivery_id", _) => &self.webhook_delivery,
            ("journey_id", _) => &self.journey_id,
            ("budget_id", _) => &self.budget_id,
            ("template_id", _) => &self.template_id,
            ("hold_id", p) if p.ends_with("/capture") => &self.hold_capture,
            ("hold_id", p) if p.ends_with("/release") => &self.hold_release,
            ("hold_id", _) => &self.hold_get,
            ("key_id", p) if p.starts_with("/keys/") => &self.spare_key_id,
            ("key_id", p) if p.ends_with("/approve") => &self.pending_signing_key,
            ("key_id", _) => &self.revocable_signing_key,
            ("plugin", _) => PERK_PLUGIN,
            ("perk_id", _) => PERK_ID,
            ("tag", _) => TAG,
            ("name", p) if p.ends_with("/resume") => "cinema-dinner",
            ("name", _) => "coffee-bonus",
            ("version_id", _) => &self.version_id,
            ("receipt_id", _) => &self.receipt_id,
            ("event_id", _) => &self.settle_event_id,
            ("kind", _) => "device",
            ("subject", _) => &self.blacklisted_device,
            ("period_id", _) => PERIOD,
            // Query parameters some operations require.
            ("subject_kind", "/receipts") => "redemption",
            ("subject_id", "/receipts") => &self.redemption_id,
            ("subject_kind", _) => "member",
            ("subject_id", _) => &self.member,
            ("after", _) => "0",
            ("limit", _) => "10",
            _ => panic!(
                "no value for parameter {name:?} of {path}: add it to World::param in {}",
                file!()
            ),
        };
        v.to_owned()
    }

    fn key(&self, who: Who) -> Option<&str> {
        match who {
            Who::NoKey => None,
            Who::BadKey => Some(&self.bad_key),
            Who::OtherMember => Some(&self.other_member_key),
            Who::OtherCounter => Some(&self.other_counter_key),
            Who::OtherBrand => Some(&self.other_brand_key),
        }
    }

    fn owner_key(&self, owner: Owner) -> &str {
        match owner {
            Owner::Admin => &self.admin,
            Owner::Member => &self.member_key,
            Owner::Counter => &self.counter_key,
            Owner::Brand => &self.brand_key,
            Owner::FundingBrand => &self.mall_key,
        }
    }

    /// What `who` must never see in a 2xx: the owner's data that is not shared with it by design.
    /// A member (id, masked profile, points, tier, verification) is shared by the coalition's
    /// brands; a brand's own data is not: its keys, signing keys, plugin versions, receipts,
    /// checkouts, campaigns, private SKUs, and its orders, holds, coupons and redemptions of the
    /// member. Another member sees nothing of the member at all.
    fn secrets(&self, who: Who) -> Vec<&str> {
        let mut brand_private = vec![
            self.member_phone.as_str(),
            self.member_name.as_str(),
            self.private_sku.as_str(),
            self.checkout_id.as_str(),
            self.campaign_id.as_str(),
            self.signing_key_id.as_str(),
            self.signing_public.as_str(),
            self.counter_key_id.as_str(),
            self.brand_key_id.as_str(),
            self.spare_key_id.as_str(),
            self.version_id.as_str(),
            self.receipt_id.as_str(),
            self.webhook_subscription.as_str(),
            self.webhook_delivery.as_str(),
        ];
        // The home brand's own records about the member: its orders, holds, coupons and
        // redemptions (another brand sees the member's postings, not these ids).
        brand_private.extend([
            self.order_id.as_str(),
            self.hold_get.as_str(),
            self.counter_coupon.as_str(),
            self.return_coupon.as_str(),
            self.redemption_id.as_str(),
        ]);
        if matches!(who, Who::NoKey | Who::BadKey | Who::OtherMember) {
            brand_private.extend([
                self.member.as_str(),
                self.verification_reference.as_str(),
                self.pass_token.as_str(),
            ]);
        }
        brand_private
    }

    /// A package of the perk plugin signed by the home brand, as the signed upload takes it.
    fn package(&self) -> Value {
        let dir = crate::fixtures::plugins_dir(PERK_PLUGIN);
        let component = std::fs::read(dir.join(format!("{PERK_PLUGIN}.wasm"))).expect("wasm");
        let manifest =
            std::fs::read_to_string(dir.join(format!("{PERK_PLUGIN}.toml"))).expect("manifest");
        let signature =
            signing::sign(&self.signing_secret, manifest.as_bytes(), &component).expect("sign");
        json!({
            "manifest": manifest,
            "component_base64": base64::engine::general_purpose::STANDARD.encode(&component),
            "key_id": self.signing_key_id,
            "signature": signature,
        })
    }
}

use Owner::{Admin, Brand, Counter, FundingBrand, Member};
use Who::{OtherBrand, OtherCounter, OtherMember};

const SHARED_MEMBER: &str = "members are shared by the coalition: any brand or counter reads \
    a member (personal data masked)";
const OWN_ONLY: &str = "a brand key is answered with its own brand's rows only";

/// Phone numbers of members registered by the matrix.
static NEXT_PHONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How `method path` is exercised; `None` if it is not classified yet.
fn case(w: &World, method: &str, path: &str) -> Option<Case> {
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let phone = format!(
        "+86137{:08}",
        NEXT_PHONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let reason = json!({ "reason": "matrix" });
    let c = match (method, path) {
        ("GET", "/healthz") => Case::public("liveness probe for load balancers"),
        ("GET", "/readyz") => Case::public("readiness probe for load balancers"),
        ("GET", "/pass-keys") => {
            Case::public("public keys that verify member passes offline, by design")
        }
        ("GET", "/metrics") => Case::deny(Admin),

        ("GET", "/audit") | ("GET", "/audit/verify") => Case::deny(Admin),
        ("GET", "/brands") => Case::allow(
            &[OtherMember, OtherCounter, OtherBrand],
            "every key may list brand ids and names",
            Admin,
        ),
        ("POST", "/brands") => {
            Case::deny(Admin).json(json!({ "id": format!("b{}", &fresh[..8]), "name": "New" }))
        }
        ("GET", "/brands/{brand_id}") => Case::deny(Brand),
        ("PATCH", "/brands/{brand_id}") => Case::deny(Admin).json(json!({ "name": "Parking" })),
        ("POST", "/brands/{brand_id}/checkouts") => Case::deny(Counter).json(json!({
            "member_id": w.member, "coupon_codes": [], "lines": [
                { "line_id": "1", "sku": "day-ticket", "category": "parking", "quantity": 1,
                  "unit_price_cents": 1_000 } ] })),
        ("POST", "/brands/{brand_id}/checkouts/{checkout_id}/cancel") => {
            Case::deny(Counter).json(reason)
        }
        ("GET", "/brands/{brand_id}/coupons/{code}") => Case::deny(Counter),
        ("GET", "/brands/{brand_id}/offline-conflicts") => Case::deny(Brand),
        ("POST", "/brands/{brand_id}/offline-purchases") => Case::deny(Counter).json(json!({
            "device_id": "till-1", "purchases": [{
                "pass": w.pass_token, "taken_at_ms": T0_MS,
                "order": purchase_body(&format!("OFF-{fresh}"), &w.member, "day-ticket"),
                "coupon_codes": [] }] })),
        ("POST", "/brands/{brand_id}/purchases") => {
            Case::deny(Counter).json(purchase_body(&format!("PK-{fresh}"), &w.member, "ticket"))
        }
        ("GET", "/brands/{brand_id}/purchases/{order_id}") => Case::deny(Counter),
        ("POST", "/brands/{brand_id}/purchases/{order_id}/refunds") => {
            Case::deny(Counter).json(json!({ "refund_id": format!("RF-{fresh}") }))
        }
        ("POST", "/brands/{brand_id}/stored-value/topups") => Case::deny(Counter).json(json!({
            "topup_id": format!("TU-{fresh}"), "member_id": w.member, "amount_cents": 1_000 })),
        ("PUT", "/brands/{brand_id}/stored-value/reserve") => {
            Case::deny(Admin).json(json!({ "reserve_percent": 40, "reason": "matrix" }))
        }
        ("GET", "/stored-value/liability") => Case::allow(
            &[OtherBrand],
            "a brand key always gets the liability of its own brand",
            Admin,
        ),
        ("GET", "/brands/{brand_id}/budgets") => Case::deny(Brand),
        ("POST", "/brands/{brand_id}/budgets") => Case::deny(Brand)
            .json(json!({ "kind": "bonus_points", "period": "month", "amount": 1_000 })),
        ("PATCH", "/brands/{brand_id}/budgets/{budget_id}") => {
            Case::deny(Brand).json(json!({ "amount": 2_000 }))
        }
        ("GET", "/brands/{brand_id}/signing-keys") => Case::deny(Brand),
        ("POST", "/brands/{brand_id}/signing-keys") => Case::deny(Brand)
            .json(json!({ "public_key": signing::generate_keypair().1, "label": "new" })),

        ("POST", "/campaigns") => Case::deny(Brand).json(json!({
            "template_id": w.template_id, "title": "Autumn", "cap": 5,
            "segment": { "tags": [TAG] } })),
        ("GET", "/campaigns/{campaign_id}") => Case::deny(Brand),
        ("POST", "/campaigns/{campaign_id}/issue") => Case::deny(Brand),
        ("GET", "/coupon-templates") => Case::allow(
            &[OtherCounter, OtherBrand],
            "the coupon catalogue is shared by the coalition's brands and counters",
            Admin,
        ),
        ("POST", "/coupon-templates") => Case::deny(Brand).json(json!({
            "id": format!("t-{}", &fresh[..12]), "title": "5% off", "funding_brand": HOME,
            "honouring_brand": HOME, "plugin": "coupon-logic",
            "params": { "kind": "percent-off-category", "category": "parking",
                        "percent-bp": "500", "cap-cents": "500" },
            "validity_days": 30, "value_cents": 500 })),
        ("GET", "/coupon-templates/{template_id}") => Case::allow(
            &[OtherMember, OtherCounter, OtherBrand],
            "a template is the catalogue entry behind coupons: any key may read it",
            Admin,
        ),

        ("GET", "/holds/{hold_id}") => Case::deny(Member),
        ("POST", "/holds/{hold_id}/capture") => Case::deny(Counter).json(json!({})),
        ("POST", "/holds/{hold_id}/release") => Case::deny(Member),
        ("POST", "/jobs/expiry")
        | ("POST", "/jobs/holds")
        | ("POST", "/jobs/pending-points")
        | ("POST", "/jobs/membership-renewals") => Case::deny(Admin),

        ("GET", "/membership/plans") => Case::allow(
            &[OtherMember, OtherCounter, OtherBrand],
            "the coalition's paid membership plans are its public catalogue",
            Admin,
        ),
        ("POST", "/membership/plans") => Case::deny(Admin).json(json!({
            "id": format!("p-{}", &fresh[..12]), "title": "Plus", "brand_id": HOME,
            "fee_cents": 1_000, "period": "year" })),
        ("PATCH", "/membership/plans/{plan_id}") => {
            Case::deny(Admin).json(json!({ "title": "Plus+" }))
        }
        ("GET", "/membership/renewals") => Case::allow(
            &[OtherBrand],
            "a brand key always gets the renewals of its own plans",
            Admin,
        ),
        ("GET", "/membership/revenue") => Case::allow(&[OtherBrand], OWN_ONLY, Admin),

        ("POST", "/referrals/programmes") => Case::deny(Admin).json(json!({
            "id": format!("rp-{}", &fresh[..12]), "title": "Friends", "referrer_points": 100,
            "invitee_points": 50, "cap_per_referrer_per_month": 5 })),
        ("GET", "/referrals/programmes") => Case::allow(
            &[OtherBrand],
            "referral programmes are the coalition's offer, listed to every brand",
            Admin,
        ),
        ("GET", "/referrals/programmes/{programme_id}/stats") => Case::deny(Brand),
        ("POST", "/members/{member_id}/invite-code") => Case::deny(Member),
        ("POST", "/members/{member_id}/referral") => Case::deny(Member)
            .json(json!({ "code": "ZZZZZZZZZZ" }))
            .no_control("the seeded member has bought already; tests/api/referrals.rs attaches"),
        ("GET", "/members/{member_id}/referrals") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Member)
        }
        ("GET", "/kpis") | ("GET", "/segments/rfm") => Case::allow(&[OtherBrand], OWN_ONLY, Admin),

        ("POST", "/webhooks") => Case::deny(Brand).json(json!({
            "brand_id": HOME, "url": "http://8.8.8.8/matrix-hook",
            "event_types": ["tier-changed"] })),
        ("GET", "/webhooks") | ("GET", "/webhooks/deliveries") => {
            Case::allow(&[OtherBrand], OWN_ONLY, Brand)
        }
        ("DELETE", "/webhooks/{subscription_id}")
        | ("POST", "/webhooks/{subscription_id}/rotate-secret")
        | ("POST", "/webhooks/deliveries/{delivery_id}/replay") => Case::deny(Brand),
        ("POST", "/jobs/webhook-deliveries") => Case::deny(Admin),
        ("GET", "/stages/rules") => Case::allow(
            &[OtherBrand],
            "the stage rules are the coalition's, the same for every brand",
            Admin,
        ),
        ("PUT", "/stages/rules") => Case::deny(Admin).json(json!({
            "welcome_days": 30, "stable_min_purchases": 3, "silent_after_days": 30,
            "churned_after_days": 90 })),
        ("GET", "/stages/counts") | ("GET", "/stages/churn-risk") => Case::deny(Admin),
        ("GET", "/members/{member_id}/stage") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Member)
        }
        ("POST", "/jobs/member-stages")
        | ("POST", "/jobs/journeys")
        | ("POST", "/jobs/kpi-rollups") => Case::deny(Admin),
        ("POST", "/journeys") => Case::deny(Brand).json(json!({
            "title": "Welcome", "trigger": { "kind": "joined", "within_days": 30 },
            "actions": [{ "kind": "webhook", "brand_id": HOME }] })),
        ("GET", "/journeys") => Case::allow(&[OtherBrand], OWN_ONLY, Admin),
        ("GET", "/journeys/{journey_id}") | ("POST", "/journeys/{journey_id}/dry-run") => {
            Case::deny(Brand)
        }
        ("PATCH", "/journeys/{journey_id}") => {
            Case::deny(Brand).json(json!({ "status": "paused" }))
        }
        ("POST", "/members/{member_id}/membership") => Case::deny(Counter).json(json!({
            "purchase_id": format!("MB-{fresh}"), "plan_id": w.plan_id, "payment": "cash",
            "brand_id": HOME })),
        ("GET", "/members/{member_id}/membership") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Member)
        }
        ("POST", "/members/{member_id}/membership/cancel") => Case::deny(Admin),

        ("GET", "/keys") => Case::allow(&[OtherBrand], OWN_ONLY, Brand),
        ("POST", "/keys") => Case::deny(Brand)
            .json(json!({ "role": "counter", "brand_id": HOME, "label": "till 9" })),
        ("DELETE", "/keys/{key_id}") => Case::deny(Brand),

        ("GET", "/members") => Case::allow(
            &[OtherBrand],
            "brand keys search the coalition's members (personal data masked)",
            Admin,
        ),
        ("POST", "/members") => Case::allow(
            &[OtherCounter, OtherBrand],
            "any brand or counter registers members of the shared programme",
            Admin,
        )
        .json(json!({ "phone": phone, "name": "New Member" }))
        .no_control("outsiders may register the same phone number first"),
        ("GET", "/members/export") => Case::deny(Admin),
        ("POST", "/members/import") => Case {
            body: Some(Body::Raw(
                "application/x-ndjson",
                format!("{{\"phone\":\"{phone}\",\"name\":\"Imported\"}}\n").into_bytes(),
            )),
            ..Case::deny(Admin)
        },
        ("GET", "/members/me") => {
            Case::allow(&[OtherMember], "a member key reads its own member", Member)
        }
        ("GET", "/members/{member_id}") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Admin)
        }
        ("PATCH", "/members/{member_id}") => {
            Case::deny(Member).json(json!({ "email": "quillon@example.com" }))
        }
        ("POST", "/members/{member_id}/block") | ("POST", "/members/{member_id}/unblock") => {
            Case::deny(Admin).json(reason)
        }
        ("GET", "/members/{member_id}/coupons")
        | ("GET", "/members/{member_id}/perks")
        | ("GET", "/members/{member_id}/points")
        | ("GET", "/members/{member_id}/points/history")
        | ("GET", "/members/{member_id}/redemptions")
        | ("GET", "/members/{member_id}/tier")
        | ("GET", "/members/{member_id}/stored-value") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Member)
        }
        ("GET", "/members/{member_id}/verification") => {
            Case::allow(&[OtherCounter, OtherBrand], SHARED_MEMBER, Admin)
        }
        ("POST", "/members/{member_id}/verification") => Case::allow(
            &[OtherBrand],
            "any brand records a member's real-name check (members are shared)",
            Admin,
        )
        .json(json!({ "reference": "ID-CHECK-2" }))
        .no_control("an outsider brand may record the same check first"),
        ("POST", "/members/{member_id}/coupons/{code}/return") => Case::deny(Member),
        ("GET", "/members/{member_id}/pass")
        | ("GET", "/members/{member_id}/pass.png")
        | ("GET", "/members/{member_id}/pass.svg") => Case::deny(Member),
        ("POST", "/members/{member_id}/perks/{plugin}/{perk_id}/redeem") => {
            Case::deny(Counter).json(json!({}))
        }
        ("POST", "/members/{member_id}/points/adjustments") => {
            Case::deny(Admin).json(json!({ "points": 5, "reason": "matrix" }))
        }
        ("POST", "/members/{member_id}/points/holds") => {
            Case::deny(Member).json(json!({ "points": 5, "brand_id": HOME, "reason": "matrix" }))
        }
        ("POST", "/members/{member_id}/tags") => Case::allow(
            &[OtherBrand],
            "any brand tags members of the shared programme",
            Brand,
        )
        .json(json!({ "tags": ["gold-parker"] })),
        ("DELETE", "/members/{member_id}/tags/{tag}") => Case::allow(
            &[OtherBrand],
            "any brand tags and untags members of the shared programme",
            Brand,
        ),

        ("POST", "/pass-keys/rotate") => Case::deny(Admin),
        ("GET", "/perks/inventory") => Case::allow(
            &[OtherBrand],
            "brands see every perk's stock and limits",
            Admin,
        ),
        ("PUT", "/perks/{plugin}/{perk_id}/inventory") => {
            Case::deny(FundingBrand).json(json!({ "funding_brand": "mall", "total_stock": 1000 }))
        }

        ("POST", "/plugin-names/{name}/kill") | ("POST", "/plugin-names/{name}/resume") => {
            Case::deny(Admin).json(reason)
        }
        ("POST", "/plugin-names/{name}/promote") => Case::deny(Admin)
            .json(reason)
            .no_control("needs a canary to promote; the lifecycle tests cover it"),
        ("POST", "/plugin-names/{name}/rollback") => Case::deny(Admin)
            .json(reason)
            .no_control("needs a previous version; the lifecycle tests cover it"),
        ("GET", "/plugins") => Case::allow(
            &[OtherBrand],
            "a brand lists the plugin versions that name it",
            Admin,
        ),
        ("POST", "/plugins") => Case {
            body: Some(Body::Json(w.package())),
            ..Case::deny(Brand).no_control(
                "the platform installed this name and version directly; the signed upload is \
                 covered by the lifecycle tests",
            )
        },
        ("GET", "/plugins/{version_id}") => Case::deny(Brand),
        ("POST", "/plugins/{version_id}/approve") => Case::deny(Admin)
            .json(reason)
            .no_control("the version is already active"),
        ("POST", "/plugins/{version_id}/canary") => Case::deny(Admin)
            .json(json!({ "basis_points": 500, "reason": "matrix" }))
            .no_control("the version is already active"),
        ("POST", "/plugins/{version_id}/cosign") => Case::deny(Brand)
            .json(json!({ "key_id": w.signing_key_id, "signature": "00".repeat(64) }))
            .no_control("a direct install takes no co-signature"),
        ("POST", "/plugins/{version_id}/deploy") | ("POST", "/plugins/{version_id}/reject") => {
            Case::deny(Admin)
                .json(reason)
                .no_control("the version is already active")
        }
        ("POST", "/plugins/{version_id}/shadow") => Case::deny(Admin)
            .json(json!({ "enabled": true, "reason": "matrix" }))
            .no_control("the active version cannot shadow itself"),
        ("POST", "/plugins/{version_id}/dry-run") => Case::deny(Admin)
            .json(json!({ "limit": 5 }))
            .no_control("dry runs are for versions not yet active"),
        ("GET", "/plugins/{version_id}/shadow-results") => Case::deny(Admin),
        // A brand the manifest names (a co-signer) reads the package it signs.
        ("GET", "/plugins/{version_id}/package") => Case::deny(Brand),
        // Calls and health are the shipping brand's; this version is the platform's own.
        ("GET", "/plugins/{version_id}/receipts") | ("GET", "/plugins/{version_id}/stats") => {
            Case::deny(Admin)
        }
        ("POST", "/plugins/{version_id}/validate") => {
            Case::deny(Admin).no_control("only uploaded versions are validated; this one is active")
        }
        ("GET", "/receipts") => Case::deny(Admin),
        ("POST", "/receipts/{receipt_id}/replay") => Case::deny(Admin),

        ("GET", "/risk/blacklist") => Case::deny(Admin),
        ("POST", "/risk/blacklist") => Case::deny(Admin).json(json!({
            "kind": "device", "subject": format!("dev-{}", &fresh[..8]), "reason": "matrix" })),
        ("DELETE", "/risk/blacklist/{kind}/{subject}") => Case::deny(Admin),
        ("POST", "/risk/check") => Case::allow(
            &[OtherCounter, OtherBrand],
            "counters and brands check a member's redemption risk (members are shared)",
            Admin,
        )
        .json(json!({ "member_id": w.member, "value_cents": 1_000 })),

        ("GET", "/perks/redemptions") => Case::allow(
            &[OtherBrand],
            "a brand key always gets the redemptions its own brand funds or honours",
            Admin,
        ),
        ("GET", "/programme/overview") => Case::allow(
            &[OtherBrand],
            "a brand key always gets the overview of its own brand",
            Admin,
        ),
        ("GET", "/settlement/events") => Case::deny(Admin),
        ("POST", "/settlement/run") => Case::deny(Admin),
        ("GET", "/settlement/periods") | ("GET", "/settlement/periods/{period_id}") => Case::allow(
            &[OtherBrand],
            "period ids and status are shared by the brands",
            Admin,
        ),
        ("POST", "/settlement/periods/{period_id}/close") => Case::deny(Admin)
            .json(reason)
            .no_control("the period has not ended at the test's clock"),
        ("GET", "/settlement/periods/{period_id}/lines")
        | ("GET", "/settlement/periods/{period_id}/netting")
        | ("GET", "/settlement/periods/{period_id}/statements") => {
            Case::allow(&[OtherBrand], OWN_ONLY, Admin)
        }
        ("GET", "/settlement/periods/{period_id}/reconciliation") => Case::deny(Admin),
        ("GET", "/settlement/periods/{period_id}/statements/{party}") => Case::deny(Brand),
        ("GET", "/settlement/precedence") => Case::allow(&[OtherBrand], OWN_ONLY, Admin),
        ("GET", "/settlement/precedence/{brand_id}") => Case::deny(Brand),
        ("PUT", "/settlement/precedence/{brand_id}") => {
            Case::deny(Admin).json(json!({ "plugins": [PERK_PLUGIN], "reason": "matrix" }))
        }
        // Parked settle events (classified ahead of their merge).
        ("GET", "/settlement/parked") => Case::allow(&[OtherBrand], OWN_ONLY, Admin),
        ("GET", "/settlement/parked/{event_id}") => {
            Case::deny(Admin).no_control("no settle event is parked in this world")
        }
        ("POST", "/settlement/parked/retry") => Case::deny(Admin)
            .json(json!({ "plugin": PERK_PLUGIN, "reason": "matrix" }))
            .no_control("no settle event is parked in this world"),

        ("POST", "/signing-keys/{key_id}/approve") => Case::deny(Admin).json(reason),
        ("POST", "/signing-keys/{key_id}/revoke") => Case::deny(Brand).json(reason),
        ("GET", "/tiers") => Case::allow(
            &[OtherMember, OtherCounter, OtherBrand],
            "the tier ladder is public to every key",
            Admin,
        ),
        ("PUT", "/tiers") => Case::deny(Admin).json(json!({ "tiers": w.ladder })),
        ("POST", "/tiers/evaluate") => Case::deny(Admin),
        _ => return None,
    };
    Some(c)
}

/// One operation of the document.
struct Operation {
    method: String,
    path: String,
    /// Parameters declared `in: path` or `in: query`, with whether they are required.
    params: Vec<(String, String, bool)>,
    idempotent_write: bool,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let declared = op["parameters"].as_array().cloned().unwrap_or_default();
            ops.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                params: declared
                    .iter()
                    .filter(|p| p["in"] == "path" || p["in"] == "query")
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            p["in"].as_str().unwrap_or_default().to_owned(),
                            p["required"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect(),
                idempotent_write: declared.iter().any(|p| p["name"] == "Idempotency-Key"),
            });
        }
    }
    ops
}

struct Answer {
    status: StatusCode,
    text: String,
}

async fn send(
    app: &TestApp,
    op: &Operation,
    url: &str,
    key: Option<&str>,
    body: Option<&Body>,
) -> Answer {
    let method = Method::from_bytes(op.method.as_bytes()).expect("method");
    let mut req = app.client.request(method, format!("{}{url}", app.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    // A fresh idempotency key per call, also where the document names none (some writes
    // forget to say so; sending one never hurts).
    if op.idempotent_write || op.method != "GET" {
        req = req.header("Idempotency-Key", idem());
    }
    match body {
        Some(Body::Json(v)) => req = req.json(v),
        Some(Body::Raw(content_type, bytes)) => {
            req = req
                .header("content-type", *content_type)
                .body(bytes.clone());
        }
        None => {}
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    Answer {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

both_backends!(
    every_operation_refuses_outsiders_before_any_business_rule,
    |app| async move {
        let w = World::seed(&app).await;
        let (status, doc) = app
            .call(Method::GET, "/openapi.json", None, None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let ops = operations(&doc);
        assert!(
            ops.len() > 90,
            "only {} operations in the document",
            ops.len()
        );

        let mut unclassified = Vec::new();
        let mut failures = Vec::new();
        let mut skipped = Vec::new();
        let mut allowed_by_design = Vec::new();
        let mut document_notes = BTreeMap::new();
        for op in &ops {
            let Some(case) = case(&w, &op.method, &op.path) else {
                unclassified.push(format!("{} {}", op.method, op.path));
                continue;
            };
            let name = format!("{} {}", op.method, op.path);
            if let Policy::Public(why) = case.policy {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
            let value = |param: &str| w.param(&op.path, param);
            if let Policy::Allow(who, why) = &case.policy {
                allowed_by_design.push(format!("{name}: {who:?} may call it: {why}"));
            }
            // Path parameters from the template; required parameters the template does not
            // hold go to the query string (the document declares some query parameters
            // `in: path`: noted, not fixed here).
            let mut url = op.path.clone();
            let mut query = Vec::new();
            for (param, place, required) in &op.params {
                let placeholder = format!("{{{param}}}");
                if url.contains(&placeholder) {
                    url = url.replace(&placeholder, &value(param));
                } else if *required {
                    if place == "path" {
                        document_notes
                            .entry(name.clone())
                            .or_insert_with(Vec::new)
                            .push(param.clone());
                    }
                    query.push(format!("{param}={}", value(param)));
                }
            }
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }

            for who in OUTSIDERS {
                let answer = send(&app, op, &url, w.key(who), case.body.as_ref()).await;
                let status = answer.status;
                let allowed = match &case.policy {
                    Policy::Allow(list, _) => list.contains(&who),
                    _ => false,
                };
                let refused = match who {
                    Who::NoKey | Who::BadKey => status == StatusCode::UNAUTHORIZED,
                    _ => [401, 403, 404].contains(&status.as_u16()),
                };
                if status.is_server_error() {
                    failures.push(format!("{name} as {who:?}: {status} {}", answer.text));
                } else if !allowed && !refused {
                    failures.push(format!(
                        "{name} as {who:?}: expected {}, got {status} {}",
                        if matches!(who, Who::NoKey | Who::BadKey) {
                            "401"
                        } else {
                            "401/403/404"
                        },
                        answer.text.chars().take(300).collect::<String>()
                    ));
                }
                if status.is_success() {
                    for secret in w.secrets(who) {
                        if answer.text.contains(secret) {
                            failures.push(format!(
                                "{name} as {who:?}: {status} carries another party's data \
                                 {secret:?}: {}",
                                answer.text.chars().take(300).collect::<String>()
                            ));
                        }
                    }
                }
            }
            match case.control {
                Ok(owner) => {
                    let answer =
                        send(&app, op, &url, Some(w.owner_key(owner)), case.body.as_ref()).await;
                    if !answer.status.is_success() {
                        failures.push(format!(
                            "{name}: the owner ({owner:?}) should succeed with the same request, \
                             got {} {}",
                            answer.status,
                            answer.text.chars().take(300).collect::<String>()
                        ));
                    }
                }
                Err(why) => skipped.push(format!("{name}: no owner's control call: {why}")),
            }
        }
        for (op, params) in &document_notes {
            println!(
                "OpenAPI document: {op} declares {} `in: path`, but its path has no such \
                 segment (sent as query parameters)",
                params.join(", ")
            );
        }
        for skip in &skipped {
            println!("skipped: {skip}");
        }
        for allowed in &allowed_by_design {
            println!("allowed: {allowed}");
        }
        assert!(
            unclassified.is_empty(),
            "operations the authorization matrix does not classify yet (add them to `case` in \
             {}):\n{}",
            file!(),
            unclassified.join("\n")
        );
        assert!(
            failures.is_empty(),
            "{} authorization failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        app.stop().await;
    }
);
