//! Calls of the HTTP API made in-process for a signed-in person: the same router, middleware,
//! authentication, authorization and idempotency as a request from outside, with the session's
//! key in `Authorization`. An API problem becomes the page's [`PageError`] with the same status
//! and code.

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap};
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::interfaces::console::layout::PageError;
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// Largest API answer a page reads: a plugin package carries a component of up to 32 MiB in
/// base64, the largest body the API sends.
const MAX_API_ANSWER_BYTES: usize = 48 * 1024 * 1024;

/// What the API answered.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The answer as a page error when it is not a success.
    pub fn ok(self) -> Result<Self, PageError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let problem = self.json();
        let text = |field: &str| problem[field].as_str().unwrap_or_default().to_owned();
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found".to_owned(),
            StatusCode::FORBIDDEN => "Not allowed".to_owned(),
            StatusCode::UNAUTHORIZED => "Signed out".to_owned(),
            _ => text("title"),
        };
        Err(PageError::new(
            self.status,
            text("code"),
            if title.is_empty() {
                "Refused".to_owned()
            } else {
                title
            },
            text("detail"),
        ))
    }
}

/// Sends one API request for `signed`: `body` as JSON, `idem` as the `Idempotency-Key`.
pub async fn send(
    console: &Console,
    signed: &Signed,
    method: Method,
    path: &str,
    body: Option<&Value>,
    idem: Option<&str>,
) -> Result<Answer, PageError> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", signed.0.key));
    if let Some(idem) = idem {
        request = request.header("idempotency-key", idem);
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap_or_default())),
        None => request.body(Body::empty()),
    }
    .map_err(|err| PageError::internal(format!("could not build the API request: {err}")))?;
    let response = console
        .api
        .clone()
        .oneshot(request)
        .await
        .map_err(|err| PageError::internal(format!("the API call failed: {err}")))?;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_API_ANSWER_BYTES)
        .await
        .map_err(|err| PageError::internal(format!("the API answer was unreadable: {err}")))?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET path` as JSON, or the page error.
pub async fn get(console: &Console, signed: &Signed, path: &str) -> Result<Value, PageError> {
    Ok(send(console, signed, Method::GET, path, None, None)
        .await?
        .ok()?
        .json())
}

/// `GET path` as JSON, or `None` when the API refuses it (a section the role may not see).
pub async fn get_optional(console: &Console, signed: &Signed, path: &str) -> Option<Value> {
    let answer = send(console, signed, Method::GET, path, None, None)
        .await
        .ok()?;
    answer.status.is_success().then(|| answer.json())
}

/// `POST path` with a JSON body and an idempotency key, or the page error.
pub async fn post(
    console: &Console,
    signed: &Signed,
    path: &str,
    body: &Value,
    idem: &str,
) -> Result<Value, PageError> {
    check_idem(idem)?;
    Ok(
        send(console, signed, Method::POST, path, Some(body), Some(idem))
            .await?
            .ok()?
            .json(),
    )
}

/// A form's idempotency key must look like the one the page put there.
fn check_idem(idem: &str) -> Result<(), PageError> {
    if uuid::Uuid::parse_str(idem).is_err() {
        return Err(PageError::bad_form(
            "the form lost its request key; open the page again",
        ));
    }
    Ok(())
}

/// Percent-encodes one path segment or query value.
pub fn enc(value: &str) -> String {
    crate::interfaces::console::session::urlencode(value).replace('/', "%2F")
}
