//! Pieces shared by the HTTP and database benchmarks: the concurrent load driver with its
//! latency percentiles, the two backends to run on (a fresh SQLite file and a fresh PostgreSQL
//! database), knobs from the environment, and the API-vs-raw table.

#![allow(dead_code)] // each bench uses the parts it needs

use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Stats {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `total` operations from `clients` concurrent tasks; `op(i)` returns whether it succeeded.
pub async fn drive<F, Fut>(clients: usize, total: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    drive_latencies(clients, total, op).await.stats()
}

/// What one driven run measured: every latency, the errors and the run's duration. Runs of the
/// same operation can be merged (for interleaved comparisons) before the percentiles are taken.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub latencies_us: Vec<u64>,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Latencies {
    /// Adds another run of the same operation.
    pub fn merge(&mut self, other: Latencies) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    /// Throughput over the summed run time, and the median and p99 of all latencies.
    pub fn stats(mut self) -> Stats {
        self.latencies_us.sort_unstable();
        let all = &self.latencies_us;
        let pct = |p: usize| {
            all.get((all.len() * p / 100).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Stats {
            requests: all.len(),
            errors: self.errors,
            elapsed: self.elapsed,
            p50_us: pct(50),
            p99_us: pct(99),
        }
    }
}

/// [`drive`], keeping every latency.
pub async fn drive_latencies<F, Fut>(clients: usize, total: usize, op: F) -> Latencies
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut i = c;
            while i < total {
                let t = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                i += clients;
            }
            (latencies, errors)
        }));
    }
    let mut run = Latencies {
        latencies_us: Vec::with_capacity(total),
        ..Latencies::default()
    };
    for task in tasks {
        let (latencies, e) = task.await.expect("client task");
        run.latencies_us.extend(latencies);
        run.errors += e;
    }
    run.elapsed = started.elapsed();
    run
}

/// Where the built example components are (`cargo xtask build-plugins`).
pub fn plugins_dir() -> std::path::PathBuf {
    std::env::var_os("COALITION_PLUGINS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
        })
}

/// Installs the four example plugins (cinema-dinner, parking-perk open to every tier,
/// coffee-bonus, coupon-logic) from [`plugins_dir`].
pub async fn install_examples(state: &coalition::interfaces::api::AppState, now: i64) {
    let dir = plugins_dir();
    for (name, config) in [
        ("cinema-dinner", serde_json::json!({})),
        ("parking-perk", serde_json::json!({ "min_tier_rank": 0 })),
        ("coffee-bonus", serde_json::json!({})),
        ("coupon-logic", serde_json::json!({})),
    ] {
        let component = std::fs::read(dir.join(format!("{name}.wasm")))
            .expect("component: run cargo xtask build-plugins");
        let manifest = std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("manifest");
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
}

/// Serves `state` on a loopback port: the base URL, the shutdown trigger and the server task.
pub async fn serve(
    state: coalition::interfaces::api::AppState,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = coalition::app::server::run(listener, state, async {
            let _ = rx.await;
        })
        .await;
    });
    (base, tx, server)
}

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:` …), 0 where it cannot be read.
pub fn vm_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The PostgreSQL server benchmark databases are created on (`COALITION_TEST_PG`).
pub fn pg_admin_url() -> String {
    std::env::var("COALITION_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A numeric knob from the environment, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `bench` on a fresh SQLite file, then on a fresh PostgreSQL database (created on
/// [`pg_admin_url`] and dropped afterwards; skipped with a note if the server is unreachable).
/// `bench` gets the backend's name, the database URL and a scratch directory.
pub async fn on_both_backends<T, F, Fut>(mut bench: F) -> Vec<T>
where
    F: FnMut(&'static str, String, tempfile::TempDir) -> Fut,
    Fut: Future<Output = T>,
{
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    out.push(bench("SQLite", url, dir).await);

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
            out.push(bench("PostgreSQL", url, dir).await);
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
        Err(err) => eprintln!("PostgreSQL unreachable at {admin} ({err}); skipped"),
    }
    out
}

/// One operation measured through the API and as its raw-SQL baseline, in the same run.
pub struct Row {
    pub backend: &'static str,
    pub operation: &'static str,
    pub api: Stats,
    pub raw: Stats,
}

/// Prints the rows as a Markdown table with the API / raw throughput ratio.
pub fn print_api_vs_raw(rows: &[Row]) {
    println!("| backend | operation | path | throughput (req/s) | p50 (ms) | p99 (ms) | errors | API / raw |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        for (path, s) in [("HTTP API", r.api), ("raw SQL", r.raw)] {
            let ratio = if path == "HTTP API" {
                format!("{:.2}", r.api.throughput() / r.raw.throughput())
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                r.backend,
                r.operation,
                path,
                s.throughput(),
                s.p50_us as f64 / 1000.0,
                s.p99_us as f64 / 1000.0,
                s.errors,
                ratio
            );
        }
    }
}

// Raw-SQL baselines: the statements the API's writes boil down to, shared by the benches.

/// Claims idempotency key `key` (scope `raw`), as the API does first in every write.
pub async fn raw_claim(
    tx: &mut coalition::foundation::store::Tx,
    key: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ('raw', $1, 'h', $2)")
        .bind(key).bind(now).execute(&mut **tx).await?;
    Ok(())
}

/// Stores the response under `key`, as the API does last in every write.
pub async fn raw_complete(
    tx: &mut coalition::foundation::store::Tx,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET status_code = 201, response_body = '{}' WHERE scope = 'raw' AND idem_key = $1")
        .bind(key).execute(&mut **tx).await?;
    Ok(())
}

/// A points debit: guarded wallet debit, the oldest lot that covers it drawn, an entry of
/// `kind` (for `brand`, if any), the consumption, and two postings (wallet → `account`).
/// Returns the entry id.
#[allow(clippy::too_many_arguments)]
pub async fn raw_debit(
    tx: &mut coalition::foundation::store::Tx,
    member: &str,
    points: i64,
    kind: &str,
    brand: Option<&str>,
    account: &str,
    memo: &str,
    now: i64,
) -> Result<String, sqlx::Error> {
    let debited = sqlx::query("UPDATE point_wallets SET balance = balance - $1, updated_at = $2 WHERE member_id = $3 AND balance >= $1")
        .bind(points).bind(now).bind(member).execute(&mut **tx).await?.rows_affected();
    if debited != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    let (lot,): (String,) = sqlx::query_as("SELECT id FROM point_lots WHERE member_id = $1 AND remaining >= $2 ORDER BY expires_at, id LIMIT 1")
        .bind(member).bind(points).fetch_one(&mut **tx).await?;
    sqlx::query(
        "UPDATE point_lots SET remaining = remaining - $1 WHERE id = $2 AND remaining >= $1",
    )
    .bind(points)
    .bind(&lot)
    .execute(&mut **tx)
    .await?;
    let entry = coalition::foundation::store::new_id();
    sqlx::query("INSERT INTO ledger_entries (id, kind, member_id, brand_id, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&entry).bind(kind).bind(member).bind(brand).bind(memo).bind(now).execute(&mut **tx).await?;
    sqlx::query("INSERT INTO lot_consumptions (id, lot_id, entry_id, amount, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(coalition::foundation::store::new_id()).bind(&lot).bind(&entry).bind(points).bind(now).execute(&mut **tx).await?;
    sqlx::query("INSERT INTO ledger_postings (id, entry_id, account, member_id, brand_id, amount, memo, created_at) VALUES ($1, $2, 'wallet', $3, NULL, $4, $5, $6), ($7, $2, $8, NULL, $9, $10, $5, $6)")
        .bind(coalition::foundation::store::new_id()).bind(&entry).bind(member).bind(-points).bind(memo).bind(now)
        .bind(coalition::foundation::store::new_id()).bind(account).bind(brand).bind(points)
        .execute(&mut **tx).await?;
    Ok(entry)
}
