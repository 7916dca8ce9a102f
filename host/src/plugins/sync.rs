//! Every node serves the same plugin versions.
//!
//! Each change to what serves (deploy, canary, promote, rollback, kill, resume, shadow) bumps
//! `plugin_generation` in its transaction and, on PostgreSQL, sends `NOTIFY coalition_plugins`
//! in the same transaction (delivered on commit). Every node runs [`spawn`]: a `LISTEN` on that
//! channel reloads within milliseconds of the commit, and a poll of the generation every
//! [`POLL_INTERVAL`] heals a lost notification or a dropped listener connection. The node that
//! made the change reloads before answering, so its own response already reflects it. A node
//! that starts later loads the current set from the database in `build_state`.

use std::time::Duration;

use sqlx::AnyConnection;

use std::sync::Arc;

use super::PluginHost;
use crate::foundation::error::DomainResult;
use crate::foundation::store::{Backend, Store};

/// The PostgreSQL channel of plugin changes.
pub const CHANNEL: &str = "coalition_plugins";
/// How often a node checks the generation counter in case it missed a notification: slow
/// enough to cost nothing (one indexed single-row read), fast enough that a missed
/// notification heals in seconds.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);
/// Wait before reconnecting a dropped listener.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Records a change to what serves, in the caller's transaction.
pub async fn changed(conn: &mut AnyConnection, backend: Backend, what: &str) -> DomainResult<()> {
    sqlx::query("UPDATE plugin_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Reloads this node now (after a change it committed itself).
pub async fn reload_now(store: &Store, host: &PluginHost) {
    if let Err(err) = super::registry::reload(store, host).await {
        tracing::error!(error = %err, "plugin reload failed");
    }
}

/// Compiles, in the background, every approved version this node has not compiled yet, so a
/// later deploy or canary only swaps pointers (a debug build compiles a small component in
/// ~0.5 s; a deploy must reach every node within a second). Approvals bump the generation, so
/// every node warms as soon as a version is approved.
pub async fn warm(store: &Store, host: &PluginHost) {
    let rows: Result<Vec<(String, String, String, String)>, _> = sqlx::query_as(
        "SELECT v.manifest, v.config, v.component_sha256, c.bytes_b64
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.status = 'approved'",
    )
    .fetch_all(store.read())
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(%err, "cannot list approved versions to precompile");
            return;
        }
    };
    for (manifest, config, sha, b64) in rows {
        if host.is_warm(&sha) {
            continue;
        }
        let runtime = host.runtime().clone();
        let key = sha.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            super::registry::load_one(&runtime, &manifest, &config, &sha, &b64)
        })
        .await;
        match loaded {
            Ok(Ok(_)) => host.mark_warm(&key),
            Ok(Err(err)) => tracing::warn!(component = %key, %err, "precompile failed"),
            Err(err) => tracing::warn!(%err, "precompile task failed"),
        }
    }
}

/// Watches for changes made by other nodes until `stop` turns true.
pub fn spawn(
    store: Store,
    host: Arc<PluginHost>,
    database_url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(16);
        let listener = if store.backend() == Backend::Postgres {
            let url = database_url;
            let stop = stop.clone();
            Some(tokio::spawn(listen(url, wake_tx, stop)))
        } else {
            drop(wake_tx);
            None
        };
        let (warm_store, warm_host) = (store.clone(), host.clone());
        tokio::spawn(async move { warm(&warm_store, &warm_host).await });
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(()) = wake_rx.recv() => {
                    // Coalesce a burst of notifications into one reload.
                    while wake_rx.try_recv().is_ok() {}
                    reload_now(&store, &host).await;
                    let (warm_store, warm_host) = (store.clone(), host.clone());
                    tokio::spawn(async move { warm(&warm_store, &warm_host).await });
                }
                _ = poll.tick() => {
                    let current: Result<(i64,), _> =
                        sqlx::query_as("SELECT generation FROM plugin_generation WHERE id = 1")
                            .fetch_one(store.read())
                            .await;
                    match current {
                        Ok((generation,)) if generation != host.generation() => {
                            tracing::info!(generation, "plugin generation changed; reloading");
                            reload_now(&store, &host).await;
                            let (warm_store, warm_host) = (store.clone(), host.clone());
                            tokio::spawn(async move { warm(&warm_store, &warm_host).await });
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(%err, "cannot read the plugin generation"),
                    }
                }
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
    })
}

async fn listen(
    url: String,
    wake: tokio::sync::mpsc::Sender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(err) = listener.listen(CHANNEL).await {
                    tracing::warn!(%err, "cannot LISTEN for plugin changes");
                } else {
                    // Changes made while the listener was down are caught by this reload.
                    let _ = wake.send(()).await;
                    loop {
                        match listener.recv().await {
                            Ok(_) => {
                                if wake.send(()).await.is_err() {
                                    return;
                                }
                            }
                            Err(err) => {
                                tracing::warn!(%err, "plugin change listener dropped");
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot connect the plugin change listener"),
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}
