//! Ledger and API benchmark: purchases with earn, and spends, through the HTTP API of a server
//! started in-process on a loopback port, against SQLite and PostgreSQL — with a baseline in the
//! same run: the same writes as raw SQL transactions through sqlx, at the same concurrency.
//!
//! ```text
//! cargo bench -p coalition --bench ledger_api
//! BENCH_REQUESTS=4000 BENCH_CLIENTS=32 cargo bench -p coalition --bench ledger_api
//! ```
//! PostgreSQL is taken from `COALITION_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/
//! postgres`); a fresh database is created and dropped. Prints a Markdown table.

mod common;

use common::{
    drive, env_usize, on_both_backends, print_api_vs_raw, raw_claim, raw_complete, raw_debit,
    serve, Row,
};
use std::sync::Arc;

use coalition::domain::access::Role;
use coalition::foundation::clock::{Clock, SystemClock};
use coalition::foundation::store::{new_id, Backend, Store};
use coalition::interfaces::config::Config;
use coalition::ledger::{self, AdjustmentRequest, Val};
use serde_json::json;

/// Requests per measured run (bounded so each configuration stays well under a minute).
const DEFAULT_REQUESTS: usize = 3_000;
/// Concurrent clients.
const DEFAULT_CLIENTS: usize = 16;
/// Members the load is spread over.
const MEMBERS: usize = 500;
/// Points each member starts with, so spends never run dry.
const START_POINTS: i64 = 10_000_000;
/// Points per spend.
const SPEND_POINTS: i64 = 10;

struct Env {
    store: Store,
    base: String,
    admin: String,
    counter: String,
    members: Arc<Vec<String>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn setup(url: String, dir: tempfile::TempDir) -> Env {
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
    sqlx::query(
        "INSERT INTO brands (id, name, earn_points, earn_unit_cents, created_at, updated_at)
         VALUES ('bench', 'Bench', 1, 100, $1, $1)",
    )
    .bind(now)
    .execute(store.write())
    .await
    .expect("brand");
    let members: Vec<String> = (0..MEMBERS).map(|_| new_id()).collect();
    let mut conn = store.write().acquire().await.expect("conn");
    ledger::insert_rows(
        &mut conn,
        "members (id, phone, name, status, tier, created_at, updated_at)",
        members
            .iter()
            .enumerate()
            .map(|(i, id)| {
                vec![
                    Val::Text(id.clone()),
                    Val::Text(format!("+8613{i:09}")),
                    Val::Text("Bench".to_owned()),
                    Val::Text("active".to_owned()),
                    Val::Text("bronze".to_owned()),
                    Val::Int(now),
                    Val::Int(now),
                ]
            })
            .collect(),
    )
    .await
    .expect("members");
    drop(conn);
    for m in &members {
        let mut tx = store.begin().await.expect("tx");
        ledger::adjust(
            &mut tx,
            store.backend(),
            &state.config.points,
            m,
            &AdjustmentRequest {
                points: START_POINTS,
                reason: "bench".to_owned(),
                brand_id: None,
            },
            now,
        )
        .await
        .expect("credit");
        tx.commit().await.expect("commit");
    }
    let admin =
        coalition::domain::access::create_key(store.write(), Role::Admin, None, None, "bench", now)
            .await
            .expect("admin key")
            .secret;
    let counter = coalition::domain::access::create_key(
        store.write(),
        Role::Counter,
        Some("bench"),
        None,
        "bench",
        now,
    )
    .await
    .expect("counter key")
    .secret;
    let (base, tx, server) = serve(state).await;
    Env {
        store,
        base,
        admin,
        counter,
        members: Arc::new(members),
        shutdown: tx,
        server,
        _dir: dir,
    }
}

fn purchase_body(order: &str, member: &str) -> serde_json::Value {
    json!({ "order_id": order, "member_id": member, "lines": [
        { "line_id": "1", "sku": "LATTE", "category": "drinks", "quantity": 2, "unit_price_cents": 450 },
        { "line_id": "2", "sku": "CAKE", "category": "food", "quantity": 1, "unit_price_cents": 1_250 },
        { "line_id": "3", "sku": "BEANS", "category": "retail", "quantity": 1, "unit_price_cents": 8_900 },
    ]})
}

/// The writes of a purchase with earn, as one raw transaction: idempotency claim, wallet,
/// entry, two postings, a lot, the purchase, its three lines, the qualifying event, the stored
/// response.
async fn raw_purchase(store: &Store, run: &str, i: usize, member: &str) -> Result<(), sqlx::Error> {
    let now = SystemClock.now_ms();
    let mut tx = store.begin().await?;
    let key = format!("{run}-{i}");
    raw_claim(&mut tx, &key, now).await?;
    sqlx::query(
        "UPDATE point_wallets SET balance = balance + $1, updated_at = $2 WHERE member_id = $3",
    )
    .bind(111_i64)
    .bind(now)
    .bind(member)
    .execute(&mut *tx)
    .await?;
    let entry = new_id();
    sqlx::query("INSERT INTO ledger_entries (id, kind, member_id, brand_id, purchase_id, reason, created_at) VALUES ($1, 'earn', $2, 'bench', $3, 'purchase', $4)")
        .bind(&entry).bind(member).bind(&key).bind(now).execute(&mut *tx).await?;
    let posting = new_id();
    sqlx::query("INSERT INTO ledger_postings (id, entry_id, account, member_id, brand_id, amount, memo, created_at) VALUES ($1, $2, 'issuance', NULL, 'bench', -111, 'base', $4), ($3, $2, 'wallet', $5, NULL, 111, 'base', $4)")
        .bind(new_id()).bind(&entry).bind(&posting).bind(now).bind(member).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO point_lots (id, member_id, posting_id, brand_id, source, amount, remaining, earned_at, expires_at, purchase_id) VALUES ($1, $2, $3, 'bench', 'earn', 111, 111, $4, $5, $6)")
        .bind(new_id()).bind(member).bind(&posting).bind(now).bind(now + 365 * 86_400_000).bind(&key).execute(&mut *tx).await?;
    let purchase = new_id();
    sqlx::query("INSERT INTO purchases (id, brand_id, order_id, member_id, total_cents, points_spent, points_value_cents, cash_cents, eligible_cents, base_points, bonus_points, earn_points, earn_unit_cents, earn_entry_id, created_at) VALUES ($1, 'bench', $2, $3, 11050, 0, 0, 11050, 11050, 110, 0, 1, 100, $4, $5)")
        .bind(&purchase).bind(&key).bind(member).bind(&entry).bind(now).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO purchase_lines (purchase_id, line_no, line_id, sku, category, quantity, unit_price_cents, total_cents, excluded, points_alloc, points_cents_alloc, eligible_cents, earned_points) VALUES ($1, 0, '1', 'LATTE', 'drinks', 2, 450, 900, 0, 0, 0, 900, 9), ($1, 1, '2', 'CAKE', 'food', 1, 1250, 1250, 0, 0, 0, 1250, 11), ($1, 2, '3', 'BEANS', 'retail', 1, 8900, 8900, 0, 0, 0, 8900, 90)")
        .bind(&purchase).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO qualifying_events (id, member_id, purchase_id, spend_cents, points, occurred_at, created_at) VALUES ($1, $2, $3, 11050, 110, $4, $4)")
        .bind(new_id()).bind(member).bind(&purchase).bind(now).execute(&mut *tx).await?;
    raw_complete(&mut tx, &key).await?;
    tx.commit().await
}

/// The writes of a spend, as one raw transaction: idempotency claim, guarded wallet debit,
/// the oldest lot drawn, entry, consumption, two postings, the stored response.
async fn raw_spend(store: &Store, run: &str, i: usize, member: &str) -> Result<(), sqlx::Error> {
    let now = SystemClock.now_ms();
    let mut tx = store.begin().await?;
    let key = format!("{run}-{i}");
    raw_claim(&mut tx, &key, now).await?;
    raw_debit(
        &mut tx,
        member,
        SPEND_POINTS,
        "adjustment",
        None,
        "adjustment",
        "bench",
        now,
    )
    .await?;
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
    let env = setup(url, dir).await;
    assert_eq!(
        env.store.backend(),
        if name == "SQLite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let mut rows = Vec::new();

    // Warm-up: connections, caches, prepared statements.
    {
        let (http, base, counter, members) = (
            http.clone(),
            env.base.clone(),
            env.counter.clone(),
            env.members.clone(),
        );
        drive(clients, clients * 10, move |i| {
            let (http, base, counter, members) =
                (http.clone(), base.clone(), counter.clone(), members.clone());
            async move {
                let m = &members[i % members.len()];
                http.post(format!("{base}/brands/bench/purchases"))
                    .bearer_auth(&counter)
                    .header("Idempotency-Key", format!("warm-{i}"))
                    .json(&purchase_body(&format!("warm-{i}"), m))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
    }

    let api = {
        let (http, base, counter, members) = (
            http.clone(),
            env.base.clone(),
            env.counter.clone(),
            env.members.clone(),
        );
        drive(clients, requests, move |i| {
            let (http, base, counter, members) =
                (http.clone(), base.clone(), counter.clone(), members.clone());
            async move {
                let m = &members[i % members.len()];
                http.post(format!("{base}/brands/bench/purchases"))
                    .bearer_auth(&counter)
                    .header("Idempotency-Key", format!("p-{i}"))
                    .json(&purchase_body(&format!("p-{i}"), m))
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
                raw_purchase(&store, "rp", i, &members[i % members.len()])
                    .await
                    .is_ok()
            }
        })
        .await
    };
    rows.push(Row {
        backend: name,
        operation: "purchase with earn",
        api,
        raw,
    });

    let api = {
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
                http.post(format!("{base}/members/{m}/points/adjustments"))
                    .bearer_auth(&admin)
                    .header("Idempotency-Key", format!("s-{i}"))
                    .json(&json!({ "points": -SPEND_POINTS, "reason": "bench" }))
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
                raw_spend(&store, "rs", i, &members[i % members.len()])
                    .await
                    .is_ok()
            }
        })
        .await
    };
    rows.push(Row {
        backend: name,
        operation: "spend (FIFO lots)",
        api,
        raw,
    });

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
    println!("{clients} concurrent clients, {requests} requests per run\n");
    print_api_vs_raw(&rows);
}
