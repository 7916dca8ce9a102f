//! Money the programme owes or may spend: each brand's budgets with this period's usage (bonus
//! points, perk and coupon value it funds) and the stored value each brand holds, with the
//! reserve it requires — every brand's for admins, its own for a brand.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::Value;

use crate::domain::access::Role;
use crate::interfaces::console::call;
use crate::interfaces::console::layout::{self, i, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// `/console/money`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/money", get(money))
}

/// A budget amount: points for bonus budgets, cents otherwise.
fn amount(budget: &Value, field: &str) -> String {
    let value = i(budget, field);
    if s(budget, "kind") == "bonus_points" {
        format!("{} pts", layout::number(value))
    } else {
        layout::cents(value)
    }
}

async fn money(State(console): State<Console>, signed: Signed) -> Result<Markup, PageError> {
    let principal = &signed.0.principal;
    let brands: Vec<String> = match (principal.role, principal.brand_id.as_deref()) {
        (Role::Brand, Some(own)) => vec![own.to_owned()],
        _ => call::get(&console, &signed, "/brands")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|b| s(b, "id").to_owned())
            .collect(),
    };
    let mut budgets = Vec::new();
    for brand in &brands {
        let list = call::get(&console, &signed, &format!("/brands/{brand}/budgets")).await?;
        budgets.extend(list.as_array().cloned().unwrap_or_default());
    }
    let liability = call::get(&console, &signed, "/stored-value/liability").await?;
    let lines = liability["brands"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Budgets and stored value" }
        section.card #budgets {
            h2 { "Budgets this period" }
            p.hint { "Every bonus, perk and campaign coupon draws on its funding brand's budgets in
                its own transaction: a bonus is cut, a perk refused, a campaign stopped at the cap." }
            @if budgets.is_empty() { p { "No budget is set." } } @else {
                div.scroll { table {
                    thead { tr { th { "Brand" } th { "Caps" } th { "Plugin" } th { "Period" }
                        th.num { "Used" } th.num { "Amount" } th { "Usage" } th { "Alert" } } }
                    tbody { @for b in &budgets { tr {
                        td { (s(b, "brand_id")) }
                        td { (s(b, "kind").replace('_', " ")) @if !s(b, "label").is_empty() { br; small { (s(b, "label")) } } }
                        td { (b["plugin"].as_str().unwrap_or("all")) }
                        td { (s(b, "period_key")) @if b["active"] == false { " (off)" } }
                        td.num { (amount(b, "used")) }
                        td.num { (amount(b, "amount")) }
                        td { meter min="0" max="10000" high=(i(b, "alert_percent") * 100) value=(i(b, "used_bp").min(10_000)) {
                            (i(b, "used_bp") / 100) "%" } " " (i(b, "used_bp") / 100) "%" }
                        td { @if let Some(at) = b["alerted_at_ms"].as_i64() { "reached " (layout::when(at)) }
                            @else { "at " (i(b, "alert_percent")) "%" } }
                    } } }
                } }
            }
        }
        section.card #stored-value {
            h2 { "Stored value held" }
            p.hint { "Members' prepaid balances by the brand that took the money, the reserve each
                must hold, and what dormant members hold (the most that could become breakage)." }
            div.scroll { table {
                thead { tr { th { "Brand" } th.num { "Outstanding" } th.num { "Members" }
                    th.num { "Reserve %" } th.num { "Reserve required" } th.num { "Dormant" } th.num { "Topped up" } th.num { "Spent" } } }
                tbody {
                    @for l in &lines { tr {
                        td { (s(l, "brand_id")) }
                        td.num { (layout::cents(i(l, "outstanding_cents"))) }
                        td.num { (layout::number(i(l, "members"))) }
                        td.num { (i(l, "reserve_percent")) }
                        td.num { (layout::cents(i(l, "reserve_required_cents"))) }
                        td.num { (layout::cents(i(l, "dormant_cents"))) }
                        td.num { (layout::cents(i(l, "topped_up_cents"))) }
                        td.num { (layout::cents(i(l, "spent_cents"))) }
                    } }
                    tr.total { th { "Total" }
                        th.num { (layout::cents(i(&liability, "total_outstanding_cents"))) } th {} th {}
                        th.num { (layout::cents(i(&liability, "total_reserve_required_cents"))) }
                        th.num { (layout::cents(i(&liability, "total_dormant_cents"))) } th {} th {} }
                }
            } }
        }
    };
    Ok(page("Budgets and stored value", &signed, body))
}
