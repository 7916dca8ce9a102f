//! The audit log (admins): the newest decisions people made, and the verification of its hash
//! chain from the first entry to the head.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use crate::interfaces::console::call;
use crate::interfaces::console::layout::{self, badge, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// Entries per page.
const PAGE: i64 = 100;

/// `/console/audit`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/audit", get(audit))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    after: Option<i64>,
}

async fn audit(
    State(console): State<Console>,
    signed: Signed,
    Query(query): Query<AuditQuery>,
) -> Result<Markup, PageError> {
    let verify = call::get(&console, &signed, "/audit/verify").await?;
    let entries_total = verify["entries"].as_i64().unwrap_or_default();
    // Newest page first unless the reader pages explicitly.
    let after = query
        .after
        .unwrap_or_else(|| (entries_total - PAGE).max(0))
        .max(0);
    let entries = call::get(
        &console,
        &signed,
        &format!("/audit?after={after}&limit={PAGE}"),
    )
    .await?;
    let mut entries = entries.as_array().cloned().unwrap_or_default();
    entries.reverse();
    let ok = verify["ok"].as_bool() == Some(true);
    let body = html! {
        h1 { "Audit log" }
        section.card #verification {
            h2 { "Hash chain " (badge(if ok { "ok" } else { "failed" })) }
            @if ok {
                p { "All " (layout::number(entries_total)) " entries verify; head " code { (s(&verify, "head")) } "." }
            } @else {
                p.error { "The chain breaks at entry " (verify["first_bad_seq"].as_i64().unwrap_or_default()) ": "
                    (s(&verify, "problem")) }
            }
        }
        section.card {
            h2 { "Entries, newest first" }
            div.scroll { table {
                thead { tr { th.num { "#" } th { "When" } th { "Who" } th { "Action" } th { "Subject" } th { "Reason" } } }
                tbody { @for e in &entries { tr {
                    td.num { (e["seq"].as_i64().unwrap_or_default()) }
                    td { (layout::when(e["at"].as_i64().unwrap_or_default())) }
                    td { code { (s(e, "actor")) } }
                    td { (s(e, "action")) }
                    td { (s(e, "subject_kind")) " " code { (s(e, "subject_id")) } }
                    td { (s(e, "reason")) }
                } } }
            } }
            @if after > 0 {
                p { a href={"/console/audit?after=" ((after - PAGE).max(0))} { "Older entries →" } }
            }
        }
    };
    Ok(page("Audit log", &signed, body))
}
