//! The programme overview: members, active and repurchase rates, average order value, points
//! outstanding (the liability) and expiring, by brand and over time, from
//! `GET /programme/overview`.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use crate::domain::access::Role;
use crate::interfaces::console::call::{self, enc};
use crate::interfaces::console::charts::{self, Series};
use crate::interfaces::console::layout::{self, i, page, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// `/console/overview`.
pub fn routes() -> Router<Console> {
    Router::new().route("/console/overview", get(overview))
}

#[derive(Debug, Deserialize)]
struct OverviewQuery {
    days: Option<String>,
    brand: Option<String>,
}

fn percent(bp: i64) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

async fn overview(
    State(console): State<Console>,
    signed: Signed,
    Query(query): Query<OverviewQuery>,
) -> Result<Markup, PageError> {
    let days = query
        .days
        .as_deref()
        .and_then(|d| d.trim().parse::<i64>().ok())
        .unwrap_or(30);
    let mut path = format!("/programme/overview?days={days}");
    let brand = query
        .brand
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned);
    if let Some(brand) = &brand {
        path.push_str(&format!("&brand_id={}", enc(brand)));
    }
    let o = call::get(&console, &signed, &path).await?;
    let daily = o["daily"].as_array().cloned().unwrap_or_default();
    let series = |name: &str, field: &str, divide: i64| Series {
        name: name.to_owned(),
        points: daily
            .iter()
            .map(|d| (i(d, "day_ms"), (i(d, field) / divide) as f64))
            .collect(),
    };
    let by_brand = o["by_brand"].as_array().cloned().unwrap_or_default();
    let sales_bars: Vec<(String, i64)> = by_brand
        .iter()
        .map(|b| {
            (
                b["brand_id"].as_str().unwrap_or_default().to_owned(),
                i(b, "sales_cents") / 100,
            )
        })
        .collect();
    let scope = match o["brand_id"].as_str() {
        Some(b) => format!("brand {b}"),
        None => "the whole coalition".to_owned(),
    };
    let admin = signed.0.principal.role == Role::Admin;
    let body = html! {
        h1 { "Programme" }
        form.card method="get" action="/console/overview" {
            div.grid {
                div { label for="days" { "Days" }
                    select #days name="days" { @for d in [7, 30, 90, 365] {
                        option value=(d) selected[d == days] { "last " (d) " days" } } } }
                @if admin { div { label for="brand" { "Brand (empty: all)" }
                    input #brand type="text" name="brand" value=(brand.clone().unwrap_or_default()); } }
            }
            button type="submit" { "Show" }
        }
        p.hint { "Figures for " (scope) ", " (layout::day(i(&o, "from_ms"))) " to " (layout::day(i(&o, "to_ms"))) "." }
        div.kpis #kpis {
            div.kpi { b { (layout::number(i(&o, "members"))) } span { "members" } }
            div.kpi { b { (percent(i(&o, "active_rate_bp"))) } span { "active (bought in the window)" } }
            div.kpi { b { (percent(i(&o, "repurchase_rate_bp"))) } span { "repurchase (2+ orders)" } }
            div.kpi { b { (layout::cents(i(&o, "average_order_cents"))) } span { "average order" } }
            div.kpi { b { (layout::number(i(&o, "orders"))) } span { "orders" } }
            div.kpi { b { (layout::cents(i(&o, "sales_cents"))) } span { "member sales" } }
            div.kpi { b { (layout::number(i(&o, "points_outstanding"))) } span { "points outstanding (liability)" } }
            div.kpi { b { (layout::number(i(&o, "points_expiring_30d"))) } span { "expiring in 30 days" } }
        }
        div.charts {
            section.card { (charts::lines_over_days("Orders and active members per day", "count",
                &[series("orders", "orders", 1), series("active members", "active_members", 1)])) }
            section.card { (charts::lines_over_days("Points issued and redeemed per day", "points",
                &[series("issued", "points_issued", 1), series("redeemed", "points_redeemed", 1)])) }
            section.card { (charts::lines_over_days("Member sales per day", "currency units",
                &[series("sales", "sales_cents", 100)])) }
            section.card { (charts::bars("Member sales by brand", "currency units", &sales_bars)) }
        }
        section.card {
            h2 { "By brand" }
            div.scroll { table #by-brand {
                thead { tr { th { "Brand" } th.num { "Orders" } th.num { "Sales" } th.num { "Members" }
                    th.num { "Average order" } th.num { "Points issued" } } }
                tbody { @for b in &by_brand { tr {
                    td { (b["brand_id"].as_str().unwrap_or_default()) }
                    td.num { (layout::number(i(b, "orders"))) } td.num { (layout::cents(i(b, "sales_cents"))) }
                    td.num { (layout::number(i(b, "members"))) } td.num { (layout::cents(i(b, "average_order_cents"))) }
                    td.num { (layout::number(i(b, "points_issued"))) }
                } } }
            } }
        }
    };
    Ok(page("Programme", &signed, body))
}
