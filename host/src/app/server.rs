//! Starting and gracefully stopping the HTTP server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::foundation::clock::Clock;
use crate::foundation::store::{Store, StoreOptions};
use crate::interfaces::api::AppState;
use crate::interfaces::config::Config;

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
    let _ = crate::interfaces::api::prometheus_handle();
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

/// Serves the API on `listener` (and `/metrics` on `metrics.listen` if configured) until
/// `shutdown` completes, then drains in-flight requests and closes the database.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_listener = match state.config.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("while binding the metrics listener {addr}"))?,
        ),
        None => None,
    };
    run_with_metrics_listener(listener, metrics_listener, state, shutdown).await
}

/// [`run`] with the metrics listener already bound (tests bind port 0 and read it back).
pub async fn run_with_metrics_listener(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    state.config.metrics.validate()?;
    let app = crate::interfaces::api::router(state.clone());
    // Background jobs (expiry, hold timeouts, tier evaluation) stop with the server.
    state.config.validate_sections()?;
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    let plugin_sync = crate::plugins::sync::spawn(
        state.store.clone(),
        state.plugins.clone(),
        state.config.database_url(),
        jobs_stopped.clone(),
    );
    let jobs = crate::workflows::jobs::spawn(state.services.clone(), jobs_stopped.clone());
    let webhooks = crate::workflows::webhooks::spawn(state.services.clone(), jobs_stopped.clone());
    // Uploads a stopped node left mid-validation are validated again, in the background.
    match crate::plugins::lifecycle::resume_validations(&state.store, &state.plugins, &state.clock)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(versions = n, "validating uploads left by a stopped node"),
        Err(err) => tracing::warn!(error = %err, "cannot list uploads left to validate"),
    }
    let metrics_server = match metrics_listener {
        Some(metrics_listener) => {
            tracing::info!(addr = %metrics_listener.local_addr()?, "serving /metrics");
            let mut stopped = jobs_stopped;
            let app = crate::interfaces::api::metrics_router(state.clone());
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
            }))
        }
        None => None,
    };
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
    let _ = webhooks.await;
    let _ = plugin_sync.await;
    if let Some(metrics_server) = metrics_server {
        if let Ok(Err(err)) = metrics_server.await {
            tracing::error!(%err, "the metrics listener failed");
        }
    }
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
