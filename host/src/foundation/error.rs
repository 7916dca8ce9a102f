//! The one error of every operation below the interfaces: a kind (what sort of refusal or
//! failure), a stable machine-readable code, a human-readable detail and optional structured
//! fields. It carries no HTTP status: `interfaces::api::problem` maps each [`ErrorKind`] to one,
//! in one place, and renders the error as RFC 9457 `application/problem+json`.

/// What sort of error it is; the interfaces map each kind to their own vocabulary (an HTTP status,
/// an exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed or a field is invalid.
    Invalid,
    /// No or unknown credentials.
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    Forbidden,
    /// The thing named does not exist (or the caller may not know that it does).
    NotFound,
    /// The operation is not offered at this address (a transport-level refusal).
    NotAllowed,
    /// It clashes with the current state: a duplicate, a reused key, a closed period.
    Conflict,
    /// The body is larger than the limit.
    TooLarge,
    /// The body is not in a format the operation reads.
    UnsupportedFormat,
    /// Well-formed, but the business rules refuse it (e.g. `insufficient_points`).
    Refused,
    /// A rate limit: try again later.
    RateLimited,
    /// Temporarily unable (the database is busy, a plugin is down): retry with the same key.
    Unavailable,
    /// Something broke inside; the cause is logged, never shown.
    Internal,
}

impl ErrorKind {
    /// Whether the caller can fix it (anything but [`ErrorKind::Unavailable`] and
    /// [`ErrorKind::Internal`]).
    pub fn is_callers(self) -> bool {
        !matches!(self, ErrorKind::Unavailable | ErrorKind::Internal)
    }
}

/// A domain error: kind, stable code, detail; internal errors keep their cause for the log.
#[derive(Debug)]
pub struct DomainError {
    /// What sort of error.
    pub kind: ErrorKind,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Extra structured fields.
    pub extra: Option<serde_json::Value>,
    source: Option<anyhow::Error>,
}

/// Result of every domain, ledger, plugin-host and workflow operation.
pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// A new error of the given kind, code and detail.
    pub fn new(kind: ErrorKind, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            detail: detail.into(),
            extra: None,
            source: None,
        }
    }

    /// Attaches structured fields to the error.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// A field is invalid (code `validation_failed`).
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, "validation_failed", detail)
    }

    /// The request is invalid, with a specific code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, detail)
    }

    /// No or unknown credentials.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, code, detail)
    }

    /// Authenticated but not allowed (code `forbidden`).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", detail)
    }

    /// Not allowed, with a specific code (e.g. `member_blacklisted`).
    pub fn forbidden_as(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, detail)
    }

    /// A resource kind and id that does not exist.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("{kind} {id:?} does not exist"),
        )
    }

    /// A clash with the current state, with a specific code.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, detail)
    }

    /// Well-formed but refused by the business rules (e.g. `insufficient_points`).
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, code, detail)
    }

    /// A rate limit was reached.
    pub fn rate_limited(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, code, detail)
    }

    /// Try again later with the same idempotency key.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, code, detail)
    }

    /// Something broke inside; the cause is logged, never shown.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            code: "internal",
            detail: "an internal error occurred; it has been logged".to_owned(),
            extra: None,
            source: Some(err.into()),
        }
    }

    /// The cause of an internal error, for the log.
    pub fn source(&self) -> Option<&anyhow::Error> {
        self.source.as_ref()
    }

    /// Whether the caller can fix it (see [`ErrorKind::is_callers`]).
    pub fn is_callers(&self) -> bool {
        self.kind.is_callers()
    }
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({}): {}", self.kind, self.code, self.detail)
    }
}

impl From<sqlx::Error> for DomainError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut => DomainError::unavailable(
                "busy",
                "the database is busy; retry with the same idempotency key",
            ),
            other => DomainError::internal(other),
        }
    }
}

impl From<anyhow::Error> for DomainError {
    fn from(err: anyhow::Error) -> Self {
        DomainError::internal(err)
    }
}
