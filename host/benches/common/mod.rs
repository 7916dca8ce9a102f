//! Pieces shared by the HTTP and database benchmarks: the concurrent load driver with its
//! latency percentiles, and the PostgreSQL server to create benchmark databases on.

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
