//! Perk inventory: stock, limits and windows of every perk (admins), or of the perks a brand
//! funds (brands).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::Value;

use crate::domain::access::Role;
use crate::interfaces::console::call;
use crate::interfaces::console::layout::{self, badge, page, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// `/console/perks`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/perks", get(inventory))
}

fn s<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field].as_str().unwrap_or_default()
}

fn limit(value: &Value, field: &str) -> String {
    value[field]
        .as_i64()
        .map(layout::number)
        .unwrap_or_else(|| "—".to_owned())
}

async fn inventory(State(console): State<Console>, signed: Signed) -> Result<Markup, PageError> {
    let all = call::get(&console, &signed, "/perks/inventory").await?;
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
    Ok(page("Perk inventory", &signed, body))
}
