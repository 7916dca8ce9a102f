//! The page shell (navigation by role, sign-out), the error page, and the small formatting
//! helpers every page uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::domain::access::Role;
use crate::interfaces::console::session::Signed;

/// A page with the console's navigation for the signed-in role.
pub fn page(title: &str, signed: &Signed, body: Markup) -> Markup {
    let principal = &signed.0.principal;
    let links: &[(&str, &str)] = match principal.role {
        Role::Admin => &[
            ("/console/plugins", "Plugins"),
            ("/console/overview", "Programme"),
            ("/console/settlement", "Settlement"),
            ("/console/perks", "Perks"),
            ("/console/money", "Budgets"),
            ("/console/members", "Members"),
            ("/console/audit", "Audit"),
        ],
        Role::Brand => &[
            ("/console/plugins", "Plugins"),
            ("/console/overview", "Programme"),
            ("/console/settlement", "Statements"),
            ("/console/perks", "Perks"),
            ("/console/money", "Budgets"),
            ("/console/members", "Members"),
        ],
        Role::Counter => &[("/console/members", "Members")],
        Role::Member => &[("/console/me", "My card")],
    };
    let who = match (principal.role, &principal.brand_id) {
        (Role::Admin, _) => "platform admin".to_owned(),
        (role, Some(brand)) => format!("{} · {brand}", role.as_str()),
        (role, None) => role.as_str().to_owned(),
    };
    let inner = html! {
        header.top {
            a.skip href="#main" { "Skip to content" }
            a.brand href="/console/" { "Coalition" }
            nav aria-label="Main" {
                @for (href, label) in links {
                    a href=(href) { (label) }
                }
            }
            div.who {
                span { (who) }
                form method="post" action="/console/logout" {
                    input type="hidden" name="csrf" value=(signed.0.csrf);
                    button.link type="submit" { "Sign out" }
                }
            }
        }
        main #main { (body) }
    };
    shell(title, inner)
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    shell(
        title,
        html! {
            header.top { a.brand href="/console/" { "Coalition" } }
            main #main { (body) }
        },
    )
}

fn shell(title: &str, inner: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Coalition console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body { (inner) }
        }
    }
}

/// The hidden fields every form of a signed-in page carries: the session's CSRF token and a
/// fresh idempotency key (a form sent twice is replayed by the API, not done twice).
pub fn guard(signed: &Signed) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(signed.0.csrf);
        input type="hidden" name="idem" value=(uuid::Uuid::new_v4().to_string());
    }
}

/// A page that could not be shown: the API's problem (status, stable code, detail) or the
/// console's own.
#[derive(Debug, Clone)]
pub struct PageError {
    /// HTTP status of the page.
    pub status: StatusCode,
    /// Stable code, as the API's problem documents carry.
    pub code: String,
    /// Short title.
    pub title: String,
    /// What happened and what to do.
    pub detail: String,
}

impl PageError {
    /// An error page.
    pub fn new(
        status: StatusCode,
        code: impl Into<String>,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            title: title.into(),
            detail: detail.into(),
        }
    }

    /// A failure of the console itself (500).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong",
            detail,
        )
    }

    /// A form that is missing something or has a bad value (400).
    pub fn bad_form(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Check the form",
            detail,
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! {
            section.card.narrow {
                h1 { (self.title) }
                p { (self.detail) }
                p.hint { "Status " (self.status.as_u16()) " · code " code.code { (self.code) } }
                p { a href="/console/" { "Back to the console" } }
            }
        };
        (self.status, bare(&self.title, body)).into_response()
    }
}

/// A Unix-ms instant as `YYYY-MM-DD HH:MM UTC`.
pub fn when(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A Unix-ms instant as `YYYY-MM-DD`.
pub fn day(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Cents as `1,234.56` (negative with a minus sign).
pub fn cents(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    format!("{sign}{}.{:02}", grouped(abs / 100), abs % 100)
}

/// An integer with thousands separators.
pub fn number(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{}", grouped(value.unsigned_abs()))
}

fn grouped(mut value: u64) -> String {
    let mut parts = Vec::new();
    loop {
        if value < 1_000 {
            parts.push(value.to_string());
            break;
        }
        parts.push(format!("{:03}", value % 1_000));
        value /= 1_000;
    }
    parts.reverse();
    parts.join(",")
}

/// A settlement period's status: an open period is the normal state, not an alarm.
pub fn period_badge(status: &str) -> Markup {
    match status {
        "open" => html! { span class="badge wait" { "open" } },
        other => badge(other),
    }
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "active" | "approved" | "closed" | "ok" | "issued" | "redeemed" => "good",
        "rejected" | "retired" | "killed" | "open" | "failed" | "parked" => "bad",
        _ => "wait",
    };
    html! { span class={"badge " (class)} { (status) } }
}

/// The string field `field` of an API answer ("" when absent or not a string).
pub fn s<'v>(value: &'v serde_json::Value, field: &str) -> &'v str {
    value[field].as_str().unwrap_or_default()
}

/// The integer field `field` of an API answer (0 when absent or not an integer).
pub fn i(value: &serde_json::Value, field: &str) -> i64 {
    value[field].as_i64().unwrap_or_default()
}

/// Pretty JSON in a `<pre>`.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// An inline SVG made by [`crate::interfaces::console::charts`] (already escaped there).
pub fn svg(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_money_and_points() {
        assert_eq!(cents(123_456), "1,234.56");
        assert_eq!(cents(-5), "-0.05");
        assert_eq!(cents(0), "0.00");
        assert_eq!(number(1_000_000), "1,000,000");
        assert_eq!(number(-999), "-999");
        assert_eq!(when(1_772_445_600_000), "2026-03-02 10:00 UTC");
        assert_eq!(day(1_772_445_600_000), "2026-03-02");
    }
}
