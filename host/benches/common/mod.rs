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
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.expect("client task");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: usize| {
        all.get((all.len() * p / 100).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Stats {
        requests: total,
        errors,
        elapsed,
        p50_us: pct(50),
        p99_us: pct(99),
    }
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
