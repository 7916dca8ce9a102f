//! Perks: inventory (stock, limits and windows) of every perk for admins or of the perks a
//! brand funds, and the newest redemptions (every brand's, or those a brand funds or honours).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::Value;

use crate::domain::access::Role;
use crate::interfaces::console::call;
use crate::interfaces::console::layout::{self, badge, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// `/console/perks`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/perks", get(inventory))
}

fn limit(value: &Value, field: &str) -> String {
    value[field]
        .as_i64()
        .map(layout::number)
        .unwrap_or_else(|| "—".to_owned())
}

async fn inventory(State(console): State<Console>, signed: Signed) -> Result<Markup, PageError> {
    let all = call::get(&console, &signed, "/perks/inventory").await?;
    let redemptions = call::get(&console, &signed, "/perks/redemptions").await?;
    let redemptions = redemptions.as_array().cloned().unwrap_or_default();
    let own = signed.0.principal.brand_id.as_deref();
    let brand = signed.0.principal.role == Role::Brand;
    let rows: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !brand || Some(s(r, "funding_brand")) == own)
        .collect();
    let body = html! {
        h1 { "Perk inventory" }
        @if brand { p.hint { "The perks your brand funds. Set stock and limits with "
            code { "PUT /perks/{plugin}/{perk_id}/inventory" } "." } }
        section.card {
            @if rows.is_empty() { p { "No perk has an inventory yet." } } @else {
                div.scroll { table #inventory {
                    thead { tr { th { "Plugin" } th { "Perk" } th { "Funded by" } th { "Status" }
                        th.num { "Left" } th.num { "Stock" } th.num { "Per member" } th { "Period limit" } th { "Window" } } }
                    tbody { @for r in &rows { tr {
                        td { (s(r, "plugin")) } td { code { (s(r, "perk_id")) } } td { (s(r, "funding_brand")) }
                        td { (badge(s(r, "status"))) }
                        td.num { (limit(r, "remaining")) } td.num { (limit(r, "total_stock")) }
                        td.num { (limit(r, "per_member_limit")) }
                        td { (limit(r, "per_period_limit")) " per " (s(r, "period")) }
                        td { (r["starts_at_ms"].as_i64().map(layout::day).unwrap_or_default()) " – "
                            (r["ends_at_ms"].as_i64().map(layout::day).unwrap_or_default()) }
                    } } }
                } }
            }
        }
    };
    let body = html! {
        (body)
        section.card #redemptions {
            h2 { "Newest redemptions (" (redemptions.len()) ")" }
            @if redemptions.is_empty() { p { "None yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "When" } th { "Perk" } th { "Member" } th { "Funded by" } th { "Honoured by" }
                        th.num { "Points" } th.num { "Value" } th { "Coupon" } th { "Status" } } }
                    tbody { @for r in &redemptions { tr {
                        td { (layout::when(r["created_at_ms"].as_i64().unwrap_or_default())) }
                        td { code { (s(r, "perk_id")) } }
                        td { a href={"/console/members/" (s(r, "member_id"))} { code { (s(r, "member_id")) } } }
                        td { (s(r, "funding_brand")) } td { (s(r, "honouring_brand")) }
                        td.num { (layout::number(r["points"].as_i64().unwrap_or_default())) }
                        td.num { (layout::cents(r["value_cents"].as_i64().unwrap_or_default())) }
                        td { code { (r["coupon_code"].as_str().unwrap_or("—")) } }
                        td { (badge(s(r, "status"))) }
                    } } }
                } }
            }
        }
    };
    Ok(page("Perks", &signed, body))
}
