//! Closing a settlement period of a million lines, on SQLite and PostgreSQL: time and peak
//! memory of the close (the lines are generated first with batched SQL inserts, not timed),
//! against a baseline in the same run: the raw `GROUP BY` of the period's lines that any close
//! has to run.
//!
//! ```text
//! cargo bench -p coalition --bench settlement_close
//! BENCH_LINES=200000 BENCH_PARTIES=24 cargo bench -p coalition --bench settlement_close
//! ```
//! Peak memory is the process's VmHWM from `/proc/self/status`, reset through
//! `/proc/self/clear_refs` just before the close, so it is the close's own high-water mark
//! (the process's resident set at that moment included). PostgreSQL is taken from
//! `COALITION_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh
//! database is created and dropped. Prints a Markdown table.

mod common;

use common::{env_usize, on_both_backends, vm_status_kib};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use coalition::foundation::clock::ManualClock;
use coalition::interfaces::config::Config;
use coalition::workflows::settlement::periods::{self, CloseRequest, PeriodId};

/// Lines in the period.
const DEFAULT_LINES: usize = 1_000_000;
/// Brands (the platform is one more party).
const DEFAULT_PARTIES: usize = 36;
/// Rows per INSERT statement: large enough to amortise round trips, small enough for any
/// statement-size limit.
const ROWS_PER_INSERT: usize = 1_000;
/// Events per generating transaction.
const EVENTS_PER_TX: usize = 50_000;
/// 2026-03-01T00:00Z and 2026-04-01T00:00Z.
const MARCH_MS: i64 = 1_772_323_200_000;
const APRIL_MS: i64 = 1_775_001_600_000;

struct Row {
    backend: &'static str,
    lines: usize,
    generate: Duration,
    close: Duration,
    /// The raw `GROUP BY` of the same lines, the baseline.
    raw: Duration,
    rss_before_kib: u64,
    peak_kib: u64,
    statements: usize,
    pairs: usize,
}

async fn bench(backend: &'static str, url: String, lines: usize, parties: usize) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: url,
        ..Config::default()
    };
    config.jobs.enabled = false;
    config.log_filter = "warn".to_owned();
    let clock = ManualClock::new(APRIL_MS + 3_600_000);
    let state = coalition::app::server::build_state(config, clock)
        .await
        .expect("state");
    let brand = |i: usize| format!("brand{:02}", i % parties);

    // Generate: two lines per event (a transfer between brands and a commission to the
    // platform), spread over the month.
    let started = Instant::now();
    let events = lines / 2;
    sqlx::query(
        "INSERT INTO settlement_periods (id, start_ms, end_ms, status, created_at)
         VALUES ('2026-03', $1, $2, 'open', $1)",
    )
    .bind(MARCH_MS)
    .bind(APRIL_MS)
    .execute(state.store.write())
    .await
    .expect("period");
    let span = APRIL_MS - MARCH_MS - 1;
    let mut e = 0;
    while e < events {
        let mut tx = state.store.begin().await.expect("tx");
        let end = (e + EVENTS_PER_TX).min(events);
        while e < end {
            let chunk = (e..end.min(e + ROWS_PER_INSERT)).collect::<Vec<_>>();
            let (mut ev, mut runs, mut ls) = (String::new(), String::new(), String::new());
            for &i in &chunk {
                let at = MARCH_MS + (span * i as i64) / events as i64;
                let (payer, payee) = (brand(i), brand(i * 7 + 1));
                let payee = if payee == payer { brand(i + 1) } else { payee };
                let amount = 100 + (i % 5_000) as i64;
                let commission = amount / 20 + 1;
                let sep = if ev.is_empty() { "" } else { "," };
                let _ = write!(
                    ev,
                    "{sep}('e{i:09}', 'perk-redeemed', '{payee}', '{payer}', '{payee}', 'perk{}', \
                     NULL, 0, {amount}, 'redemption', 'r{i}', 'redemption:r{i}', {at}, \
                     'settled', 1, {at})",
                    i % 40
                );
                let _ = write!(
                    runs,
                    "{sep}('e{i:09}', '2026-03', 'platform:perk', '{{}}', 2, {}, {at})",
                    amount + commission
                );
                let _ = write!(
                    ls,
                    "{sep}('l{i:09}a', 'e{i:09}', '2026-03', 0, '{payer}', '{payee}', {amount}, \
                     'perk', 'platform:perk', 'perk', 'perk{}', {at}),\
                     ('l{i:09}b', 'e{i:09}', '2026-03', 1, '{payer}', 'platform', {commission}, \
                     'commission', 'platform:perk', 'commission', 'perk{}', {at})",
                    i % 40,
                    i % 40
                );
            }
            sqlx::query(&format!(
                "INSERT INTO settle_events (id, kind, brand_id, funding_brand, honouring_brand,
                    reference, plugin, points, value_cents, subject_kind, subject_id, dedupe_key,
                    occurred_at, status, attempts, created_at) VALUES {ev}"
            ))
            .execute(&mut *tx)
            .await
            .expect("events");
            sqlx::query(&format!(
                "INSERT INTO settlement_runs (event_id, period_id, rule, params, line_count,
                    total_cents, settled_at) VALUES {runs}"
            ))
            .execute(&mut *tx)
            .await
            .expect("runs");
            sqlx::query(&format!(
                "INSERT INTO settlement_lines (id, event_id, period_id, line_no, payer, payee,
                    amount_cents, reason, rule, category, reference, created_at) VALUES {ls}"
            ))
            .execute(&mut *tx)
            .await
            .expect("lines");
            e += chunk.len();
        }
        tx.commit().await.expect("commit");
    }
    let generate = started.elapsed();
    if backend == "PostgreSQL" {
        sqlx::query("ANALYZE")
            .execute(state.store.write())
            .await
            .expect("analyze");
    }

    // Baseline: the one query a close cannot avoid, the period's lines grouped per
    // (payer, payee, reference), run raw. Once untimed so both it and the close find the lines
    // in the database's cache, then timed.
    let raw_group = || async {
        let groups: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT payer, payee, COALESCE(reference, rule),
                    CAST(SUM(amount_cents) AS BIGINT), CAST(COUNT(*) AS BIGINT)
             FROM settlement_lines WHERE period_id = $1
             GROUP BY payer, payee, COALESCE(reference, rule)",
        )
        .bind("2026-03")
        .fetch_all(state.store.read())
        .await
        .expect("raw group");
        groups.len()
    };
    raw_group().await;
    let started = Instant::now();
    let raw_groups = raw_group().await;
    let raw = started.elapsed();
    assert!(raw_groups > 0);

    // Close, measuring time and the high-water mark from here.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_kib = vm_status_kib("VmRSS:");
    let started = Instant::now();
    let period = periods::close(
        &state,
        &CloseRequest {
            period: PeriodId::parse("2026-03").expect("period"),
            carry_held: false,
            actor: "bench",
            reason: "benchmark",
            settle_deadline: None,
        },
        &|_| {},
    )
    .await
    .expect("close");
    let close = started.elapsed();
    let peak_kib = vm_status_kib("VmHWM:");
    assert_eq!(period.status, "closed");
    assert_eq!(period.line_count, lines as i64 / 2 * 2);
    let statements = periods::stored(state.store.read(), "2026-03", None)
        .await
        .expect("statements");
    let nets: i64 = statements.values().map(|s| s.net_cents).sum();
    assert_eq!(nets, 0, "nets sum to zero");
    let pairs = periods::stored_netting(state.store.read(), "2026-03")
        .await
        .expect("netting")
        .len();
    state.store.close().await;
    Row {
        backend,
        lines: period.line_count as usize,
        generate,
        close,
        raw,
        rss_before_kib,
        peak_kib,
        statements: statements.len(),
        pairs,
    }
}

fn main() {
    let lines = env_usize("BENCH_LINES", DEFAULT_LINES);
    let parties = env_usize("BENCH_PARTIES", DEFAULT_PARTIES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rt.block_on(on_both_backends(|name, url, dir| async move {
        let row = bench(name, url, lines, parties).await;
        drop(dir);
        row
    }));
    println!("{parties} brands + the platform\n");
    println!("| backend | lines | generate (s, untimed setup) | close (s) | raw GROUP BY (s) | close / raw | RSS before close (MiB) | peak RSS during close (MiB) | statements | netting pairs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |",
            r.backend,
            r.lines,
            r.generate.as_secs_f64(),
            r.close.as_secs_f64(),
            r.raw.as_secs_f64(),
            r.close.as_secs_f64() / r.raw.as_secs_f64(),
            r.rss_before_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0,
            r.statements,
            r.pairs
        );
    }
}
