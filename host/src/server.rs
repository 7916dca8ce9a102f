//! Starting and gracefully stopping the HTTP server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::AppState;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Store, StoreOptions};

/// Opens the database named by the configuration (creating and migrating it if needed) and
/// builds the application state.
pub async fn build_state(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let url = config.database_url();
    let options = StoreOptions {
        max_connections: config.limits.db_max_connections,
        acquire_timeout: Duration::from_millis(config.limits.db_acquire_timeout_ms),
    };
    let store = Store::open(&url, options).await?;
    // The recorder must exist before plugins load: the runtime registers per-hook series then.
    let _ = crate::api::prometheus_handle();
    coalition_runtime::metrics::describe();
    let plugins = crate::plugins::PluginHost::new(
        config.plugins.clone(),
        &config.data_dir,
        config.points.utc_offset_minutes,
        clock.clone(),
    )?;
    let plugins = Arc::new(plugins);
    crate::plugins::registry::reload(&store, &plugins)
        .await
        .map_err(|err| anyhow::anyhow!("while loading active plugins: {err}"))?;
    Ok(AppState::new(store, clock, config, plugins))
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests and
/// closes the database.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = crate::api::router(state.clone());
    // Background jobs (expiry, hold timeouts, tier evaluation) stop with the server.
    crate::jobs::validate_config(&state.config)?;
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    let plugin_sync = crate::plugins::sync::spawn(state.clone(), jobs_stopped.clone());
    let jobs = crate::jobs::spawn(state.clone(), jobs_stopped);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_jobs.send(true);
    };
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("while serving HTTP");
    let _ = jobs.await;
    let _ = plugin_sync.await;
    served?;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}
