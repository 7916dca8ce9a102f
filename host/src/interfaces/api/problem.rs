//! Domain errors as HTTP: each [`ErrorKind`] has one status, here and nowhere else, and every
//! error renders as RFC 9457 `application/problem+json` with its stable `code`. Client errors are
//! logged at debug level; server errors are logged with their cause chain and reveal nothing
//! internal in the response. The extractors here turn axum's rejections into the same problems.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, ErrorKind};

/// The HTTP status of each kind of error.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:coalition:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short human-readable summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable code, e.g. `insufficient_points`.
    pub code: String,
    /// Extra structured fields for some problems (e.g. the balance that was short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// The problem body an error renders to.
pub fn problem(err: &DomainError) -> Problem {
    let status = status_of(err.kind);
    Problem {
        type_: format!("urn:coalition:problem:{}", err.code),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: err.detail.clone(),
        code: err.code.to_owned(),
        extra: err.extra.clone(),
    }
}

impl IntoResponse for DomainError {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        if status.is_server_error() {
            match self.source() {
                Some(source) => {
                    tracing::error!(code = self.code, error = ?source, "request failed")
                }
                None => tracing::warn!(code = self.code, detail = %self.detail, "request failed"),
            }
        } else {
            tracing::debug!(code = self.code, detail = %self.detail, "request refused");
        }
        let body = serde_json::to_vec(&problem(&self)).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// A JSON body extractor whose rejections are problem documents with stable codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = DomainError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<JsonObject<T>>::from_request(req, state).await {
            Ok(axum::Json(JsonObject(value))) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A request body read as a JSON object, which is what the OpenAPI document says every body
/// is. serde's derived `Deserialize` of a struct also accepts an array of its fields in order
/// (`[null, null]` for a struct of two optional fields), which no client means and the
/// document does not allow; this refuses it as `invalid_body`.
struct JsonObject<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(JsonObject)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> DomainError {
    match rejection {
        JsonRejection::JsonDataError(e) => DomainError::new(
            ErrorKind::Refused,
            "invalid_body",
            format!(
                "the body does not match the expected shape: {}",
                e.body_text()
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => DomainError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => DomainError::new(
            ErrorKind::UnsupportedFormat,
            "unsupported_media_type",
            "expected a body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                DomainError::new(
                    ErrorKind::TooLarge,
                    "payload_too_large",
                    "the request body exceeds the size limit",
                )
            } else {
                DomainError::bad_request("unreadable_body", e.body_text())
            }
        }
        other => DomainError::bad_request("invalid_body", other.body_text()),
    }
}

/// A path extractor whose rejections are problem documents.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = DomainError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> DomainError {
    DomainError::bad_request("invalid_path", rejection.body_text())
}

/// A query-string extractor whose rejections are problem documents.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = DomainError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> DomainError {
    DomainError::bad_request("invalid_query", rejection.body_text())
}

#[cfg(test)]
mod tests {
    use super::{problem, status_of};
    use crate::foundation::error::{DomainError, ErrorKind};

    const KINDS: [ErrorKind; 12] = [
        ErrorKind::Invalid,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::NotAllowed,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::UnsupportedFormat,
        ErrorKind::Refused,
        ErrorKind::RateLimited,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_kind_has_its_own_status_and_only_callers_errors_are_4xx() {
        let mut seen = std::collections::HashSet::new();
        for kind in KINDS {
            let status = status_of(kind);
            assert!(seen.insert(status), "{kind:?} shares {status}");
            assert_eq!(kind.is_callers(), status.is_client_error(), "{kind:?}");
        }
    }

    #[test]
    fn an_internal_error_shows_its_code_but_never_its_cause() {
        let err = DomainError::internal(anyhow::anyhow!("password=hunter2"));
        let body = problem(&err);
        assert_eq!((body.status, body.code.as_str()), (500, "internal"));
        assert!(!body.detail.contains("hunter2"));
        assert!(err.source().is_some());
    }
}
