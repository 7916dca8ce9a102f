//! Perks benchmark: listing perks with 4 plugins deployed, redeeming a perk, and checking a
//! cart out with a coupon (the coupon plugin's `apply-coupon`), through the HTTP API of a server
//! started in-process on a loopback port, against SQLite and PostgreSQL — each with a baseline
//! in the same run: the same reads or writes as raw SQL transactions through sqlx, at the same
//! concurrency, without HTTP, auth, validation or plugin calls.
//!
//! ```text
//! COALITION_PLUGINS_DIR=$PWD/target/plugins cargo bench -p coalition --bench perks_api
//! BENCH_REQUESTS=4000 BENCH_CLIENTS=32 cargo bench -p coalition --bench perks_api
//! ```
//! Needs the example plugins built (`cargo xtask build-plugins`). PostgreSQL is taken from
//! `COALITION_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh
//! database is created and dropped. Prints a Markdown table.

mod common;

use common::{
    drive, drive_latencies, env_usize, install_examples, on_both_backends, plugins_dir,
    print_api_vs_raw, raw_claim, raw_complete, raw_debit, serve, Latencies, Row, Stats,
};
use std::sync::Arc;

use coalition::domain::access::Role;
use coalition::foundation::clock::{Clock, SystemClock};
use coalition::foundation::store::new_id;
use coalition::foundation::store::{Backend, Store};
use coalition::interfaces::config::Config;
use serde_json::json;

/// Requests per measured run (bounded so each configuration stays well under a minute).
const DEFAULT_REQUESTS: usize = 2_000;
/// Concurrent clients.
const DEFAULT_CLIENTS: usize = 16;
/// Members the load is spread over.
const MEMBERS: usize = 400;
/// Quiet/noisy round pairs of the noisy-neighbour comparison (interleaved, so drift of the
/// machine's speed hits both sides alike).
const NOISY_ROUNDS: usize = 4;
/// Fuel given to the spinning plugin: the platform maximum. With its `host-calls` spin (below)
/// that lasts about 10 s of CPU, so its 20 ms deadline stops every call; its default tight loop
/// would spend the 50M fuel in 3–7 ms and stop far short of the deadline.
const SPINNER_FUEL: &str = "fuel = 50_000_000";
/// Each member's restaurant dinner, cents: unlocks the cinema perk and earns 10,000 points,
/// enough for 20 redemptions.
const DINNER_CENTS: i64 = 1_000_000;

struct Env {
    store: Store,
    base: String,
    admin: String,
    cinema: String,
    members: Arc<Vec<String>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn post(
    http: &reqwest::Client,
    url: String,
    key: &str,
    idem: String,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = http
        .post(url)
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or_default())
}

async fn setup(url: String, dir: tempfile::TempDir, http: &reqwest::Client) -> Env {
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: url,
        ..Config::default()
    };
    config.jobs.enabled = false;
    config.log_filter = "warn".to_owned();
    let state = coalition::app::server::build_state(config, Arc::new(SystemClock))
        .await
        .expect("state");
    let store = state.store.clone();
    let now = SystemClock.now_ms();
    for brand in ["restaurant", "cinema", "mall", "parking", "coffee"] {
        sqlx::query(
            "INSERT INTO brands (id, name, earn_points, earn_unit_cents, created_at, updated_at)
             VALUES ($1, $1, 1, 100, $2, $2)",
        )
        .bind(brand)
        .bind(now)
        .execute(store.write())
        .await
        .expect("brand");
    }
    let dir_plugins = plugins_dir();
    install_examples(&state, now).await;
    let admin =
        coalition::domain::access::create_key(store.write(), Role::Admin, None, None, "bench", now)
            .await
            .expect("admin key")
            .secret;
    let restaurant = coalition::domain::access::create_key(
        store.write(),
        Role::Counter,
        Some("restaurant"),
        None,
        "bench",
        now,
    )
    .await
    .expect("counter key")
    .secret;
    let cinema = coalition::domain::access::create_key(
        store.write(),
        Role::Counter,
        Some("cinema"),
        None,
        "bench",
        now,
    )
    .await
    .expect("counter key")
    .secret;
    // The noisy neighbour: a plugin whose list-perks spins until its 20 ms deadline stops it,
    // installed now and killed at once (it serves only in the noisy rounds).
    let spinner = std::fs::read_to_string(dir_plugins.join("infinite-loop.toml"))
        .expect("manifest")
        .replace("fuel = 2_000_000", SPINNER_FUEL);
    assert!(
        spinner.contains(SPINNER_FUEL),
        "the fixture's fuel line moved"
    );
    coalition::plugins::registry::install(
        &state.store,
        &state.plugins,
        &spinner,
        std::fs::read(dir_plugins.join("infinite-loop.wasm")).expect("component"),
        serde_json::Map::from_iter([("spin".to_owned(), json!("host-calls"))]),
        "bench",
        now,
    )
    .await
    .expect("install the spinner");
    let (base, tx, server) = serve(state).await;
    let (status, body) = post(
        http,
        format!("{base}/coupon-templates"),
        &admin,
        "tpl".into(),
        json!({
        "id": "cinema-ticket-half", "title": "Half-price cinema ticket",
        "funding_brand": "restaurant", "honouring_brand": "cinema", "plugin": "coupon-logic",
        "params": { "kind": "percent-off-category", "category": "ticket", "percent-bp": "5000",
                    "cap-cents": "4000" },
        "validity_days": 30, "value_cents": 4000 }),
    )
    .await;
    assert!(status.is_success(), "{body}");
    switch_spinner(http, &base, &admin, "kill").await;
    let resp = http
        .put(format!(
            "{base}/perks/cinema-dinner/cinema-ticket-half/inventory"
        ))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "inv")
        .json(&json!({ "funding_brand": "restaurant", "total_stock": 1_000_000 }))
        .send()
        .await
        .expect("inventory");
    assert!(resp.status().is_success());
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let (status, body) = post(
            http,
            format!("{base}/members"),
            &admin,
            format!("m-{i}"),
            json!({ "phone": format!("+8613{i:09}"), "name": "Bench" }),
        )
        .await;
        assert!(status.is_success(), "{body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let (status, body) = post(
            http,
            format!("{base}/brands/restaurant/purchases"),
            &restaurant,
            format!("d-{i}"),
            json!({ "order_id": format!("D-{i}"), "member_id": id, "lines": [
                { "line_id": "1", "sku": "banquet", "category": "dining", "quantity": 1,
                  "unit_price_cents": DINNER_CENTS } ] }),
        )
        .await;
        assert!(status.is_success(), "{body}");
        members.push(id);
    }
    Env {
        store,
        base,
        admin,
        cinema,
        members: Arc::new(members),
        shutdown: tx,
        server,
        _dir: dir,
    }
}

/// One listing of `member`'s perks: true when it answers with the healthy plugins' two perks
/// (whatever a failing plugin did).
async fn lists_both_perks(http: &reqwest::Client, base: &str, admin: &str, member: &str) -> bool {
    match http
        .get(format!("{base}/members/{member}/perks"))
        .bearer_auth(admin)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r
            .json::<serde_json::Value>()
            .await
            .map(|v| v["perks"].as_array().map_or(0, Vec::len) == 2)
            .unwrap_or(false),
        _ => false,
    }
}

/// Kills or resumes the spinning plugin through the API.
async fn switch_spinner(http: &reqwest::Client, base: &str, admin: &str, action: &str) {
    let (status, body) = post(
        http,
        format!("{base}/plugin-names/infinite-loop/{action}"),
        admin,
        uuid::Uuid::new_v4().to_string(),
        json!({ "reason": "noisy-neighbour bench" }),
    )
    .await;
    assert!(status.is_success(), "{action}: {body}");
}

/// Listings of the whole population with the spinner killed (quiet) and serving (noisy), in
/// interleaved rounds; each side's latencies merged over its rounds.
async fn noisy_neighbour(
    env: &Env,
    http: &reqwest::Client,
    clients: usize,
    requests: usize,
) -> (Stats, Stats) {
    let (mut quiet, mut noisy) = (Latencies::default(), Latencies::default());
    // Killed at setup; each round runs quiet first, then noisy.
    let mut serving_now = false;
    for _ in 0..NOISY_ROUNDS {
        for serving in [false, true] {
            if serving != serving_now {
                let action = if serving { "resume" } else { "kill" };
                switch_spinner(http, &env.base, &env.admin, action).await;
                serving_now = serving;
            }
            let (http, base, admin, members) = (
                http.clone(),
                env.base.clone(),
                env.admin.clone(),
                env.members.clone(),
            );
            let run =
                drive_latencies(clients, requests, move |i| {
                    let (http, base, admin, members) =
                        (http.clone(), base.clone(), admin.clone(), members.clone());
                    async move {
                        lists_both_perks(&http, &base, &admin, &members[i % members.len()]).await
                    }
                })
                .await;
            if serving {
                noisy.merge(run);
            } else {
                quiet.merge(run);
            }
        }
    }
    if serving_now {
        switch_spinner(http, &env.base, &env.admin, "kill").await;
    }
    (quiet.stats(), noisy.stats())
}

/// Points a perk costs (the cinema perk of `cinema-dinner`).
const PERK_POINTS: i64 = 500;

/// The fresh reads a listing does on every request (the plugins' part is cached), as one raw
/// read: the member and wallet, the inventory, the member's redemption counts.
async fn raw_list(store: &Store, member: &str) -> Result<(), sqlx::Error> {
    let mut conn = store.read().acquire().await?;
    let _: (String, i64) = sqlx::query_as(
        "SELECT m.tier, w.balance FROM members m JOIN point_wallets w ON w.member_id = m.id
         WHERE m.id = $1",
    )
    .bind(member)
    .fetch_one(&mut *conn)
    .await?;
    let _: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT plugin, perk_id, remaining FROM perk_inventory")
            .fetch_all(&mut *conn)
            .await?;
    let _: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT plugin, perk_id, CAST(COUNT(*) AS BIGINT) FROM perk_redemptions
         WHERE member_id = $1 AND status = 'redeemed' GROUP BY plugin, perk_id",
    )
    .bind(member)
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

/// The writes of a perk redemption, as one raw transaction: idempotency claim, guarded wallet
/// debit, the oldest lot drawn, entry, consumption, two postings, the coupon, the receipt, a
/// guarded stock decrement, the redemption, its settle event, the stored response.
async fn raw_redeem(store: &Store, i: usize, member: &str) -> Result<(), sqlx::Error> {
    let now = SystemClock.now_ms();
    let mut tx = store.begin().await?;
    let key = format!("rr-{i}");
    raw_claim(&mut tx, &key, now).await?;
    let entry = raw_debit(
        &mut tx,
        member,
        PERK_POINTS,
        "spend",
        Some("restaurant"),
        "redemption",
        "perk",
        now,
    )
    .await?;
    let redemption = new_id();
    let code = coalition::domain::coupons::generate_code();
    sqlx::query("INSERT INTO coupons (code, template_id, member_id, status, source_kind, source_id, issued_at, expires_at, updated_at) VALUES ($1, 'cinema-ticket-half', $2, 'issued', 'perk', $3, $4, $5, $4)")
        .bind(&code).bind(member).bind(&redemption).bind(now).bind(now + 30 * 86_400_000).execute(&mut *tx).await?;
    let receipt = new_id();
    sqlx::query("INSERT INTO plugin_receipts (id, plugin, version, hook, component_sha256, input_sha256, output_sha256, fuel_used, duration_us, input, output, subject_kind, subject_id, created_at) VALUES ($1, 'cinema-dinner', '1.0.0', 'redeem-perk', 'c', 'i', 'o', 10000, 50, '{}', '{}', 'redemption', $2, $3)")
        .bind(&receipt).bind(&redemption).bind(now).execute(&mut *tx).await?;
    let taken = sqlx::query("UPDATE perk_inventory SET remaining = remaining - 1, updated_at = $1 WHERE plugin = 'cinema-dinner' AND perk_id = 'cinema-ticket-half' AND remaining > 0")
        .bind(now).execute(&mut *tx).await?.rows_affected();
    if taken != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    sqlx::query("INSERT INTO perk_redemptions (id, member_id, plugin, plugin_version, perk_id, funding_brand, honouring_brand, tier, points, value_cents, grant_kind, coupon_code, stock_taken, status, spend_entry_id, receipt_id, created_at) VALUES ($1, $2, 'cinema-dinner', '1.0.0', 'cinema-ticket-half', 'restaurant', 'cinema', 'bronze', $3, 4000, 'coupon', $4, 1, 'redeemed', $5, $6, $7)")
        .bind(&redemption).bind(member).bind(PERK_POINTS).bind(&code).bind(&entry).bind(&receipt).bind(now).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO settle_events (id, kind, brand_id, funding_brand, honouring_brand, reference, plugin, points, value_cents, member_id, subject_kind, subject_id, dedupe_key, occurred_at, status, attempts, created_at) VALUES ($1, 'perk-redeemed', 'cinema', 'restaurant', 'cinema', 'cinema-ticket-half', 'cinema-dinner', $2, 4000, $3, 'redemption', $4, $5, $6, 'pending', 0, $6)")
        .bind(new_id()).bind(PERK_POINTS).bind(member).bind(&redemption).bind(format!("redemption:{redemption}:perk-redeemed")).bind(now).execute(&mut *tx).await?;
    raw_complete(&mut tx, &key).await?;
    tx.commit().await
}

/// The writes of a checkout with one coupon, as one raw transaction: idempotency claim, the
/// coupon read and reserved by a guarded update, the checkout, its discount line, the stored
/// response.
async fn raw_checkout(
    store: &Store,
    i: usize,
    code: &str,
    member: &str,
) -> Result<(), sqlx::Error> {
    let now = SystemClock.now_ms();
    let mut tx = store.begin().await?;
    let key = format!("rc-{i}");
    raw_claim(&mut tx, &key, now).await?;
    let (template,): (String,) = sqlx::query_as("SELECT c.template_id FROM coupons c JOIN coupon_templates t ON t.id = c.template_id WHERE c.code = $1 AND c.member_id = $2 AND c.status = 'issued' AND c.expires_at > $3 AND t.honouring_brand = 'cinema'")
        .bind(code).bind(member).bind(now).fetch_one(&mut *tx).await?;
    let checkout = new_id();
    let reserved = sqlx::query("UPDATE coupons SET status = 'reserved', reservation_id = $1, reserved_until = $2, updated_at = $3 WHERE code = $4 AND status = 'issued'")
        .bind(&checkout).bind(now + 900_000).bind(now).bind(code).execute(&mut *tx).await?.rows_affected();
    if reserved != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    sqlx::query("INSERT INTO checkouts (id, brand_id, member_id, lines_sha256, total_cents, discount_cents, status, expires_at, created_at) VALUES ($1, 'cinema', $2, 'h', 11200, 4000, 'open', $3, $4)")
        .bind(&checkout).bind(member).bind(now + 900_000).bind(now).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO checkout_discounts (checkout_id, code, position, template_id, line_id, discount_cents) VALUES ($1, $2, 0, $3, 't', 4000)")
        .bind(&checkout).bind(code).bind(&template).execute(&mut *tx).await?;
    raw_complete(&mut tx, &key).await?;
    tx.commit().await
}

async fn bench_backend(
    name: &'static str,
    url: String,
    dir: tempfile::TempDir,
    clients: usize,
    requests: usize,
) -> Vec<Row> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let env = setup(url, dir, &http).await;
    assert_eq!(
        env.store.backend(),
        if name == "SQLite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    );
    let mut rows = Vec::new();
    let list = |label: &'static str| {
        let (http, base, admin, members) = (
            http.clone(),
            env.base.clone(),
            env.admin.clone(),
            env.members.clone(),
        );
        async move {
            let stats =
                drive(clients, requests, move |i| {
                    let (http, base, admin, members) =
                        (http.clone(), base.clone(), admin.clone(), members.clone());
                    async move {
                        lists_both_perks(&http, &base, &admin, &members[i % members.len()]).await
                    }
                })
                .await;
            (label, stats)
        }
    };
    let raw_list_stats = {
        let (store, members) = (env.store.clone(), env.members.clone());
        drive(clients, requests, move |i| {
            let (store, members) = (store.clone(), members.clone());
            async move { raw_list(&store, &members[i % members.len()]).await.is_ok() }
        })
        .await
    };
    // The first pass over the members fills the listing cache; the second is served from it.
    for (operation, api) in [
        list("list perks, 4 plugins (first ~1/5 cache misses)").await,
        list("list perks, 4 plugins (cache warm)").await,
    ] {
        rows.push(Row {
            backend: name,
            operation,
            api,
            raw: raw_list_stats,
        });
    }

    let redeem = {
        let (http, base, admin, members) = (
            http.clone(),
            env.base.clone(),
            env.admin.clone(),
            env.members.clone(),
        );
        drive(clients, requests, move |i| {
            let (http, base, admin, members) =
                (http.clone(), base.clone(), admin.clone(), members.clone());
            async move {
                let m = &members[i % members.len()];
                http.post(format!(
                    "{base}/members/{m}/perks/cinema-dinner/cinema-ticket-half/redeem"
                ))
                .bearer_auth(&admin)
                .header("Idempotency-Key", format!("r-{i}"))
                .json(&json!({ "expected_cost_points": 500 }))
                .send()
                .await
                .map(|r| r.status() == reqwest::StatusCode::CREATED)
                .unwrap_or(false)
            }
        })
        .await
    };
    let raw = {
        let (store, members) = (env.store.clone(), env.members.clone());
        drive(clients, requests, move |i| {
            let (store, members) = (store.clone(), members.clone());
            async move {
                raw_redeem(&store, i, &members[i % members.len()])
                    .await
                    .is_ok()
            }
        })
        .await
    };
    rows.push(Row {
        backend: name,
        operation: "redeem perk (coupon issued)",
        api: redeem,
        raw,
    });

    // API and raw redemptions issued 2 × `requests` coupons: the API checks out the first
    // half, the raw baseline the second.
    let coupons: Vec<(String, String)> =
        sqlx::query_as("SELECT code, member_id FROM coupons WHERE status = 'issued' ORDER BY code")
            .fetch_all(env.store.read())
            .await
            .expect("coupons");
    let half = coupons.len() / 2;
    let raw_coupons = Arc::new(coupons[half..].to_vec());
    let coupons = Arc::new(coupons[..half].to_vec());
    let checkout = {
        let (http, base, cinema, coupons) = (
            http.clone(),
            env.base.clone(),
            env.cinema.clone(),
            coupons.clone(),
        );
        let total = requests.min(coupons.len());
        drive(clients, total, move |i| {
            let (http, base, cinema, coupons) = (http.clone(), base.clone(), cinema.clone(), coupons.clone());
            async move {
                let (code, member) = &coupons[i];
                http.post(format!("{base}/brands/cinema/checkouts"))
                    .bearer_auth(&cinema)
                    .header("Idempotency-Key", format!("c-{i}"))
                    .json(&json!({ "member_id": member, "coupon_codes": [code], "lines": [
                        { "line_id": "t", "sku": "ticket-2d", "category": "ticket", "quantity": 2, "unit_price_cents": 5000 },
                        { "line_id": "p", "sku": "popcorn", "category": "snacks", "quantity": 1, "unit_price_cents": 1200 } ] }))
                    .send()
                    .await
                    .map(|r| r.status() == reqwest::StatusCode::CREATED)
                    .unwrap_or(false)
            }
        })
        .await
    };
    let raw = {
        let (store, coupons) = (env.store.clone(), raw_coupons.clone());
        let total = requests.min(coupons.len());
        drive(clients, total, move |i| {
            let (store, coupons) = (store.clone(), coupons.clone());
            async move {
                let (code, member) = &coupons[i];
                raw_checkout(&store, i, code, member).await.is_ok()
            }
        })
        .await
    };
    rows.push(Row {
        backend: name,
        operation: "checkout with 1 coupon (apply-coupon)",
        api: checkout,
        raw,
    });

    let (quiet, noisy) = noisy_neighbour(&env, &http, clients, requests / 2).await;
    println!(
        "{name}: noisy neighbour, {NOISY_ROUNDS} interleaved rounds of {} listings each side: \
         quiet p50 {:.2} ms p99 {:.2} ms, spinner serving p50 {:.2} ms ({:.2}×) p99 {:.2} ms \
         ({:.2}×), errors {} / {}",
        requests / 2,
        quiet.p50_us as f64 / 1000.0,
        quiet.p99_us as f64 / 1000.0,
        noisy.p50_us as f64 / 1000.0,
        noisy.p50_us as f64 / quiet.p50_us.max(1) as f64,
        noisy.p99_us as f64 / 1000.0,
        noisy.p99_us as f64 / quiet.p99_us.max(1) as f64,
        quiet.errors,
        noisy.errors,
    );

    let _ = env.shutdown.send(());
    let _ = env.server.await;
    env.store.close().await;
    rows
}

fn main() {
    let requests = env_usize("BENCH_REQUESTS", DEFAULT_REQUESTS);
    let clients = env_usize("BENCH_CLIENTS", DEFAULT_CLIENTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows: Vec<Row> = rt
        .block_on(on_both_backends(|name, url, dir| {
            bench_backend(name, url, dir, clients, requests)
        }))
        .into_iter()
        .flatten()
        .collect();
    println!("{clients} concurrent clients, {requests} requests per run, {MEMBERS} members\n");
    print_api_vs_raw(&rows);
}
