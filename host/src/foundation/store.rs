//! The database: SQLite (embedded, the default) or PostgreSQL (many host nodes), chosen by URL.
//!
//! Both speak the same SQL through sqlx's `Any` driver, with `$1`-style parameters, `BIGINT` for
//! every integer (money in cents, points, Unix milliseconds) and `TEXT` ids, so one set of
//! migrations and one test suite serve both. Rules for SQL written against this store:
//! - wrap `SUM`/`COALESCE(SUM…)` in `CAST(… AS BIGINT)`: PostgreSQL returns NUMERIC otherwise;
//! - flags are `BIGINT` 0/1, timestamps `BIGINT` Unix ms, JSON is `TEXT`;
//! - balances are guarded in SQL (`UPDATE … SET balance = balance - $1 WHERE … AND balance >= $1`)
//!   and by `CHECK` constraints, never by reading then writing in Rust.
//!
//! SQLite allows one writer at a time; rather than letting concurrent writers fail with
//! `SQLITE_BUSY`, writes go through a single-connection pool and queue in order, while reads use
//! a pool of their own. On PostgreSQL both pools are the same.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::foundation::error::{DomainError, DomainResult};

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Connections per pool (the SQLite write pool always has exactly one).
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// How long SQLite waits on a lock held by another process before failing; the single write
/// pool makes waits inside one process rare, but the CLI may run beside the server.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
}

/// A write transaction.
pub type Tx = Transaction<'static, Any>;

impl Store {
    /// Connects to `url`, creating the SQLite file (and its directory) if needed, and runs the
    /// migrations.
    pub async fn open(url: &str, options: StoreOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL {url:?}: expected sqlite://… or postgres://…");
        };
        let store = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_with_create(url)?;
                let connect = AnyConnectOptions::from_str(&url)
                    .with_context(|| format!("while parsing database URL {url:?}"))?;
                let write = sqlite_pool(1, options)
                    .connect_with(connect.clone())
                    .await
                    .with_context(|| format!("while opening {url}"))?;
                let read = sqlite_pool(options.max_connections, options)
                    .connect_with(connect)
                    .await
                    .with_context(|| format!("while opening {url}"))?;
                Store {
                    write,
                    read,
                    backend,
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect(url)
                    .await
                    .context("while connecting to PostgreSQL")?;
                Store {
                    write: pool.clone(),
                    read: pool,
                    backend,
                }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (PostgreSQL serialises concurrent nodes with an advisory lock).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.write)
            .await
            .context("while running database migrations")?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite this waits for the single writer connection.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.write.begin().await
    }

    /// The pool for reads (and for single-statement writes that need no transaction).
    pub fn read(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for writes outside a transaction.
    pub fn write(&self) -> &AnyPool {
        &self.write
    }

    /// Which engine this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

fn sqlite_pool(max_connections: u32, options: StoreOptions) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(options.acquire_timeout)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers proceed while the writer commits; NORMAL sync is durable
                // across application crashes and only risks the last commit on power loss.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute(&*format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
                    .await?;
                Ok(())
            })
        })
}

/// Makes sure the SQLite file's directory exists and that the file is created on first start.
fn sqlite_url_with_create(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("while creating {}", parent.display()))?;
        }
    }
    Ok(match query {
        Some(q) if q.contains("mode=") => format!("sqlite://{path}?{q}"),
        Some(q) => format!("sqlite://{path}?{q}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    })
}

/// Whether an error is a unique-constraint violation (same SQLSTATE class on both engines).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db.code().as_deref() == Some("23505")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

/// A write whose unique-constraint violation means "that already exists": the violation becomes
/// the caller's conflict error; any other database error stays what it was.
pub trait UniqueAsConflict<T> {
    /// `Err(conflict())` on a unique violation.
    fn unique_as(self, conflict: impl FnOnce() -> DomainError) -> DomainResult<T>;
}

impl<T> UniqueAsConflict<T> for Result<T, sqlx::Error> {
    fn unique_as(self, conflict: impl FnOnce() -> DomainError) -> DomainResult<T> {
        match self {
            Ok(value) => Ok(value),
            Err(err) if is_unique_violation(&err) => Err(conflict()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Whether an error is a CHECK-constraint violation (e.g. a balance that would go negative).
pub fn is_check_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_check_violation()
                || db.code().as_deref() == Some("23514")
                || db.message().contains("CHECK constraint failed")
        }
        _ => false,
    }
}

/// A fresh random id for a row (time-ordered, so indexes stay compact).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// `FOR UPDATE` on PostgreSQL; SQLite has one writer, so the clause is neither needed nor valid.
pub fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}
