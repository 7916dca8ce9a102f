//! Spawns the app on port 0 against a throwaway database: a SQLite file in a temp dir, or a
//! fresh PostgreSQL database created for the test and dropped after it.
//!
//! `both_backends!(name, |app| async move { … })` defines `name::sqlite` and `name::postgres`.

#![allow(dead_code)]

use std::sync::Arc;

use coalition::domain::access::Role;
use coalition::foundation::clock::ManualClock;
use coalition::interfaces::api::AppState;
use coalition::interfaces::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where PostgreSQL listens on this machine and in CI; override with `COALITION_TEST_PG`.
pub fn pg_admin_url() -> String {
    std::env::var("COALITION_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// 2026-03-02T10:00:00Z, a Monday: tests start here and move the clock explicitly.
pub const T0_MS: i64 = 1_772_445_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// Where the separate metrics listener listens, if `metrics.listen` was configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    /// Secret of a platform admin key.
    pub admin_key: String,
    pub backend: Backend,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _tempdir: tempfile::TempDir,
    pg_db: Option<String>,
}

/// The request cut-off in tests: far above any honest request, even on a loaded machine.
const TEST_REQUEST_TIMEOUT_MS: u64 = 120_000;

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: tempdir.path().to_path_buf(),
            ..Config::default()
        };
        let mut pg_db = None;
        match backend {
            Backend::Sqlite => {
                config.database_url =
                    format!("sqlite://{}", tempdir.path().join("test.db").display());
            }
            Backend::Postgres => {
                let name = format!("coalition_test_{}", uuid::Uuid::new_v4().simple());
                create_pg_database(&name).await;
                config.database_url = pg_url(&name);
                pg_db = Some(name);
            }
        }
        // The server cuts a request off after `request_timeout_ms` (10 s by default) with a 503.
        // On a loaded 2-core CI machine a debug build's settlement reconciliation once took
        // longer than that and failed a test at random; tests are about behaviour, not speed,
        // so they get a generous cut-off (tests of the cut-off itself set their own).
        config.limits.request_timeout_ms = TEST_REQUEST_TIMEOUT_MS;
        // Uploads wait for their validation (within the cut-off), so a test sees its outcome
        // whatever the machine's load; tests of the `202` path ask for `Prefer: wait=0`.
        config.plugins.upload_wait_ms = TEST_REQUEST_TIMEOUT_MS - 1_000;
        tweak(&mut config);
        let clock = ManualClock::new(T0_MS);
        let state = coalition::app::server::build_state(config, clock.clone())
            .await
            .expect("build state");
        let admin = coalition::domain::access::create_key(
            state.store.write(),
            Role::Admin,
            None,
            None,
            "test admin",
            T0_MS,
        )
        .await
        .expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics_listener = match state.config.metrics.listen {
            Some(metrics_addr) => Some(
                tokio::net::TcpListener::bind(metrics_addr)
                    .await
                    .expect("bind metrics"),
            ),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("metrics addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            coalition::app::server::run_with_metrics_listener(
                listener,
                metrics_listener,
                server_state,
                async {
                    let _ = rx.await;
                },
            )
            .await
            .expect("server");
        });
        TestApp {
            addr,
            metrics_addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            clock,
            state,
            admin_key: admin.secret,
            backend,
            shutdown: Some(tx),
            server: Some(server),
            _tempdir: tempdir,
            pg_db,
        }
    }

    /// A second node on this app's database (its own plugin host and artifact cache), as
    /// several `coalition serve` processes share one PostgreSQL. The database stays owned by
    /// `self`.
    pub async fn spawn_sharing(&self) -> TestApp {
        let url = self.state.config.database_url();
        let backend = self.backend;
        let mut app = Self::spawn_with(Backend::Sqlite, |config| config.database_url = url).await;
        app.backend = backend;
        app
    }

    /// Sends a request; `key` is the bearer secret, `idem` the idempotency key.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        idem: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(idem) = idem {
            req = req.header("Idempotency-Key", idem);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        key: &str,
        idem: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(idem), Some(body))
            .await
    }

    /// Stops the server and drops the PostgreSQL database.
    pub async fn stop(mut self) {
        self.shutdown_inner().await;
    }

    async fn shutdown_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.state.store.close().await;
        if let Some(name) = self.pg_db.take() {
            drop_pg_database(&name).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that panicked never reached `stop`: still drop its database, from a thread
        // with its own runtime because Drop cannot await.
        if let Some(name) = self.pg_db.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_pg_database(&name));
                }
            })
            .join();
        }
    }
}

pub fn pg_url(db: &str) -> String {
    let admin = pg_admin_url();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin}/{db}"),
    }
}

pub async fn create_pg_database(name: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&pg_admin_url())
        .await
        .expect("PostgreSQL must be reachable at 127.0.0.1:5432 (set COALITION_TEST_PG)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
}

pub async fn drop_pg_database(name: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    if let Ok(mut conn) = sqlx::AnyConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// Defines a test for each backend: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::helpers::TestApp) {
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await;
                run(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await;
                run(app).await;
            }
        }
    };
}
