//! Settlement: periods, statements per brand, the netting between brands drawn as a matrix,
//! CSV downloads, reconciliation and parked events. Admins see every party; a brand sees its
//! own statement and the pairs it is in (the API's rule; another brand's statement is refused
//! here as it is there).

use axum::extract::{Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::Value;

use crate::domain::access::Role;
use crate::interfaces::console::call::{self, enc};
use crate::interfaces::console::charts;
use crate::interfaces::console::layout::{self, badge, i, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// Periods, one period, one statement, CSV downloads.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/settlement", get(periods))
        .route("/console/settlement/{period}", get(period))
        .route(
            "/console/settlement/{period}/statements.csv",
            get(statements_csv),
        )
        .route(
            "/console/settlement/{period}/statements/{party}",
            get(statement),
        )
        .route(
            "/console/settlement/{period}/statements/{party}/csv",
            get(statement_csv),
        )
}

/// The local month `YYYY-MM` of now: the period being filled.
fn current_period(console: &Console) -> String {
    let offset = console.state.config.points.utc_offset_minutes;
    let local_ms = console
        .state
        .now_ms()
        .saturating_add(offset.saturating_mul(60_000));
    layout::day(local_ms)[..7].to_owned()
}

async fn periods(State(console): State<Console>, signed: Signed) -> Result<Markup, PageError> {
    let list = call::get(&console, &signed, "/settlement/periods").await?;
    let list = list.as_array().cloned().unwrap_or_default();
    let current = current_period(&console);
    let admin = signed.0.principal.role == Role::Admin;
    let parked = if admin {
        call::get_optional(&console, &signed, "/settlement/parked?limit=50").await
    } else {
        None
    };
    let body = html! {
        h1 { "Settlement" }
        p { "The period being filled: " a href={"/console/settlement/" (current)} { (current) } " (live draft)." }
        section.card {
            h2 { "Periods" }
            @if list.is_empty() { p { "No period has been opened or closed yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Period" } th { "Status" } th.num { "Lines" } th.num { "Total" } th { "Closed" } } }
                    tbody { @for p in &list { tr {
                        td { a href={"/console/settlement/" (s(p, "id"))} { (s(p, "id")) } }
                        td { (layout::period_badge(s(p, "status"))) }
                        td.num { (layout::number(i(p, "line_count"))) }
                        td.num { (layout::cents(i(p, "total_cents"))) }
                        td { (p["closed_at"].as_i64().map(layout::when).unwrap_or_default()) }
                    } } }
                } }
            }
        }
        @if let Some(parked) = &parked {
            @let items = parked["items"].as_array().cloned().unwrap_or_default();
            section.card #parked {
                h2 { "Parked events (" (items.len()) ")" }
                p.hint { "Events a settle plugin failed on; they wait for a fix or a retry (" code { "POST /settlement/parked/retry" } ")." }
                @if items.is_empty() { p { "None." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Event" } th { "Kind" } th { "Funding → honouring" } th { "Plugin" } th { "Problem" } th.num { "Value" } } }
                        tbody { @for e in &items { tr {
                            td { code { (s(e, "event_id")) } } td { (s(e, "kind")) }
                            td { (s(e, "funding_brand")) " → " (s(e, "honouring_brand")) }
                            td { (s(e, "plugin")) " " (s(e, "version")) }
                            td { code { (s(e, "problem_code")) } }
                            td.num { (layout::cents(i(e, "value_cents"))) }
                        } } }
                    } }
                }
            }
        }
    };
    Ok(page("Settlement", &signed, body))
}

async fn period(
    State(console): State<Console>,
    signed: Signed,
    Path(period): Path<String>,
) -> Result<Markup, PageError> {
    let base = format!("/settlement/periods/{}", enc(&period));
    let statements = call::get(&console, &signed, &format!("{base}/statements")).await?;
    let statements = statements.as_array().cloned().unwrap_or_default();
    let netting = call::get(&console, &signed, &format!("{base}/netting")).await?;
    let netting = netting.as_array().cloned().unwrap_or_default();
    let info = call::get_optional(&console, &signed, &base).await;
    let reconciliation =
        call::get_optional(&console, &signed, &format!("{base}/reconciliation")).await;
    let net_bars: Vec<(String, i64)> = statements
        .iter()
        .map(|st| (s(st, "party").to_owned(), i(st, "net_cents") / 100))
        .collect();
    let body = html! {
        p { a href="/console/settlement" { "← Settlement" } }
        h1 { "Period " (period) " "
            @if let Some(info) = &info { (layout::period_badge(s(info, "status"))) } }
        section.card #statements {
            h2 { "Statements" }
            p { a.button.secondary href={"/console/settlement/" (period) "/statements.csv"} download { "Download CSV" } }
            @if statements.is_empty() { p { "No lines in this period." } } @else {
                div.scroll { table {
                    thead { tr { th { "Party" } th.num { "Owes" } th.num { "Is owed" } th.num { "Net" }
                        th.num { "Commission" } th.num { "Lines" } th { "" } } }
                    tbody { @for st in &statements { tr {
                        td { a href={"/console/settlement/" (period) "/statements/" (s(st, "party"))} { (s(st, "party")) } }
                        td.num { (layout::cents(i(st, "gross_owed_cents"))) }
                        td.num { (layout::cents(i(st, "gross_due_cents"))) }
                        td.num { (layout::cents(i(st, "net_cents"))) }
                        td.num { (layout::cents(i(st, "commission_cents"))) }
                        td.num { (layout::number(i(st, "line_count"))) }
                        td { a href={"/console/settlement/" (period) "/statements/" (s(st, "party")) "/csv"} { "CSV" } }
                    } } }
                } }
                (charts::bars("Net position per party (positive: is owed)", "whole currency units", &net_bars))
            }
        }
        section.card #netting {
            h2 { "Netting between brands" }
            (matrix(&netting))
        }
        @if let Some(rec) = &reconciliation {
            section.card #reconciliation {
                h2 { "Reconciliation " (badge(if rec["ok"].as_bool() == Some(true) { "ok" } else { "failed" })) }
                ul { @for c in rec["checks"].as_array().cloned().unwrap_or_default() {
                    li { (badge(if c["ok"].as_bool() == Some(true) { "ok" } else { "failed" })) " "
                        strong { (s(&c, "name")) } ": " (s(&c, "detail")) }
                } }
            }
        }
    };
    Ok(page(&format!("Period {period}"), &signed, body))
}

/// The netting as a matrix: row pays column the net amount; red cells are what the row owes.
fn matrix(netting: &[Value]) -> Markup {
    let mut parties: Vec<String> = netting
        .iter()
        .flat_map(|n| [s(n, "party_a").to_owned(), s(n, "party_b").to_owned()])
        .collect();
    parties.sort();
    parties.dedup();
    // What `from` pays `to`, net, cents (positive only).
    let pays = |from: &str, to: &str| -> i64 {
        netting
            .iter()
            .find_map(|n| {
                let (a, b, net) = (s(n, "party_a"), s(n, "party_b"), i(n, "net_cents"));
                if a == from && b == to {
                    Some(net)
                } else if a == to && b == from {
                    Some(-net)
                } else {
                    None
                }
            })
            .unwrap_or(0)
            .max(0)
    };
    html! {
        @if parties.is_empty() { p { "No pairs to net yet." } } @else {
            p.hint { "Each cell: what the row's party pays the column's party after netting both directions." }
            div.scroll { table.matrix #netting-matrix {
                thead { tr { th { "pays ↓ / to →" } @for p in &parties { th.num { (p) } } } }
                tbody { @for from in &parties { tr {
                    th { (from) }
                    @for to in &parties {
                        @let value = pays(from, to);
                        td class=(if value > 0 { "pos" } else { "" }) {
                            @if from == to { "—" } @else if value > 0 { (layout::cents(value)) } @else { "" }
                        }
                    }
                } } }
            } }
        }
    }
}

async fn statement(
    State(console): State<Console>,
    signed: Signed,
    Path((period, party)): Path<(String, String)>,
) -> Result<Markup, PageError> {
    let st = call::get(
        &console,
        &signed,
        &format!(
            "/settlement/periods/{}/statements/{}",
            enc(&period),
            enc(&party)
        ),
    )
    .await?;
    let details = |field: &str| st[field].as_array().cloned().unwrap_or_default();
    let points = &st["points"];
    let body = html! {
        p { a href={"/console/settlement/" (period)} { "← Period " (period) } }
        h1 { "Statement of " (party) ", " (period) " " (badge(if st["is_final"].as_bool() == Some(true) { "final" } else { "draft" })) }
        p { a.button.secondary href={"/console/settlement/" (period) "/statements/" (party) "/csv"} download { "Download CSV" } }
        div.kpis {
            div.kpi { b { (layout::cents(i(&st, "gross_owed_cents"))) } span { "owes" } }
            div.kpi { b { (layout::cents(i(&st, "gross_due_cents"))) } span { "is owed" } }
            div.kpi { b { (layout::cents(i(&st, "net_cents"))) } span { "net" } }
            div.kpi { b { (layout::cents(i(&st, "commission_cents"))) } span { "commission" } }
            div.kpi { b { (layout::number(points["issued"].as_i64().unwrap_or_default())) } span { "points issued" } }
            div.kpi { b { (layout::number(points["redeemed"].as_i64().unwrap_or_default())) } span { "points redeemed" } }
        }
        @for (title, field) in [("By counterparty", "counterparties"), ("By reference", "references")] {
            section.card {
                h2 { (title) }
                div.scroll { table {
                    thead { tr { th { "" } th.num { "Owes" } th.num { "Is owed" } th.num { "Lines" } } }
                    tbody { @for d in details(field) { tr {
                        td { (s(&d, "item")) } td.num { (layout::cents(i(&d, "owed_cents"))) }
                        td.num { (layout::cents(i(&d, "due_cents"))) } td.num { (i(&d, "line_count")) }
                    } } }
                } }
            }
        }
    };
    Ok(page(&format!("Statement {party}"), &signed, body))
}

/// Passes the API's CSV through with its download name.
async fn csv(console: &Console, signed: &Signed, path: &str) -> Result<Response, PageError> {
    let answer = call::send(console, signed, Method::GET, path, None, None)
        .await?
        .ok()?;
    let mut response = answer.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(disposition) = answer.headers.get(header::CONTENT_DISPOSITION) {
        headers.insert(header::CONTENT_DISPOSITION, disposition.clone());
    }
    Ok(response)
}

async fn statements_csv(
    State(console): State<Console>,
    signed: Signed,
    Path(period): Path<String>,
) -> Result<Response, PageError> {
    let path = format!("/settlement/periods/{}/statements?format=csv", enc(&period));
    csv(&console, &signed, &path).await
}

async fn statement_csv(
    State(console): State<Console>,
    signed: Signed,
    Path((period, party)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let path = format!(
        "/settlement/periods/{}/statements/{}?format=csv",
        enc(&period),
        enc(&party)
    );
    csv(&console, &signed, &path).await
}
