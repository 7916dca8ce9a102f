//! The HTTP API: shared state, the router with its middleware, and the OpenAPI document.
//!
//! Each resource has its own file under `api/` exposing `fn router() -> OpenApiRouter<AppState>`
//! with `<resource>_<verb>` handlers annotated with `#[utoipa::path]`; [`router`] merges them, so
//! the OpenAPI document (`/openapi.json`, browsable at `/docs`) always matches the routes.

pub mod auth;
pub mod brands;
pub mod budgets;
pub mod campaigns;
pub mod checkouts;
pub mod contract;
pub mod coupons;
pub mod health;
pub mod idempotency;
pub mod jobs;
pub mod journeys;
pub mod keys;
pub mod kpis;
pub mod lifecycle;
pub mod members;
pub mod membership;
pub mod offline;
pub mod passes;
pub mod perks;
pub mod plugins;
pub mod points;
pub mod problem;
pub mod programme;
pub mod purchases;
pub mod referrals;
pub mod risk;
pub mod segments;
pub mod settle_precedence;
pub mod settlement;
pub mod stages;
pub mod stored_value;
pub mod tiers;
pub mod unread_body;
pub mod webhooks;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

use crate::foundation::clock::Clock;
use crate::foundation::error::DomainError;
use crate::foundation::store::Store;
use crate::interfaces::api::auth::AuthCache;
use crate::interfaces::config::Config;
use crate::workflows::Services;

/// Everything a handler needs: the workflows' [`Services`] (reached through `Deref`), the
/// configuration, the API key cache and the metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store, clock, plugin host, perk cache and configuration sections of the workflows.
    pub services: Services,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Cached API key lookups.
    pub auth_cache: AuthCache,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Counter look-ups of members by phone, per key (see [`crate::domain::risk::LookupLimiter`]).
    pub phone_lookups: Arc<crate::domain::risk::LookupLimiter>,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl AppState {
    /// When a job run inside a request must stop so the request answers in time: half the
    /// request timeout from now (the run reports what is left, and the next call resumes).
    pub fn job_deadline(&self) -> std::time::Instant {
        std::time::Instant::now()
            + std::time::Duration::from_millis(self.config.limits.request_timeout_ms / 2)
    }

    /// Builds the state around an open store.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: Config,
        plugins: Arc<crate::plugins::PluginHost>,
    ) -> Self {
        let auth_cache = auth::auth_cache(
            config.limits.auth_cache_entries,
            config.limits.auth_cache_ttl_ms,
        );
        let phone_lookups = Arc::new(crate::domain::risk::LookupLimiter::new(
            config.risk.counter_phone_lookups_per_minute,
        ));
        Self {
            services: Services::new(store, clock, plugins, config.settings()),
            phone_lookups,
            config: Arc::new(config),
            auth_cache,
            metrics: prometheus_handle(),
        }
    }
}

/// Latency buckets in seconds for HTTP and plugin histograms: 100 µs to 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process-wide Prometheus recorder (the `metrics` facade allows exactly one).
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS_S)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already installed (e.g. by an embedding test): render an
                // empty registry rather than failing the server.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coalition API",
        description = "Members, tiers and points shared by a coalition of brands, with partner \
            business logic running as sandboxed plugins. Every write takes an `Idempotency-Key` \
            header; every error is `application/problem+json` with a stable `code`.",
        version = "0.1.0"
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(crate::interfaces::api::problem::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer coa_…`"))
                    .build(),
            ),
        );
    }
}

/// The API's routes and their OpenAPI description, before middleware.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(brands::router())
        .merge(members::router())
        .merge(keys::router())
        .merge(points::router())
        .merge(purchases::router())
        .merge(tiers::router())
        .merge(jobs::router())
        .merge(perks::router())
        .merge(coupons::router())
        .merge(checkouts::router())
        .merge(plugins::router())
        .merge(lifecycle::router())
        .merge(campaigns::router())
        .merge(passes::router())
        .merge(offline::router())
        .merge(risk::router())
        .merge(settlement::router())
        .merge(settle_precedence::router())
        .merge(programme::router())
        .merge(stored_value::router())
        .merge(budgets::router())
        .merge(membership::router())
        .merge(stages::router())
        .merge(journeys::router())
        .merge(webhooks::router())
        .merge(referrals::router())
        .merge(kpis::router())
        .merge(segments::router())
}

/// The OpenAPI document of the whole API, with the parts common to every operation
/// ([`contract::finish`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api_router().split_for_parts();
    contract::finish(&mut openapi);
    openapi
}

/// The complete application: the API with its docs, and the web console under `/console`
/// (which reaches the API in-process, with the signed-in key).
pub fn router(state: AppState) -> Router {
    let api = api_app(state.clone());
    crate::interfaces::console::router(state, api.clone()).merge(api)
}

/// The API alone: routes, docs, fallbacks and middleware.
pub fn api_app(state: AppState) -> Router {
    let (routes, mut openapi) = api_router().split_for_parts();
    contract::finish(&mut openapi);
    let openapi_json = serde_json::to_value(&openapi).unwrap_or_default();
    let limits = state.config.limits.clone();
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(openapi_json.clone()) }),
        )
        .merge(Scalar::with_url("/docs", openapi))
        .fallback(|| async {
            DomainError::new(
                crate::foundation::error::ErrorKind::NotFound,
                "not_found",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            DomainError::new(
                crate::foundation::error::ErrorKind::NotAllowed,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(limits.request_body_bytes))
        .layer(middleware::from_fn_with_state(
            Duration::from_millis(limits.request_timeout_ms),
            timeout,
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(CatchPanicLayer::custom(|_panic| {
            DomainError::internal(anyhow::anyhow!("a handler panicked")).into_response()
        }))
        .layer(middleware::from_fn_with_state(
            limits.request_body_bytes,
            crate::interfaces::api::unread_body::drain_unread_body,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The separate metrics listener (`metrics.listen`): `/metrics` and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(health::listener_metrics))
        .fallback(|| async {
            DomainError::new(
                crate::foundation::error::ErrorKind::NotFound,
                "not_found",
                "no such route",
            )
        })
        .with_state(state)
}

/// Cuts off slow requests with a problem document; dropping the handler rolls back its
/// transaction, so a retry with the same idempotency key is safe.
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => DomainError::unavailable(
            "timeout",
            format!(
                "the request took longer than {} ms; retry with the same idempotency key",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
