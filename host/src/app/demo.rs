//! The demo coalition seeded by `coalition serve --demo`: a mall and four tenants with earn rules
//! and exclusions, eight members, and keys for every role, whose secrets are written to
//! `<data_dir>/demo-keys.json`.
//!
//! Seeding happens once, when the database has no brands; later starts change nothing, so the
//! keys file stays valid. Everything is written in one transaction, and the keys file is written
//! before that transaction commits and renamed into place after, so a crash leaves either no
//! demo or a complete one (a leftover `.tmp` file is finished on the next start).
//!
//! To extend the demo (deploy plugins, record sample purchases), add a step after
//! [`seed_coalition`] in [`seed`] that runs only on first start, like the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::domain::access::{create_key, Role};
use crate::domain::brands::CreateBrand;
use crate::domain::members::NewMember;
use crate::foundation::store::Tx;
use crate::interfaces::api::AppState;

/// Name of the keys file in the data directory.
pub const KEYS_FILE: &str = "demo-keys.json";

/// One demo brand: id, name, points per unit, unit in cents, excluded SKUs and categories.
type BrandSpec = (
    &'static str,
    &'static str,
    i64,
    i64,
    &'static [&'static str],
    &'static [&'static str],
);

/// Gift cards are a form of payment, not a sale; delivery and service fees are pass-through.
const BRANDS: [BrandSpec; 5] = [
    (
        "mall",
        "Harbour City Mall",
        1,
        100,
        &[],
        &["gift_card", "delivery_fee"],
    ),
    (
        "coffee",
        "Bean There Coffee",
        2,
        100,
        &["GIFT-CARD-100", "GIFT-CARD-200"],
        &["gift_card", "delivery_fee"],
    ),
    (
        "cinema",
        "Starlight Cinema",
        1,
        100,
        &[],
        &["gift_card", "booking_fee"],
    ),
    (
        "restaurant",
        "Jade Garden",
        1,
        100,
        &[],
        &["gift_card", "delivery_fee", "service_charge"],
    ),
    (
        "parking",
        "Harbour Parking",
        1,
        500,
        &[],
        &["gift_card", "penalty_fee"],
    ),
];

/// One demo member: phone, name, birthday, email, tags.
type MemberSpec = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
);

const MEMBERS: [MemberSpec; 8] = [
    (
        "+8613800138000",
        "Wang Fang",
        "1990-05-17",
        Some("wang.fang@example.com"),
        &["vip", "skincare-enthusiast"],
    ),
    (
        "+8613800138001",
        "Li Na",
        "1987-11-02",
        Some("li.na@example.com"),
        &["new-parent", "mother-and-baby"],
    ),
    (
        "+8613800138002",
        "Zhang Wei",
        "1978-03-09",
        None,
        &["movie-fan"],
    ),
    (
        "+8613800138003",
        "Chen Jing",
        "1995-03-21",
        Some("chen.jing@example.com"),
        &["coffee-lover"],
    ),
    (
        "+8613800138004",
        "Liu Yang",
        "2001-07-30",
        None,
        &["student", "movie-fan"],
    ),
    (
        "+8613800138005",
        "Huang Min",
        "1969-12-12",
        Some("huang.min@example.com"),
        &["foodie", "vip"],
    ),
    (
        "+8613800138006",
        "Zhao Lei",
        "1988-08-08",
        None,
        &["driver"],
    ),
    (
        "+8613800138007",
        "Sun Li",
        "1992-01-15",
        None,
        &["coffee-lover", "movie-fan"],
    ),
];

/// How many of the demo members get a member key (the first ones in [`MEMBERS`]).
const MEMBERS_WITH_KEYS: usize = 2;

/// Keys of one demo brand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrandKeys {
    /// The brand's back-office key.
    pub brand: String,
    /// The brand's counter (POS) key.
    pub counter: String,
}

/// A demo member with a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberKey {
    /// Member id.
    pub member_id: String,
    /// Member name.
    pub name: String,
    /// Member phone.
    pub phone: String,
    /// The member's app key.
    pub key: String,
}

/// The contents of `demo-keys.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoKeys {
    /// Where the server listens.
    pub base_url: String,
    /// The platform admin key.
    pub admin: String,
    /// Keys by brand id.
    pub brands: BTreeMap<String, BrandKeys>,
    /// Member keys.
    pub members: Vec<MemberKey>,
}

/// The example plugins the demo installs from the plugins directory, in this order.
pub const DEMO_PLUGINS: [&str; 7] = [
    "coffee-bonus",
    "cinema-dinner",
    "coupon-logic",
    "parking-perk",
    // Written against coalition:plugin@0.2.0: the mall's lounge for card holders.
    "club-lounge",
    // JavaScript (plugins/js/) and Python (plugins/python/), built by the partner kit.
    "restaurant-weekend",
    "cinema-popcorn",
];

/// Seeds the demo coalition if the database has no brands, installs the example plugins found
/// in `plugins_dir` that are not installed yet, records sample purchases on first start, then
/// prints where the keys are.
pub async fn seed_with_plugins(state: &AppState, plugins_dir: Option<&Path>) -> anyhow::Result<()> {
    let first_start = !has_brands(state).await?;
    seed(state).await?;
    start_webhook_receiver(state).await?;
    let Some(dir) = plugins_dir else {
        println!("demo: no --plugins-dir given; running without plugins");
        print_console(state);
        return Ok(());
    };
    install_plugins(state, dir).await?;
    if first_start {
        seed_activity(state).await?;
        seed_stored_value(state).await?;
        seed_membership(state).await?;
        seed_budget(state).await?;
        seed_journeys(state).await?;
        seed_referrals(state).await?;
        seed_review(state, dir).await?;
    }
    if let Ok(keys) = read_keys(&state.config.data_dir.join(KEYS_FILE)) {
        if let Some(member) = keys.members.first() {
            println!(
                "demo: perks of {}:  curl -s '{}/members/{}/perks' -H 'Authorization: Bearer {}'",
                member.name, keys.base_url, member.member_id, member.key
            );
        }
    }
    print_console(state);
    Ok(())
}

/// The console's address and which key opens which view, printed last so it is what the
/// person who started the demo sees.
fn print_console(state: &AppState) {
    let path = state.config.data_dir.join(KEYS_FILE);
    let Ok(keys) = read_keys(&path) else {
        return;
    };
    if !state.config.console.enabled {
        return;
    }
    println!("demo: console  {}/console/", base_url(state));
    println!("demo:   sign in as the platform admin with {}", keys.admin);
    if let Some(coffee) = keys.brands.get("coffee") {
        println!("demo:   as the coffee brand with {}", coffee.brand);
    }
    if let Some(member) = keys.members.first() {
        println!("demo:   as member {} with {}", member.name, member.key);
    }
    println!("demo:   (every key is in {})", path.display());
}

/// Events the demo's webhook receiver keeps (the latest), so its page stays small.
const DEMO_RECEIVER_KEEPS: usize = 50;
/// The path the demo's receiver listens on; the demo's earlier subscriptions are recognised by
/// it and deleted at each start (their receiver died with the process).
const DEMO_HOOK_PATH: &str = "/demo-hook";

/// Starts an in-process webhook receiver on 127.0.0.1 (a random port) that logs every delivery
/// and keeps the latest [`DEMO_RECEIVER_KEEPS`] (`GET` its URL to see them), and subscribes the
/// coffee brand to every event type there. `coalition serve --demo` allows private targets so
/// the worker may reach it.
async fn start_webhook_receiver(state: &AppState) -> anyhow::Result<()> {
    use crate::domain::webhooks::{self, EventType};
    use std::sync::{Arc, Mutex};
    let brand = "coffee";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("while binding the demo webhook receiver")?;
    let url = format!("http://{}{DEMO_HOOK_PATH}", listener.local_addr()?);
    let kept: Arc<Mutex<std::collections::VecDeque<serde_json::Value>>> = Arc::default();
    let on_post = kept.clone();
    let app = axum::Router::new().route(
        DEMO_HOOK_PATH,
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = on_post.clone();
            async move {
                let event: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                let id = headers
                    .get("coalition-webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info!(id, event_type = %event["type"], brand = %event["brand_id"],
                    "demo webhook receiver: event received");
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() >= DEMO_RECEIVER_KEEPS {
                        kept.pop_front();
                    }
                    kept.push_back(event);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        })
        .get(move || {
            let kept = kept.clone();
            async move {
                let events: Vec<serde_json::Value> = kept
                    .lock()
                    .map(|k| k.iter().cloned().collect())
                    .unwrap_or_default();
                axum::Json(events)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(%err, "the demo webhook receiver stopped");
        }
    });
    let now_ms = state.now_ms();
    let mut tx = state.store.begin().await?;
    let old: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM webhook_subscriptions WHERE brand_id = $1 AND active = 1 AND url LIKE $2",
    )
    .bind(brand)
    .bind(format!("http://127.0.0.1:%{DEMO_HOOK_PATH}"))
    .fetch_all(&mut *tx)
    .await?;
    for (id,) in old {
        webhooks::unsubscribe(&mut tx, &id, None, now_ms)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    }
    match webhooks::subscribe(&mut tx, brand, &url, &EventType::ALL, i64::MAX, now_ms).await {
        Ok(_) => tx.commit().await?,
        // Not the demo's database: nothing to subscribe.
        Err(err) if err.code == "unknown_brand" => return Ok(()),
        Err(err) => return Err(anyhow::anyhow!("{err}")),
    }
    println!("demo: webhooks of {brand} (every event type) go to {url} (GET it to see the latest)");
    Ok(())
}

async fn has_brands(state: &AppState) -> anyhow::Result<bool> {
    let (brands,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM brands")
        .fetch_one(state.store.read())
        .await
        .context("while checking for an existing coalition")?;
    Ok(brands > 0)
}

/// Installs each of [`DEMO_PLUGINS`] from `<dir>/<name>.wasm` + `<name>.toml` unless a version
/// of it is already installed.
pub async fn install_plugins(state: &AppState, dir: &Path) -> anyhow::Result<()> {
    for name in DEMO_PLUGINS {
        let (installed,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_versions WHERE name = $1")
                .bind(name)
                .fetch_one(state.store.read())
                .await?;
        if installed > 0 {
            continue;
        }
        let wasm = dir.join(format!("{name}.wasm"));
        let toml = dir.join(format!("{name}.toml"));
        let component = std::fs::read(&wasm).with_context(|| {
            format!(
                "while reading {} (build the plugins with `cargo xtask build-plugins`)",
                wasm.display()
            )
        })?;
        let manifest = std::fs::read_to_string(&toml)
            .with_context(|| format!("while reading {}", toml.display()))?;
        let mut config = serde_json::Map::new();
        if name == "coffee-bonus" {
            // So that the demo shows a bonus whatever day it starts on: the coffee chain's
            // double-points day (Monday by default) is set to the local day of the first start.
            let weekday = local_weekday(state.now_ms(), state.config.points.utc_offset_minutes);
            config.insert("double_weekday".to_owned(), weekday.into());
        }
        let version = crate::plugins::registry::install(
            &state.store,
            &state.plugins,
            &manifest,
            component,
            config,
            "demo",
            state.now_ms(),
        )
        .await
        .map_err(|err| anyhow::anyhow!("while installing {name}: {err}"))?;
        println!(
            "demo: installed plugin {}@{} ({})",
            version.name,
            version.version,
            version.hooks.join(", ")
        );
    }
    Ok(())
}

/// The local weekday name (`monday`..`sunday`) of a Unix-ms instant.
fn local_weekday(now_ms: i64, utc_offset_minutes: i64) -> &'static str {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let local_ms = now_ms.saturating_add(utc_offset_minutes.saturating_mul(60_000));
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let days = local_ms.div_euclid(crate::foundation::clock::DAY_MS);
    NAMES[usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0)]
}

/// One sample purchase: brand, order id, index in [`MEMBERS`], lines `(sku, category, qty, cents)`.
type SamplePurchase = (
    &'static str,
    &'static str,
    usize,
    &'static [(&'static str, &'static str, i64, i64)],
);

/// Sample activity so the API shows something at once: dinner at the restaurant unlocks the
/// cinema perk for the first member, a big mall purchase lifts them to Gold (free parking), and
/// coffee purchases show the coffee chain's bonus rules, and cinema tickets earn points that stay
/// pending through the cinema's return window.
const SAMPLE_PURCHASES: [SamplePurchase; 5] = [
    (
        "restaurant",
        "R-1001",
        0,
        &[
            ("hotpot-set", "dining", 2, 12_800),
            ("tea", "drinks", 2, 1_200),
        ],
    ),
    ("mall", "M-2001", 0, &[("handbag", "fashion", 1, 1_200_000)]),
    (
        "coffee",
        "C-3001",
        0,
        &[
            ("latte", "coffee", 2, 3_200),
            ("croissant", "bakery", 1, 1_800),
        ],
    ),
    ("coffee", "C-3002", 3, &[("americano", "coffee", 1, 2_600)]),
    // The cinema has a 7-day return window: these points are pending for a week.
    ("cinema", "K-4001", 1, &[("ticket", "tickets", 2, 6_000)]),
];

async fn seed_activity(state: &AppState) -> anyhow::Result<()> {
    for (brand, order_id, member, lines) in SAMPLE_PURCHASES {
        let Some((phone, ..)) = MEMBERS.get(member) else {
            continue;
        };
        let Some((member,)): Option<(String,)> =
            sqlx::query_as("SELECT id FROM members WHERE phone = $1")
                .bind(*phone)
                .fetch_optional(state.store.read())
                .await?
        else {
            continue;
        };
        let req = crate::domain::purchases::PurchaseRequest {
            order_id: order_id.to_owned(),
            member_id: member,
            lines: lines
                .iter()
                .enumerate()
                .map(
                    |(i, (sku, category, quantity, unit))| crate::domain::purchases::LineRequest {
                        line_id: format!("{}", i + 1),
                        sku: (*sku).to_owned(),
                        category: (*category).to_owned(),
                        quantity: *quantity,
                        unit_price_cents: *unit,
                    },
                )
                .collect(),
            points_spent: 0,
            stored_value_cents: 0,
            checkout_id: None,
        };
        let accepted = crate::workflows::purchase::propose_bonuses(state, brand, &req)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let mut tx = state.store.begin().await?;
        let view = crate::workflows::purchase::record(state, &mut tx, brand, &req, &accepted)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        tx.commit().await?;
        println!(
            "demo: purchase {order_id} at {brand}: {} base + {} bonus points",
            view.base_points, view.bonus_points
        );
    }
    Ok(())
}

/// The coffee chain funds at most 5,000 bonus points a month through its double-points plugin,
/// alerting at 80%: every bonus draws on it in its purchase's transaction.
async fn seed_budget(state: &AppState) -> anyhow::Result<()> {
    use crate::ledger::budgets::{self, BudgetKind, BudgetPeriod, NewBudget};
    let mut tx = state.store.begin().await?;
    budgets::create(
        &mut tx,
        "coffee",
        &NewBudget {
            kind: BudgetKind::BonusPoints,
            plugin: Some("coffee-bonus".to_owned()),
            campaign_id: None,
            period: BudgetPeriod::Month,
            amount: 5_000,
            alert_percent: 80,
            label: "double-points days".to_owned(),
        },
        "demo",
        state.now_ms(),
    )
    .await
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    tx.commit().await?;
    println!(
        "demo: budget: coffee funds at most 5000 bonus points a month through coffee-bonus \
         (GET /brands/coffee/budgets)"
    );
    Ok(())
}

/// Cents as `units.cc`.
fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

/// Stored value: the first member tops up 200.00 at the coffee chain's counter, then pays a
/// restaurant bill of 300.00 with 50.00 in points, 120.00 of that stored value and the rest in
/// cash; the coffee chain, holding the money, owes the restaurant 120.00 at settlement.
async fn seed_stored_value(state: &AppState) -> anyhow::Result<()> {
    use crate::ledger::stored_value::{self, TopupRequest};
    let Some((phone, ..)) = MEMBERS.first() else {
        return Ok(());
    };
    let Some((member,)): Option<(String,)> =
        sqlx::query_as("SELECT id FROM members WHERE phone = $1")
            .bind(*phone)
            .fetch_optional(state.store.read())
            .await?
    else {
        return Ok(());
    };
    let fail = |err: crate::foundation::error::DomainError| anyhow::anyhow!("{err}");
    let mut tx = state.store.begin().await?;
    let topup = stored_value::topup(
        &mut tx,
        state.store.backend(),
        &state.settings.stored_value,
        "coffee",
        &TopupRequest {
            topup_id: "TOPUP-1".to_owned(),
            member_id: member.clone(),
            amount_cents: 20_000,
        },
        false,
        state.now_ms(),
    )
    .await
    .map_err(fail)?;
    tx.commit().await?;
    let req = crate::domain::purchases::PurchaseRequest {
        order_id: "R-1002".to_owned(),
        member_id: member,
        lines: vec![crate::domain::purchases::LineRequest {
            line_id: "1".to_owned(),
            sku: "banquet".to_owned(),
            category: "dining".to_owned(),
            quantity: 1,
            unit_price_cents: 30_000,
        }],
        points_spent: 5_000,
        stored_value_cents: 12_000,
        checkout_id: None,
    };
    let accepted = crate::workflows::purchase::propose_bonuses(state, "restaurant", &req)
        .await
        .map_err(fail)?;
    let mut tx = state.store.begin().await?;
    let view = crate::workflows::purchase::record(state, &mut tx, "restaurant", &req, &accepted)
        .await
        .map_err(fail)?;
    tx.commit().await?;
    println!(
        "demo: stored value: {} topped up {} at coffee; purchase R-1002 at restaurant paid \
         {} points ({}), {} stored value, {} cash",
        topup.member_id,
        money(topup.amount_cents),
        view.points_spent,
        money(view.points_value_cents),
        money(view.stored_value_cents),
        money(view.cash_cents),
    );
    Ok(())
}

/// The paid membership card: the mall's "Mall Plus" plan (30.00 a month, ×1.5 base earn, at
/// least Silver, free parking, the lounge), sold to the first member at the coffee counter from the stored
/// value topped up there; the coffee chain owes the mall the fee at settlement.
async fn seed_membership(state: &AppState) -> anyhow::Result<()> {
    use crate::domain::membership::{self, BuyRequest, Payment, Period, PlanRequest};
    let Some((phone, ..)) = MEMBERS.first() else {
        return Ok(());
    };
    let Some((member,)): Option<(String,)> =
        sqlx::query_as("SELECT id FROM members WHERE phone = $1")
            .bind(*phone)
            .fetch_optional(state.store.read())
            .await?
    else {
        return Ok(());
    };
    let fail = |err: crate::foundation::error::DomainError| anyhow::anyhow!("{err}");
    let now = state.now_ms();
    let mut tx = state.store.begin().await?;
    let plan = membership::create_plan(
        &mut tx,
        &state.settings.membership,
        &state.settings.tiers,
        &PlanRequest {
            id: "mall-plus".to_owned(),
            title: "Mall Plus".to_owned(),
            brand_id: "mall".to_owned(),
            fee_cents: 3_000,
            period: Period::Month,
            // `lounge` opens the mall's lounge (club-lounge, a 0.2.0 plugin, reads the card).
            benefits: vec![
                "free-parking".to_owned(),
                "free-delivery".to_owned(),
                "lounge".to_owned(),
            ],
            points_multiplier_percent: 150,
            tier_floor: Some("silver".to_owned()),
            renewal_notice_days: Some(7),
            active: true,
        },
        now,
    )
    .await
    .map_err(fail)?;
    let sold = membership::buy(
        &mut tx,
        state.store.backend(),
        "coffee",
        &member,
        &BuyRequest {
            purchase_id: "CARD-1".to_owned(),
            plan_id: plan.id.clone(),
            payment: Payment::StoredValue,
            brand_id: Some("coffee".to_owned()),
        },
        now,
    )
    .await
    .map_err(fail)?;
    tx.commit().await?;
    println!(
        "demo: membership: {member} bought {} ({} a month) at coffee from stored value, in \
         force until {} ms",
        plan.title,
        money(plan.fee_cents),
        sold.card.expires_at_ms,
    );
    Ok(())
}

/// A referral programme the mall funds (500 points to the referrer, 200 to the invitee, on a
/// first purchase of at least 50.00): the first member invites a new member, whose first
/// purchase at the mall rewards both.
async fn seed_referrals(state: &AppState) -> anyhow::Result<()> {
    use crate::domain::referrals::{self, AttachRequest, ProgrammeRequest};
    let fail = |err: crate::foundation::error::DomainError| anyhow::anyhow!("{err}");
    let Some((phone, ..)) = MEMBERS.first() else {
        return Ok(());
    };
    let now = state.now_ms();
    let mut tx = state.store.begin().await?;
    let (referrer,): (String,) = sqlx::query_as("SELECT id FROM members WHERE phone = $1")
        .bind(*phone)
        .fetch_one(&mut *tx)
        .await?;
    let programme = ProgrammeRequest {
        id: "bring-a-friend".to_owned(),
        title: "Bring a friend".to_owned(),
        referrer_points: 500,
        invitee_points: 200,
        funding_brand: Some("mall".to_owned()),
        min_purchase_cents: 5_000,
        cap_per_referrer_per_month: 5,
        starts_at_ms: None,
        ends_at_ms: None,
    };
    referrals::create_programme(&mut tx, &programme, now)
        .await
        .map_err(fail)?;
    let (code, _) = referrals::invite_code(&mut tx, &referrer, now)
        .await
        .map_err(fail)?;
    let friend = NewMember::validate("+8613800138077", "Chen Jing", None, None, &[], now)
        .map_err(|err| anyhow::anyhow!("demo member: {err}"))?;
    let invitee = crate::domain::members::insert(&mut tx, &friend, None, now)
        .await
        .map_err(fail)?;
    referrals::attach(
        &mut tx,
        &invitee,
        &AttachRequest {
            code: code.code.clone(),
        },
        now,
    )
    .await
    .map_err(fail)?;
    tx.commit().await?;
    let req = crate::domain::purchases::PurchaseRequest {
        order_id: "M-2002".to_owned(),
        member_id: invitee.clone(),
        lines: vec![crate::domain::purchases::LineRequest {
            line_id: "1".to_owned(),
            sku: "scarf".to_owned(),
            category: "fashion".to_owned(),
            quantity: 1,
            unit_price_cents: 8_800,
        }],
        points_spent: 0,
        stored_value_cents: 0,
        checkout_id: None,
    };
    let accepted = crate::workflows::purchase::propose_bonuses(state, "mall", &req)
        .await
        .map_err(fail)?;
    let mut tx = state.store.begin().await?;
    crate::workflows::purchase::record(state, &mut tx, "mall", &req, &accepted)
        .await
        .map_err(fail)?;
    tx.commit().await?;
    let view = referrals::member_referrals(state.store.read(), &invitee)
        .await
        .map_err(fail)?;
    if let Some(referral) = view.invited_by {
        println!(
            "demo: referral: {referrer} invited {invitee} with code {}; purchase M-2002 at the \
             mall: {:?}, {} points to the referrer, {} to the invitee (funded by the mall)",
            code.code, referral.status, referral.referrer_points, referral.invitee_points
        );
    }
    Ok(())
}

/// Journeys (docs/ENGAGEMENT.md): a welcome journey (a coffee coupon for members who joined in
/// the last 30 days) and a silent-member journey (200 points funded by the coffee chain for
/// members who fell silent), with a member who joined 45 days ago and never bought; the stage
/// job and one run of the journeys make their effects show.
async fn seed_journeys(state: &AppState) -> anyhow::Result<()> {
    use crate::domain::stages::Stage;
    use crate::workflows::journeys::{self, Action, Audience, NewJourney, Status, Trigger};
    let fail = |err: crate::foundation::error::DomainError| anyhow::anyhow!("{err}");
    let now = state.now_ms();
    let mut tx = state.store.begin().await?;
    let dormant = NewMember::validate(
        "+8613800138099",
        "Zhou Jie",
        None,
        None,
        &[],
        now - 45 * crate::foundation::clock::DAY_MS,
    )
    .map_err(|err| anyhow::anyhow!("demo member: {err}"))?;
    let dormant_id = crate::domain::members::insert(
        &mut tx,
        &dormant,
        None,
        now - 45 * crate::foundation::clock::DAY_MS,
    )
    .await
    .map_err(fail)?;
    let template = crate::domain::coupons::TemplateRequest {
        id: "coffee-welcome".to_owned(),
        title: "Welcome: 10% off a coffee".to_owned(),
        funding_brand: "coffee".to_owned(),
        honouring_brand: "coffee".to_owned(),
        plugin: "coupon-logic".to_owned(),
        params: [
            ("kind", "percent-off-category"),
            ("category", "coffee"),
            ("percent-bp", "1000"),
            ("cap-cents", "300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        exclusive: false,
        validity_days: 30,
        value_cents: 300,
    };
    crate::domain::coupons::create_template(&mut tx, &template, now)
        .await
        .map_err(fail)?;
    let mut ids = Vec::new();
    for (title, trigger, action) in [
        (
            "Welcome coupon",
            Trigger::Joined { within_days: 30 },
            Action::IssueCoupon {
                template_id: "coffee-welcome".to_owned(),
            },
        ),
        (
            "Wake up silent members",
            Trigger::StageChanged { to: Stage::Silent },
            Action::GrantPoints {
                funding_brand_id: "coffee".to_owned(),
                points: 200,
            },
        ),
    ] {
        let req = NewJourney {
            title: title.to_owned(),
            trigger,
            audience: Audience::default(),
            actions: vec![action],
            per_member_cap: None,
            total_cap: Some(1_000),
            starts_at_ms: None,
            ends_at_ms: None,
            status: Some(Status::Active),
        };
        let audience = journeys::validate(&req).map_err(fail)?;
        let journey = journeys::create(&mut tx, &req, &audience, Some("coffee"), "demo", now)
            .await
            .map_err(fail)?;
        ids.push(journey.id);
    }
    tx.commit().await?;
    crate::domain::stages::run(&state.store, now, None)
        .await
        .map_err(fail)?;
    let report = journeys::run(state, None, now, None, |_, _| {})
        .await
        .map_err(fail)?;
    let touched = |id: &str| {
        report
            .journeys
            .iter()
            .filter(|l| l.journey_id == id)
            .map(|l| l.touched)
            .sum::<i64>()
    };
    let (welcome, silent) = match ids.as_slice() {
        [welcome, silent] => (touched(welcome), touched(silent)),
        _ => (0, 0),
    };
    println!(
        "demo: journeys: the welcome journey gave {welcome} members a coffee coupon; the \
         silent-member journey gave {silent} member(s) 200 points funded by coffee \
         ({dormant_id} joined 45 days ago and never bought) (GET /journeys)"
    );
    Ok(())
}

/// The coffee chain's next version, signed with a demo signing key of the coffee brand and
/// uploaded for review, so the console's review queue has a version to look at: its dry run
/// replays the sample coffee purchases. The admin approves, canaries, promotes or rejects it.
async fn seed_review(state: &AppState, dir: &Path) -> anyhow::Result<()> {
    use crate::domain::access::Principal;
    use crate::plugins::{lifecycle, signing};
    use base64::Engine as _;
    const NEXT: &str = "coffee-bonus-next";
    let (Ok(component), Ok(manifest)) = (
        std::fs::read(dir.join(format!("{NEXT}.wasm"))),
        std::fs::read_to_string(dir.join(format!("{NEXT}.toml"))),
    ) else {
        return Ok(());
    };
    let now_ms = state.now_ms();
    let backend = state.store.backend();
    let admin = Principal {
        key_id: "demo".to_owned(),
        role: Role::Admin,
        brand_id: None,
        member_id: None,
    };
    let coffee = Principal {
        key_id: "demo".to_owned(),
        role: Role::Brand,
        brand_id: Some("coffee".to_owned()),
        member_id: None,
    };
    let (secret, public) = signing::generate_keypair();
    let signature = signing::sign(&secret, manifest.as_bytes(), &component)
        .map_err(|err| anyhow::anyhow!("while signing {NEXT}: {err}"))?;
    let component_base64 = base64::engine::general_purpose::STANDARD.encode(&component);
    let mut tx = state.store.begin().await?;
    let key = lifecycle::register_key(
        &mut tx,
        backend,
        "coffee",
        &public,
        "demo release key",
        "demo",
        now_ms,
    )
    .await
    .map_err(|err| anyhow::anyhow!("while registering the demo signing key: {err}"))?;
    lifecycle::decide_key(&mut tx, backend, &admin, &key.id, true, "demo", now_ms)
        .await
        .map_err(|err| anyhow::anyhow!("while approving the demo signing key: {err}"))?;
    let package = lifecycle::Package {
        manifest: &manifest,
        component_base64: &component_base64,
        key_id: &key.id,
        signature: &signature,
    };
    let uploaded = lifecycle::upload(&mut tx, backend, &coffee, &package, now_ms)
        .await
        .map_err(|err| anyhow::anyhow!("while uploading {NEXT}: {err}"))?;
    tx.commit().await?;
    let version = lifecycle::validate(
        &state.store,
        &state.plugins,
        state.clock.as_ref(),
        &uploaded.id,
    )
    .await
    .map_err(|err| anyhow::anyhow!("while validating {NEXT}: {err}"))?;
    println!(
        "demo: {}@{} uploaded by coffee for review ({})",
        version.name, version.version, version.status
    );
    Ok(())
}

/// Seeds the demo coalition if the database has no brands, then prints where its keys are.
pub async fn seed(state: &AppState) -> anyhow::Result<()> {
    let path = state.config.data_dir.join(KEYS_FILE);
    let tmp = tmp_path(&path);
    let (brands,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM brands")
        .fetch_one(state.store.read())
        .await
        .context("while checking for an existing coalition")?;
    if brands > 0 {
        // A crash between commit and rename leaves the only copy of the keys in the temp file.
        if !path.exists() && tmp.exists() {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("while moving {} into place", tmp.display()))?;
        }
        match read_keys(&path) {
            Ok(keys) => print_summary(&keys, &path, &base_url(state), false),
            Err(_) => println!(
                "demo: the database already has brands; not seeding. No {} to show keys from: \
                 create one with `coalition admin create-key`.",
                path.display()
            ),
        }
        return Ok(());
    }
    let keys = seed_coalition(state).await?;
    print_summary(&keys, &path, &keys.base_url, true);
    Ok(())
}

/// Creates the brands, members and keys in one transaction and writes the keys file.
pub async fn seed_coalition(state: &AppState) -> anyhow::Result<DemoKeys> {
    let now_ms = state.now_ms();
    let mut tx = state.store.begin().await?;
    seed_brands(&mut tx, now_ms).await?;
    seed_perks(&mut tx, now_ms).await?;
    let member_ids = seed_members(&mut tx, now_ms).await?;
    let keys = seed_keys(&mut tx, state, &member_ids, now_ms).await?;
    let path = state.config.data_dir.join(KEYS_FILE);
    let tmp = tmp_path(&path);
    write_private(&tmp, &serde_json::to_vec_pretty(&keys)?)
        .with_context(|| format!("while writing {}", tmp.display()))?;
    tx.commit()
        .await
        .context("while committing the demo coalition")?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("while moving {} into place", tmp.display()))?;
    Ok(keys)
}

async fn seed_brands(tx: &mut Tx, now_ms: i64) -> anyhow::Result<()> {
    for (id, name, earn_points, earn_unit_cents, skus, categories) in BRANDS {
        let req = CreateBrand {
            id: id.to_owned(),
            name: name.to_owned(),
            earn_points,
            earn_unit_cents,
            excluded_skus: skus.iter().map(|s| (*s).to_owned()).collect(),
            excluded_categories: categories.iter().map(|s| (*s).to_owned()).collect(),
            // Tickets may be returned for a week: the cinema's points show as pending.
            return_window_days: if id == "cinema" { 7 } else { 0 },
        };
        crate::domain::brands::create(tx, &req, now_ms)
            .await
            .map_err(|err| anyhow::anyhow!("while creating demo brand {id}: {err}"))?;
    }
    Ok(())
}

/// The cinema perk's coupon (half price on tickets, at most 40.00, applied by coupon-logic)
/// and its stock: 100 tickets, two per member, one a day.
async fn seed_perks(tx: &mut Tx, now_ms: i64) -> anyhow::Result<()> {
    let template = crate::domain::coupons::TemplateRequest {
        id: "cinema-ticket-half".to_owned(),
        title: "Half-price cinema ticket".to_owned(),
        funding_brand: "restaurant".to_owned(),
        honouring_brand: "cinema".to_owned(),
        plugin: "coupon-logic".to_owned(),
        params: [
            ("kind", "percent-off-category"),
            ("category", "ticket"),
            ("percent-bp", "5000"),
            ("cap-cents", "4000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        exclusive: false,
        validity_days: 30,
        value_cents: 4_000,
    };
    crate::domain::coupons::create_template(tx, &template, now_ms)
        .await
        .map_err(|err| anyhow::anyhow!("while creating the demo coupon template: {err}"))?;
    let inventory = crate::workflows::perks::InventoryRequest {
        funding_brand: "restaurant".to_owned(),
        total_stock: Some(100),
        per_member_limit: Some(2),
        tier_limits: std::collections::BTreeMap::new(),
        period: "day".to_owned(),
        per_period_limit: Some(1),
        starts_at_ms: None,
        ends_at_ms: None,
        status: "active".to_owned(),
    };
    crate::workflows::perks::put_inventory(
        tx,
        "cinema-dinner",
        "cinema-ticket-half",
        &inventory,
        now_ms,
    )
    .await
    .map_err(|err| anyhow::anyhow!("while stocking the demo cinema perk: {err}"))?;
    Ok(())
}

async fn seed_members(tx: &mut Tx, now_ms: i64) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(MEMBERS.len());
    for (phone, name, birthday, email, tags) in MEMBERS {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let member = NewMember::validate(phone, name, Some(birthday), email, &tags, now_ms)
            .map_err(|err| anyhow::anyhow!("demo member {name}: {err}"))?;
        let id = crate::domain::members::insert(tx, &member, None, now_ms)
            .await
            .map_err(|err| anyhow::anyhow!("while creating demo member {name}: {err}"))?;
        ids.push(id);
    }
    Ok(ids)
}

async fn seed_keys(
    tx: &mut Tx,
    state: &AppState,
    member_ids: &[String],
    now_ms: i64,
) -> anyhow::Result<DemoKeys> {
    let key = |err: crate::foundation::error::DomainError| {
        anyhow::anyhow!("while creating a demo key: {err}")
    };
    let admin = create_key(&mut **tx, Role::Admin, None, None, "demo admin", now_ms)
        .await
        .map_err(key)?;
    let mut brands = BTreeMap::new();
    for (id, ..) in BRANDS {
        let brand = create_key(
            &mut **tx,
            Role::Brand,
            Some(id),
            None,
            "demo back office",
            now_ms,
        )
        .await
        .map_err(key)?;
        let counter = create_key(
            &mut **tx,
            Role::Counter,
            Some(id),
            None,
            "demo counter",
            now_ms,
        )
        .await
        .map_err(key)?;
        brands.insert(
            id.to_owned(),
            BrandKeys {
                brand: brand.secret,
                counter: counter.secret,
            },
        );
    }
    let mut members = Vec::new();
    for ((phone, name, ..), member_id) in MEMBERS.iter().zip(member_ids).take(MEMBERS_WITH_KEYS) {
        let created = create_key(
            &mut **tx,
            Role::Member,
            None,
            Some(member_id),
            "demo member app",
            now_ms,
        )
        .await
        .map_err(key)?;
        members.push(MemberKey {
            member_id: member_id.clone(),
            name: (*name).to_owned(),
            phone: (*phone).to_owned(),
            key: created.secret,
        });
    }
    Ok(DemoKeys {
        base_url: base_url(state),
        admin: admin.secret,
        brands,
        members,
    })
}

fn base_url(state: &AppState) -> String {
    let listen = state.config.listen;
    // A wildcard address is where the server listens, not where a client connects.
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    format!("http://{host}:{}", listen.port())
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("json.tmp")
}

/// Reads a keys file written by [`seed_coalition`].
pub fn read_keys(path: &Path) -> anyhow::Result<DemoKeys> {
    let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("while parsing {}", path.display()))
}

/// Writes a file readable by its owner only: it holds live secrets.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn print_summary(keys: &DemoKeys, path: &Path, base_url: &str, created: bool) {
    let what = if created { "seeded" } else { "already seeded" };
    println!(
        "demo: coalition {what}: brands {}; {} brand, {} counter and {} member keys in {}",
        keys.brands.keys().cloned().collect::<Vec<_>>().join(", "),
        keys.brands.len(),
        keys.brands.len(),
        keys.members.len(),
        path.display()
    );
    println!("demo: admin key {}", keys.admin);
    println!(
        "demo: try  curl -s '{base_url}/members?limit=3' -H 'Authorization: Bearer {}'",
        keys.admin
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_weekday_follows_the_offset() {
        // 2026-03-02T10:00:00Z is a Monday; at UTC-12 it is still Sunday.
        assert_eq!(super::local_weekday(1_772_445_600_000, 0), "monday");
        assert_eq!(super::local_weekday(1_772_445_600_000, -720), "sunday");
        assert_eq!(super::local_weekday(0, 0), "thursday");
    }
}
