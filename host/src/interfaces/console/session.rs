//! Signing in and out: an API key becomes a session cookie, and every form carries the
//! session's CSRF token.
//!
//! - The session is held in memory only ([`Sessions`]): the key behind it is never written to
//!   disk or the database, and a restart signs everyone out.
//! - Expiry follows the server's injected clock: `session_idle_minutes` without a request, or
//!   `session_max_hours` in all. Tests move the clock instead of waiting.
//! - The cookie is `HttpOnly`, `SameSite=Strict` and `Path=/console`. It is `Secure` when the
//!   request came through TLS (`X-Forwarded-Proto: https`) or `console.secure_cookies` is set.
//! - The sign-in form has its own token, in a short-lived cookie of its own (a double-submit
//!   check), so nobody can sign a visitor into someone else's session.
//!
//! The cookie header is parsed here in a few lines rather than with a cookie crate: the console
//! reads one cookie and writes two, with fixed attributes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;
use rand::RngCore;
use serde::Deserialize;

use crate::domain::access::Principal;
use crate::interfaces::api::auth::principal_for_key;
use crate::interfaces::console::layout::{self, PageError};
use crate::interfaces::console::{Console, ConsoleConfig};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "coalition_session";
/// Name of the sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "coalition_login";
/// How long the sign-in form stays valid: long enough to find and paste a key.
const LOGIN_FORM_SECONDS: u64 = 15 * 60;
/// Longest `next` address kept across sign-in (longer ones go to the console's home).
const MAX_NEXT_BYTES: usize = 512;

/// One signed-in person.
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// The API key signed in with: every call the console makes for this person uses it.
    pub key: String,
    /// Who the key was at sign-in (for the navigation; the API checks the key on every call).
    pub principal: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it began, Unix ms (server clock).
    pub created_ms: i64,
    /// Its latest request, Unix ms (server clock).
    last_seen_ms: AtomicI64,
}

impl std::fmt::Debug for Session {
    /// Never prints the key or the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// The sessions of this process, bounded by `console.max_sessions` (least recently used
/// signed out first).
#[derive(Clone, Debug)]
pub struct Sessions {
    cache: moka::sync::Cache<String, Arc<Session>>,
    idle_ms: i64,
    max_ms: i64,
    secure_always: bool,
}

impl Sessions {
    /// An empty set under `config`'s limits.
    pub fn new(config: &ConsoleConfig) -> Self {
        let idle_ms =
            i64::try_from(config.session_idle_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
        let max_ms =
            i64::try_from(config.session_max_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(config.max_sessions)
                // Least recently used out first, as documented: the default policy may refuse
                // a new sign-in when full instead.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // Memory clean-up only; expiry itself follows the server's clock below.
                .time_to_live(Duration::from_secs(
                    config.session_max_hours.saturating_mul(3_600),
                ))
                .build(),
            idle_ms,
            max_ms,
            secure_always: config.secure_cookies,
        }
    }

    /// Starts a session for a key that resolved to `principal`.
    pub fn start(&self, key: String, principal: Principal, now_ms: i64) -> Arc<Session> {
        let session = Arc::new(Session {
            id: random_token(),
            key,
            principal,
            csrf: random_token(),
            created_ms: now_ms,
            last_seen_ms: AtomicI64::new(now_ms),
        });
        self.cache.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session of a cookie value, touched; expired ones are removed.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Arc<Session>> {
        let session = self.cache.get(id)?;
        let idle = now_ms.saturating_sub(session.last_seen_ms.load(Ordering::Relaxed));
        let age = now_ms.saturating_sub(session.created_ms);
        if idle > self.idle_ms || age > self.max_ms {
            self.cache.invalidate(id);
            return None;
        }
        session.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
        Some(session)
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.cache.invalidate(id);
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        self.secure_always
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Equal without telling by timing where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, path: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request from a signed-in person. Without a live session, a page request is sent to the
/// sign-in page (and back after it); a form post gets a 401 page.
#[derive(Debug, Clone)]
pub struct Signed(pub Arc<Session>);

impl FromRequestParts<Console> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let now_ms = console.state.now_ms();
        if let Some(session) =
            cookie(&parts.headers, SESSION_COOKIE).and_then(|id| console.sessions.get(&id, now_ms))
        {
            return Ok(Signed(session));
        }
        if parts.method == axum::http::Method::GET {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/console/");
            let to = format!("/console/login?next={}", urlencode(next));
            return Err(Redirect::to(&to).into_response());
        }
        Err(PageError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "Signed out",
            "Your session has ended. Sign in again and repeat the action.",
        )
        .into_response())
    }
}

impl Signed {
    /// Refuses a form whose CSRF token is not this session's (403, nothing done).
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), PageError> {
        match token {
            Some(token) if same_token(token, &self.0.csrf) => Ok(()),
            _ => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_invalid",
                "Form refused",
                "This form did not carry this session's security token, so nothing was done. \
                 Open the page again and resend it from there.",
            )),
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters and `/` stay).
pub fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Sign-in, sign-out.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only an address inside the console, so sign-in cannot bounce a visitor elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= MAX_NEXT_BYTES
                && !n.starts_with("/console/login") =>
        {
            n.to_owned()
        }
        _ => "/console/".to_owned(),
    }
}

fn login_form(token: &str, next: &str, error: Option<&str>) -> maud::Markup {
    let body = html! {
        section.card.narrow {
            h1 { "Sign in" }
            p { "Paste an API key: a platform admin's, a brand's, a counter's or a member's. \
                 The console can do exactly what the key can do through the API, nothing more." }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required
                    placeholder="coa_…" maxlength="200";
                button type="submit" { "Sign in" }
            }
            p.hint { "Running the demo? Its keys are in " code { "data/demo-keys.json" } "." }
        }
    };
    layout::bare("Sign in", body)
}

async fn login_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let token = random_token();
    let next = safe_next(query.next.as_deref());
    let mut response = login_form(&token, &next, None).into_response();
    let secure = console.sessions.secure(&headers);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &token,
            "/console/login",
            LOGIN_FORM_SECONDS,
            secure,
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    csrf: Option<String>,
    key: Option<String>,
    next: Option<String>,
}

async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_token(form.csrf.as_deref().unwrap_or_default(), &expected) {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "Form refused",
            "The sign-in form expired or did not come from this console. Open the sign-in page \
             again.",
        )
        .into_response();
    }
    let key = form.key.unwrap_or_default().trim().to_owned();
    match principal_for_key(&console.state, &key).await {
        Ok(principal) => {
            let session = console
                .sessions
                .start(key, principal, console.state.now_ms());
            let secure = console.sessions.secure(&headers);
            let max_age = u64::try_from(console.sessions.max_ms / 1_000).unwrap_or(0);
            let mut response = Redirect::to(&next).into_response();
            let cookies = response.headers_mut();
            cookies.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session.id, "/console", max_age, secure),
            );
            cookies.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", "/console/login", 0, secure),
            );
            response
        }
        Err(err) => {
            tracing::info!(code = err.code, "console sign-in refused");
            let mut response = login_form(
                &expected,
                &next,
                Some("That key is unknown, revoked or malformed."),
            )
            .into_response();
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Err(err) = signed.check_csrf(form.csrf.as_deref()) {
        return err.into_response();
    }
    console.sessions.end(&signed.0.id);
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            "/console",
            0,
            console.sessions.secure(&headers),
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::Role;

    fn principal() -> Principal {
        Principal {
            key_id: "k".to_owned(),
            role: Role::Admin,
            brand_id: None,
            member_id: None,
        }
    }

    #[test]
    fn sessions_end_when_idle_or_too_old_by_the_server_clock() {
        let config = ConsoleConfig {
            session_idle_minutes: 30,
            session_max_hours: 1,
            ..ConsoleConfig::default()
        };
        let sessions = Sessions::new(&config);
        let s = sessions.start("coa_x".to_owned(), principal(), 0);
        assert!(sessions.get(&s.id, 29 * 60_000).is_some());
        // Touched at 29 min: still alive 29 min later, but not after the hour in all.
        assert!(sessions.get(&s.id, 58 * 60_000).is_some());
        assert!(sessions.get(&s.id, 61 * 60_000).is_none());
        let s = sessions.start("coa_x".to_owned(), principal(), 0);
        assert!(sessions.get(&s.id, 31 * 60_000).is_none(), "idle too long");
        assert!(sessions.get("nope", 0).is_none());
    }

    #[test]
    fn a_full_set_signs_out_the_least_recently_used() {
        let config = ConsoleConfig {
            max_sessions: 2,
            ..ConsoleConfig::default()
        };
        let sessions = Sessions::new(&config);
        // The cache applies its bookkeeping in batches; run it after each step so the order of
        // use is the one written here.
        let a = sessions.start("coa_a".to_owned(), principal(), 0);
        sessions.cache.run_pending_tasks();
        let b = sessions.start("coa_b".to_owned(), principal(), 0);
        sessions.cache.run_pending_tasks();
        assert!(sessions.get(&a.id, 1).is_some());
        sessions.cache.run_pending_tasks();
        let c = sessions.start("coa_c".to_owned(), principal(), 2);
        sessions.cache.run_pending_tasks();
        assert!(sessions.get(&c.id, 3).is_some(), "a new sign-in is kept");
        assert!(
            sessions.get(&b.id, 3).is_none(),
            "the least recently used went"
        );
        assert!(
            format!("{a:?}").find("coa_a").is_none(),
            "Debug hides the key"
        );
    }

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(
            safe_next(Some("/console/plugins?x=1")),
            "/console/plugins?x=1"
        );
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/console/login",
            "/docs",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console/", "{bad}");
        }
        assert_eq!(safe_next(None), "/console/");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
        assert!(!same_token("ab", "abc"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; coalition_session=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
