//! The web console: pages for platform admins, brands and members, served by the same binary
//! under `/console`.
//!
//! # How it works
//! - Every page and every action is an in-process call of the HTTP API ([`call`]) made with the
//!   API key the person signed in with. The console therefore never holds more power than that
//!   key, and it goes through exactly the API's authorization, validation and idempotency: a
//!   403 or 404 from the API is the page's 403 or 404.
//! - Signing in trades an API key for a session cookie ([`session`]): `HttpOnly`,
//!   `SameSite=Strict`, and `Secure` behind TLS. The session lives in this process's memory,
//!   bounded and with idle and absolute expiry, never in the database, so the key is written
//!   nowhere. Every form carries the session's CSRF token and a fresh idempotency key, so a form
//!   sent twice is an API replay, not a second action.
//! - HTML comes from `maud`, escaped by default. Charts are SVG rendered on the server
//!   ([`charts`]). The stylesheet and the one script (co-signing in the browser) are embedded
//!   in the binary ([`assets`]), so there is nothing to build.
//!
//! Pages: [`plugins`] (review queue, version page, actions, co-signing), [`settlement`]
//! (periods, statements, netting, CSV), [`members`] (search, a member's points and tier),
//! [`me`] (a member's own card: balance, tier progress, perks, pass), [`perks`] (inventory),
//! [`money`] (budgets with this period's usage, stored value held and its reserves),
//! [`audit`] and [`overview`] (the programme in numbers and charts).

pub mod assets;
pub mod audit;
pub mod call;
pub mod charts;
pub mod layout;
pub mod me;
pub mod members;
pub mod money;
pub mod overview;
pub mod perks;
pub mod plugins;
pub mod session;
pub mod settlement;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::domain::access::Role;
use crate::interfaces::api::AppState;

/// Where the console lives.
pub const PREFIX: &str = "/console";

/// The `[console]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at all (`false` leaves only the API).
    pub enabled: bool,
    /// Minutes a session lives without a request: a console left open on a shared counter
    /// screen signs itself out.
    pub session_idle_minutes: u64,
    /// Hours a session lives at most however busy it is, so a stolen cookie stops working.
    pub session_max_hours: u64,
    /// Sessions held at once: each holds a key in memory, so the count is bounded; beyond it
    /// the least recently used is signed out.
    pub max_sessions: u64,
    /// Mark the session cookie `Secure` even when the TLS proxy in front does not send
    /// `X-Forwarded-Proto: https` (with it, the cookie is `Secure` anyway).
    pub secure_cookies: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_minutes: 30,
            session_max_hours: 12,
            max_sessions: 10_000,
            secure_cookies: false,
        }
    }
}

impl ConsoleConfig {
    /// Refuses a session that could never live or never end.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.session_idle_minutes == 0 || self.session_max_hours == 0 {
            anyhow::bail!("console.session_idle_minutes and session_max_hours must be above 0");
        }
        if self.max_sessions == 0 {
            anyhow::bail!("console.max_sessions must be above 0");
        }
        Ok(())
    }
}

/// What a console handler needs: the app (for the clock and configuration), the API to call
/// in-process, and the sessions.
#[derive(Clone)]
pub struct Console {
    /// The application state.
    pub state: AppState,
    /// The API router, with its middleware, as it serves requests from outside.
    pub api: Router,
    /// Signed-in sessions.
    pub sessions: session::Sessions,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// The console's routes with their own middleware, ready to merge beside the API; empty when
/// the console is disabled.
pub fn router(state: AppState, api: Router) -> Router {
    let config = state.config.console.clone();
    if !config.enabled {
        return Router::new();
    }
    let timeout = Duration::from_millis(state.config.limits.request_timeout_ms);
    let console = Console {
        sessions: session::Sessions::new(&config),
        state,
        api,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(home))
        .route("/console/", get(home))
        .merge(session::routes())
        .merge(assets::routes())
        .merge(plugins::routes())
        .merge(settlement::routes())
        .merge(members::routes())
        .merge(me::routes())
        .merge(audit::routes())
        .merge(overview::routes())
        .merge(perks::routes())
        .merge(money::routes())
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(CatchPanicLayer::custom(|_panic| {
            layout::PageError::internal("a page failed to render").into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(console)
}

/// The console's front door: each role starts where its work is.
async fn home(signed: session::Signed) -> Response {
    let to = match signed.0.principal.role {
        Role::Admin => "/console/plugins",
        Role::Brand => "/console/plugins",
        Role::Counter => "/console/members",
        Role::Member => "/console/me",
    };
    Redirect::to(to).into_response()
}

async fn not_found() -> layout::PageError {
    layout::PageError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "No such page",
        "The console has no page at this address.",
    )
}

/// Cuts off a page that takes longer than the API's own request limit.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => layout::PageError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "This took too long",
            "The page took longer than the server allows. Try again; an action sent again \
             from the same form is not done twice.",
        )
        .into_response(),
    }
}

/// Headers every console response carries: no framing (clickjacking), scripts and forms only
/// from this origin, no caching of pages that show members' data, no referrer leaking ids.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
