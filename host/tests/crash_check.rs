//! The kill -9 consistency check, short enough for CI (`cargo xtask test` runs it as a test
//! target; `cargo test -p coalition --test crash_check` runs it alone).
//!
//! For each backend (SQLite file, and PostgreSQL at 127.0.0.1:5432 in a database of its own):
//! 1. starts the real server binary with the demo coalition and registers one member per client;
//! 2. clients write concurrently — purchases, point spends, refunds — each request under a
//!    unique `Idempotency-Key`, every request logged before it is sent;
//! 3. at a random moment the server gets SIGKILL; it is restarted on the same database;
//! 4. every request that got no answer is retried with its key until answered, and a sample of
//!    answered writes is replayed with theirs (the stored answer must come back unchanged);
//! 5. after [`KILLS`] kills and a last clean round, the database is checked: no order recorded
//!    twice, every acknowledged purchase present, no purchase the clients did not send, and the
//!    ledger's invariants (postings balance; every wallet = its postings = its remaining lots;
//!    held = pending holds; debt = receivable; no spendable points beside debt).
//!
//! It prints one summary line per backend and exits non-zero on any violation. The kill moment
//! comes from a seed printed in the summary (`CRASH_CHECK_SEED` replays it);
//! `CRASH_CHECK_BACKENDS=sqlite` skips PostgreSQL. Nothing here asserts on time: the waits are
//! hang guards only.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use coalition::foundation::store::{Store, StoreOptions};
use serde_json::{json, Value};

/// Concurrent writing clients (one member each).
const CLIENTS: usize = 6;
/// Kills per backend; a last round then runs to completion without one.
const KILLS: usize = 2;
/// The kill lands this long after the round's load starts, at a seeded random point (ms).
const KILL_WINDOW_MS: (u64, u64) = (300, 1_500);
/// Requests per client in the last, uninterrupted round.
const LAST_ROUND_REQUESTS: usize = 20;
/// Answered writes replayed per round to check that the stored answer comes back.
const REPLAYS_PER_ROUND: usize = 25;
/// Hang guard, in polls 100 ms apart, for the server to become ready (a debug build migrating a
/// fresh database). Counted in attempts, never compared with a clock.
const READY_POLLS: u32 = 1_200;
/// Hang guard, in attempts 100 ms apart, for one retried request to get an answer.
const RETRY_POLLS: u32 = 3_000;
/// Points each member starts with, so spends and points-paid purchases happen.
const START_POINTS: i64 = 3_000;

fn main() {
    // Behave like a test harness under `cargo test -- <filter>`: run only when a filter names us.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "crash_check".contains(f.as_str())) {
        return;
    }
    let seed = std::env::var("CRASH_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let backends =
        std::env::var("CRASH_CHECK_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut failed = false;
    for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match rt.block_on(check(backend, seed)) {
            Ok(summary) => println!("crash-check {backend}: {summary}"),
            Err(err) => {
                println!("crash-check {backend}: FAILED (seed {seed}): {err:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// A seeded xorshift: the kill moment and the operation mix must be replayable from the seed,
/// and a two-line generator avoids a dependency for that.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a client sent, and the answer if one came back.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    key_owner: KeyOwner,
    path: String,
    body: Value,
    /// The order id of a purchase.
    order: Option<String>,
    answer: Option<(u16, Value)>,
}

#[derive(Debug, Clone, Copy)]
enum KeyOwner {
    Admin,
    Counter,
}

/// The server under test, its database and keys.
struct Server {
    child: Option<Child>,
    port: u16,
    data_dir: tempfile::TempDir,
    database_url: String,
    admin: String,
    counter: String,
    brand: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(database_url: String) -> Result<Server> {
        let data_dir = tempfile::tempdir()?;
        let mut server = Server {
            child: None,
            port: free_port()?,
            data_dir,
            database_url,
            admin: String::new(),
            counter: String::new(),
            brand: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        server.spawn()?;
        server.wait_ready().await?;
        let keys: Value = serde_json::from_slice(
            &std::fs::read(server.data_dir.path().join("demo-keys.json"))
                .context("demo-keys.json")?,
        )?;
        server.admin = keys["admin"].as_str().context("admin key")?.to_owned();
        let (brand, brand_keys) = keys["brands"]
            .as_object()
            .and_then(|b| b.iter().find(|(id, _)| id.as_str() != "mall"))
            .context("a demo brand")?;
        server.brand = brand.clone();
        server.counter = brand_keys["counter"]
            .as_str()
            .context("counter key")?
            .to_owned();
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("server.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_coalition"))
            .args(["serve", "--demo", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .env("COALITION_DATA_DIR", self.data_dir.path())
            .env("COALITION_DATABASE_URL", &self.database_url)
            .env_remove("COALITION_PLUGINS_DIR")
            .env("COALITION_LOG_FILTER", "warn")
            // Far above any honest request on a loaded CI machine (the default is 10 s); a 503
            // is still handled below as "no answer yet, retry with the same key".
            .env("COALITION_LIMITS__REQUEST_TIMEOUT_MS", "120000")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the server")?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let mut polls = 0;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("the server exited with {status}; see {}", self.log_path());
                }
            }
            let ready = self
                .http
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            polls += 1;
            ensure!(polls < READY_POLLS, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, no warning: `Child::kill` sends SIGKILL on Unix.
    fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> String {
        self.data_dir
            .path()
            .join("server.log")
            .display()
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the whole check on one backend; returns the summary.
async fn check(backend: &str, seed: u64) -> Result<String> {
    let (url, pg_db) = match backend {
        "sqlite" => (None, None),
        "postgres" => {
            let db = format!("crash_check_{}_{}", std::process::id(), seed % 1_000_000);
            admin_sql(&format!("CREATE DATABASE {db}")).await?;
            (
                Some(format!("postgres://postgres@127.0.0.1:5432/{db}")),
                Some(db),
            )
        }
        other => bail!("unknown backend {other:?}: expected sqlite or postgres"),
    };
    let result = run(url, seed).await;
    if let Some(db) = pg_db {
        admin_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
    }
    result
}

/// A statement on PostgreSQL's maintenance database.
async fn admin_sql(sql: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn =
        sqlx::postgres::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .context("PostgreSQL at 127.0.0.1:5432")?;
    sqlx::query(sql).execute(&mut conn).await?;
    Ok(())
}

async fn run(pg_url: Option<String>, seed: u64) -> Result<String> {
    let sqlite_dir = tempfile::tempdir()?;
    let url = pg_url.unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            sqlite_dir.path().join("crash-check.db").display()
        )
    });
    let mut server = Server::start(url.clone()).await?;
    let mut rng = Rng(seed);

    // One member per client, with points to spend.
    let mut members = Vec::new();
    for i in 0..CLIENTS {
        let phone = format!("+86139{:08}", seed % 10_000 * 1_000 + i as u64);
        let mut sent = Sent {
            key: format!("crash-member-{i}"),
            key_owner: KeyOwner::Admin,
            path: "/members".to_owned(),
            body: json!({ "phone": phone, "name": format!("Crash {i}") }),
            order: None,
            answer: None,
        };
        let (status, body) = answer(&server, &mut sent).await?;
        ensure!(status == 201, "register member: {status} {body}");
        let id = body["id"].as_str().context("member id")?.to_owned();
        let mut credit = Sent {
            key: format!("crash-credit-{i}"),
            key_owner: KeyOwner::Admin,
            path: format!("/members/{id}/points/adjustments"),
            body: json!({ "points": START_POINTS, "reason": "crash check" }),
            order: None,
            answer: None,
        };
        let (status, body) = answer(&server, &mut credit).await?;
        ensure!(status == 201, "credit: {status} {body}");
        members.push(id);
    }

    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let (mut unanswered, mut replayed) = (0, 0);
    for round in 0..=KILLS {
        let last = round == KILLS;
        let before = log.lock().expect("log").len();
        let server_ref = Arc::new(ServerHandle::of(&server));
        let clients: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let client_rng = Rng(seed ^ ((round as u64 + 1) << 32) ^ ((i as u64 + 1) * 0x9e37));
                tokio::spawn(client(
                    server_ref.clone(),
                    log.clone(),
                    member.clone(),
                    format!("r{round}c{i}"),
                    client_rng,
                    last.then_some(LAST_ROUND_REQUESTS),
                ))
            })
            .collect();
        if !last {
            let wait = KILL_WINDOW_MS.0 + rng.below(KILL_WINDOW_MS.1 - KILL_WINDOW_MS.0);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            server.kill9()?;
        }
        for c in clients {
            c.await?;
        }
        if !last {
            server.spawn()?;
            server.wait_ready().await?;
        }
        // Retry the unanswered with their keys; replay a sample of the answered writes.
        let round_log: Vec<Sent> = log.lock().expect("log")[before..].to_vec();
        let mut answered = Vec::new();
        for (offset, mut sent) in round_log.into_iter().enumerate() {
            match sent.answer.clone() {
                None => {
                    unanswered += 1;
                    answer(&server, &mut sent).await?;
                    log.lock().expect("log")[before + offset] = sent;
                }
                Some((status, _)) if (200..300).contains(&status) => answered.push(sent),
                Some((status, body)) => {
                    ensure!(status < 500, "a {status} during the load: {body}");
                }
            }
        }
        for _ in 0..REPLAYS_PER_ROUND.min(answered.len()) {
            let sent = &answered[rng.below(answered.len() as u64) as usize];
            let mut again = sent.clone();
            again.answer = None;
            let (status, body) = answer(&server, &mut again).await?;
            let (first_status, first_body) = sent.answer.clone().context("answered")?;
            ensure!(
                status == first_status && body == first_body,
                "replay of {} {} changed its answer: {first_status} {first_body} → {status} {body}",
                sent.path,
                sent.key
            );
            replayed += 1;
        }
    }
    server.kill9()?;

    let sent = log.lock().expect("log").clone();
    let store = Store::open(
        &url,
        StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(30),
        },
    )
    .await?;
    let (purchases, wallets) = verify(&store, &sent, &server.brand).await?;
    Ok(format!(
        "seed {seed}, {KILLS} kills, {} requests ({unanswered} unanswered at a kill, retried with \
         their keys; {replayed} answered writes replayed unchanged), {purchases} purchases with \
         0 duplicates, {wallets} wallets = their postings = their lots",
        sent.len()
    ))
}

/// What a client task needs of the server (it cannot borrow it across the kill).
struct ServerHandle {
    base: String,
    admin: String,
    counter: String,
    brand: String,
    http: reqwest::Client,
}

impl ServerHandle {
    fn of(server: &Server) -> ServerHandle {
        ServerHandle {
            base: server.base(),
            admin: server.admin.clone(),
            counter: server.counter.clone(),
            brand: server.brand.clone(),
            http: server.http.clone(),
        }
    }

    async fn post(&self, sent: &Sent) -> Option<(u16, Value)> {
        let key = match sent.key_owner {
            KeyOwner::Admin => &self.admin,
            KeyOwner::Counter => &self.counter,
        };
        let response = self
            .http
            .post(format!("{}{}", self.base, sent.path))
            .bearer_auth(key)
            .header("idempotency-key", &sent.key)
            .json(&sent.body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.ok()?;
        Some((status, body))
    }
}

/// Sends until an answer comes (the server may still be starting); a 5xx is a failure.
async fn answer(server: &Server, sent: &mut Sent) -> Result<(u16, Value)> {
    let mut attempts = 0;
    loop {
        match ServerHandle::of(server).post(sent).await {
            // 503 (busy or cut off): nothing was committed; retry with the same key.
            Some((503, _)) | None => {}
            Some((status, body)) => {
                ensure!(status < 500, "{} answered {status}: {body}", sent.path);
                sent.answer = Some((status, body.clone()));
                return Ok((status, body));
            }
        }
        attempts += 1;
        ensure!(
            attempts < RETRY_POLLS,
            "{} never answered after the restart",
            sent.path
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client: purchases (some paid partly with points), spends and refunds of its own
/// purchases, until the server stops answering or `limit` requests are sent.
async fn client(
    server: Arc<ServerHandle>,
    log: Arc<Mutex<Vec<Sent>>>,
    member: String,
    tag: String,
    mut rng: Rng,
    limit: Option<usize>,
) {
    let mut orders: Vec<String> = Vec::new();
    for n in 0.. {
        if limit.is_some_and(|l| n >= l) {
            return;
        }
        let key = format!("{tag}-{n}");
        let pick = rng.below(10);
        let sent = if pick < 6 || orders.is_empty() {
            let order = format!("{tag}-order-{n}");
            let price = 500 + rng.below(5_000) as i64;
            let quantity = 1 + rng.below(3) as i64;
            let points = if pick.is_multiple_of(2) {
                price * quantity / 20
            } else {
                0
            };
            Sent {
                key,
                key_owner: KeyOwner::Counter,
                path: format!("/brands/{}/purchases", server.brand),
                body: json!({
                    "order_id": order, "member_id": member, "points_spent": points,
                    "lines": [{ "line_id": "l1", "sku": "CRASH", "quantity": quantity,
                                "unit_price_cents": price }],
                }),
                order: Some(order),
                answer: None,
            }
        } else if pick < 8 {
            Sent {
                key,
                key_owner: KeyOwner::Admin,
                path: format!("/members/{member}/points/adjustments"),
                body: json!({ "points": -(1 + rng.below(300) as i64), "reason": "crash spend" }),
                order: None,
                answer: None,
            }
        } else {
            let order = orders.remove(rng.below(orders.len() as u64) as usize);
            Sent {
                key: key.clone(),
                key_owner: KeyOwner::Counter,
                path: format!("/brands/{}/purchases/{order}/refunds", server.brand),
                body: json!({ "refund_id": format!("{key}-refund") }),
                order: None,
                answer: None,
            }
        };
        let index = {
            let mut log = log.lock().expect("log");
            log.push(sent.clone());
            log.len() - 1
        };
        match server.post(&sent).await {
            // Busy or cut off: left unanswered, retried with its key after the round.
            Some((503, _)) => {}
            Some(answer) => {
                if answer.0 == 201 {
                    if let Some(order) = &sent.order {
                        orders.push(order.clone());
                    }
                }
                log.lock().expect("log")[index].answer = Some(answer);
            }
            // The server is gone: stop; the request is retried after the restart.
            None => return,
        }
    }
}

/// Checks the database against what was sent; returns (purchases, wallets) counted.
async fn verify(store: &Store, sent: &[Sent], brand: &str) -> Result<(usize, usize)> {
    let pool = store.read();
    // Every purchase the clients sent, with its final answer.
    let mut expected: BTreeMap<&str, u16> = BTreeMap::new();
    for s in sent {
        if let (Some(order), Some((status, _))) = (&s.order, &s.answer) {
            expected.insert(order, *status);
        }
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_id, COUNT(*) FROM purchases WHERE brand_id = $1 AND order_id LIKE 'r%-order-%'
         GROUP BY order_id",
    )
    .bind(brand)
    .fetch_all(pool)
    .await?;
    let mut stored = BTreeSet::new();
    for (order, count) in &rows {
        ensure!(*count == 1, "order {order} recorded {count} times");
        ensure!(
            expected.contains_key(order.as_str()),
            "order {order} was recorded but never sent"
        );
        stored.insert(order.as_str());
    }
    for (order, status) in &expected {
        if *status == 201 {
            ensure!(
                stored.contains(order),
                "acknowledged order {order} is missing"
            );
        } else {
            ensure!(
                !stored.contains(order),
                "order {order} answered {status} but was recorded"
            );
        }
    }
    verify_ledger(store).await?;
    let (wallets,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM point_wallets")
        .fetch_one(pool)
        .await?;
    Ok((rows.len(), usize::try_from(wallets).unwrap_or(0)))
}

/// The ledger's invariants over the whole database.
async fn verify_ledger(store: &Store) -> Result<()> {
    let pool = store.read();
    let (total,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings")
            .fetch_one(pool)
            .await?;
    ensure!(total == 0, "postings sum to {total}, not zero");
    let unbalanced: Vec<(String,)> = sqlx::query_as(
        "SELECT entry_id FROM ledger_postings GROUP BY entry_id
         HAVING SUM(amount) <> 0 OR COUNT(*) < 2",
    )
    .fetch_all(pool)
    .await?;
    ensure!(unbalanced.is_empty(), "unbalanced entries: {unbalanced:?}");
    let wallets: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT member_id, balance, held, debt FROM point_wallets")
            .fetch_all(pool)
            .await?;
    for (m, balance, held, debt) in wallets {
        ensure!(
            balance >= 0 && held >= 0 && debt >= 0,
            "negative wallet {m}"
        );
        ensure!(
            balance == 0 || debt == 0,
            "wallet {m}: {balance} spendable beside {debt} of debt"
        );
        let sum = |sql: &'static str| {
            let m = m.clone();
            async move {
                let (v,): (i64,) = sqlx::query_as(sql).bind(m).fetch_one(pool).await?;
                anyhow::Ok(v)
            }
        };
        let wallet = sum("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings WHERE member_id = $1 AND account = 'wallet'").await?;
        let held_postings = sum("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings WHERE member_id = $1 AND account = 'held'").await?;
        let receivable = sum("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings WHERE member_id = $1 AND account = 'receivable'").await?;
        let lots = sum("SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots WHERE member_id = $1").await?;
        let pending = sum("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM point_holds WHERE member_id = $1 AND status = 'pending'").await?;
        ensure!(
            wallet == balance,
            "wallet {m}: balance {balance}, postings {wallet}"
        );
        ensure!(
            lots == balance,
            "wallet {m}: balance {balance}, lots {lots}"
        );
        ensure!(
            held_postings == held && pending == held,
            "wallet {m}: held {held}, postings {held_postings}, holds {pending}"
        );
        ensure!(
            -receivable == debt,
            "wallet {m}: debt {debt}, receivable {receivable}"
        );
    }
    let (bad_lots,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM point_lots WHERE remaining < 0 OR remaining > amount")
            .fetch_one(pool)
            .await?;
    ensure!(bad_lots == 0, "{bad_lots} lots out of range");
    Ok(())
}
