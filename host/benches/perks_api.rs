//! Perks benchmark: listing perks with 4 plugins deployed, redeeming a perk, and checking a
//! cart out with a coupon (the coupon plugin's `apply-coupon`), through the HTTP API of a server
//! started in-process on a loopback port, against SQLite and PostgreSQL.
//!
//! ```text
//! COALITION_PLUGINS_DIR=$PWD/target/plugins cargo bench -p coalition --bench perks_api
//! BENCH_REQUESTS=4000 BENCH_CLIENTS=32 cargo bench -p coalition --bench perks_api
//! ```
//! Needs the example plugins built (`cargo xtask build-plugins`). PostgreSQL is taken from
//! `COALITION_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh
//! database is created and dropped. Prints a Markdown table.

mod common;

use common::{drive, pg_admin_url, Stats};
use std::path::PathBuf;
use std::sync::Arc;

use coalition::auth::Role;
use coalition::clock::{Clock, SystemClock};
use coalition::config::Config;
use coalition::store::{Backend, Store};
use serde_json::json;

/// Requests per measured run (bounded so each configuration stays well under a minute).
const DEFAULT_REQUESTS: usize = 2_000;
/// Concurrent clients.
const DEFAULT_CLIENTS: usize = 16;
/// Members the load is spread over.
const MEMBERS: usize = 400;
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

fn plugins_dir() -> PathBuf {
    std::env::var_os("COALITION_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
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
    let state = coalition::server::build_state(config, Arc::new(SystemClock))
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
    for (name, config) in [
        ("cinema-dinner", json!({})),
        ("parking-perk", json!({ "min_tier_rank": 0 })),
        ("coffee-bonus", json!({})),
        ("coupon-logic", json!({})),
    ] {
        let component = std::fs::read(dir_plugins.join(format!("{name}.wasm")))
            .expect("component: run cargo xtask build-plugins");
        let manifest =
            std::fs::read_to_string(dir_plugins.join(format!("{name}.toml"))).expect("manifest");
        coalition::plugins::registry::install(
            &state.store,
            &state.plugins,
            &manifest,
            component,
            config.as_object().cloned().unwrap_or_default(),
            "bench",
            now,
        )
        .await
        .expect("install");
    }
    let admin = coalition::auth::create_key(store.write(), Role::Admin, None, None, "bench", now)
        .await
        .expect("admin key")
        .secret;
    let restaurant = coalition::auth::create_key(
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
    let cinema = coalition::auth::create_key(
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = coalition::server::run(listener, state, async {
            let _ = rx.await;
        })
        .await;
    });
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

struct Row {
    backend: &'static str,
    operation: &'static str,
    stats: Stats,
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
            let stats = drive(clients, requests, move |i| {
                let (http, base, admin, members) =
                    (http.clone(), base.clone(), admin.clone(), members.clone());
                async move {
                    let m = &members[i % members.len()];
                    match http
                        .get(format!("{base}/members/{m}/perks"))
                        .bearer_auth(&admin)
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
            })
            .await;
            Row {
                backend: name,
                operation: label,
                stats,
            }
        }
    };
    // The first pass over the members fills the listing cache; the second is served from it.
    rows.push(list("list perks, 4 plugins (first ~1/5 cache misses)").await);
    rows.push(list("list perks, 4 plugins (cache warm)").await);

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
    rows.push(Row {
        backend: name,
        operation: "redeem perk (coupon issued)",
        stats: redeem,
    });

    let coupons: Vec<(String, String)> =
        sqlx::query_as("SELECT code, member_id FROM coupons ORDER BY code")
            .fetch_all(env.store.read())
            .await
            .expect("coupons");
    let coupons = Arc::new(coupons);
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
    rows.push(Row {
        backend: name,
        operation: "checkout with 1 coupon (apply-coupon)",
        stats: checkout,
    });

    let _ = env.shutdown.send(());
    let _ = env.server.await;
    env.store.close().await;
    rows
}

fn main() {
    let requests = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    let clients = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CLIENTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rt.block_on(async move {
        sqlx::any::install_default_drivers();
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        rows.extend(bench_backend("SQLite", url, dir, clients, requests).await);

        use sqlx::Connection;
        let admin = pg_admin_url();
        match sqlx::AnyConnection::connect(&admin).await {
            Ok(mut conn) => {
                let db = format!("coalition_bench_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut conn)
                    .await
                    .expect("create db");
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{db}"),
                    None => format!("{admin}/{db}"),
                };
                let dir = tempfile::tempdir().expect("tempdir");
                rows.extend(bench_backend("PostgreSQL", url, dir, clients, requests).await);
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
            Err(err) => eprintln!("PostgreSQL unreachable at {admin} ({err}); skipped"),
        }
        rows
    });
    println!("{clients} concurrent clients, {requests} requests per run, {MEMBERS} members\n");
    println!("| backend | operation | throughput (req/s) | p50 (ms) | p99 (ms) | errors |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        let s = r.stats;
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.backend,
            r.operation,
            s.throughput(),
            s.p50_us as f64 / 1000.0,
            s.p99_us as f64 / 1000.0,
            s.errors,
        );
    }
}
