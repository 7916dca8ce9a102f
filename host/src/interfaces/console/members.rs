//! Members as admins, brands and counters see them: search (masked where the role requires, by
//! the API), and a member's points history, lots with their expiry, and tier progress.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::access::Role;
use crate::interfaces::console::call::{self, enc};
use crate::interfaces::console::layout::{self, badge, i, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// Search and one member.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/members", get(search))
        .route("/console/members/{id}", get(member))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    phone: Option<String>,
    tag: Option<String>,
    tier: Option<String>,
    cursor: Option<String>,
}

async fn search(
    State(console): State<Console>,
    signed: Signed,
    Query(query): Query<SearchQuery>,
) -> Result<Markup, PageError> {
    let field = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
    };
    let (phone, tag, tier) = (field(&query.phone), field(&query.tag), field(&query.tier));
    let counter = signed.0.principal.role == Role::Counter;
    let mut params = vec!["limit=50".to_owned()];
    for (name, value) in [
        ("phone", &phone),
        ("tag", &tag),
        ("tier", &tier),
        ("cursor", &field(&query.cursor)),
    ] {
        if let Some(value) = value {
            params.push(format!("{name}={}", enc(value)));
        }
    }
    // A counter may only look a member up by phone: ask for nothing until it gives one.
    let page_of = if counter && phone.is_none() {
        None
    } else {
        Some(call::get(&console, &signed, &format!("/members?{}", params.join("&"))).await?)
    };
    let body = html! {
        h1 { "Members" }
        form.card method="get" action="/console/members" role="search" {
            div.grid {
                div { label for="phone" { "Phone (E.164)" }
                    input #phone type="search" name="phone" value=(phone.clone().unwrap_or_default()) placeholder="+8613800000001"; }
                @if !counter {
                    div { label for="tag" { "Tag" } input #tag type="text" name="tag" value=(tag.clone().unwrap_or_default()); }
                    div { label for="tier" { "Tier" } input #tier type="text" name="tier" value=(tier.clone().unwrap_or_default()); }
                }
            }
            button type="submit" { "Search" }
        }
        @if let Some(found) = &page_of {
            @let items = found["items"].as_array().cloned().unwrap_or_default();
            section.card {
                @if items.is_empty() { p { "No member matches." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Name" } th { "Phone" } th { "Tier" } th { "Status" } th { "Tags" } th { "Joined" } } }
                        tbody { @for m in &items { tr {
                            td { a href={"/console/members/" (s(m, "id"))} { (s(m, "name")) } }
                            td { (s(m, "phone")) } td { (s(m, "tier")) } td { (badge(s(m, "status"))) }
                            td { (m["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                            td { (layout::day(i(m, "created_at_ms"))) }
                        } } }
                    } }
                    @if let Some(next) = found["next_cursor"].as_str() {
                        p { a href={"/console/members?cursor=" (enc(next))
                            @if let Some(t) = &phone { "&phone=" (enc(t)) }
                            @if let Some(t) = &tag { "&tag=" (enc(t)) }
                            @if let Some(t) = &tier { "&tier=" (enc(t)) } } { "Next page →" } }
                    }
                }
            }
        }
    };
    Ok(page("Members", &signed, body))
}

async fn member(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let base = format!("/members/{}", enc(&id));
    let profile = call::get(&console, &signed, &base).await?;
    let points = call::get(&console, &signed, &format!("{base}/points")).await?;
    let tier = call::get_optional(&console, &signed, &format!("{base}/tier")).await;
    let history = call::get_optional(
        &console,
        &signed,
        &format!("{base}/points/history?limit=50"),
    )
    .await;
    let body = html! {
        p { a href="/console/members" { "← Members" } }
        h1 { (s(&profile, "name")) " " (badge(s(&profile, "status"))) }
        @if profile["masked"].as_bool() == Some(true) { p.hint { "Contact details are masked for your role." } }
        div.kpis {
            div.kpi { b { (layout::number(i(&points, "balance"))) } span { "points balance" } }
            div.kpi { b { (layout::number(i(&points, "available"))) } span { "available" } }
            div.kpi { b { (layout::number(i(&points, "held"))) } span { "held" } }
            div.kpi { b { (layout::number(i(&points, "debt"))) } span { "debt" } }
        }
        div.grid {
            section.card {
                h2 { "Profile" }
                dl.facts {
                    dt { "Id" } dd { code { (s(&profile, "id")) } }
                    dt { "Phone" } dd { (s(&profile, "phone")) }
                    dt { "Tier" } dd { (s(&profile, "tier")) }
                    dt { "Joined" } dd { (layout::when(i(&profile, "created_at_ms"))) }
                }
            }
            @if let Some(tier) = &tier { section.card { h2 { "Tier progress" } (tier_progress(tier)) } }
        }
        section.card {
            h2 { "Lots and expiry" }
            (lots(&points, true))
        }
        @if let Some(history) = &history {
            section.card {
                h2 { "Points history" }
                div.scroll { table {
                    thead { tr { th { "When" } th { "Kind" } th.num { "Points" } th { "Brand" } th { "Order" } th { "Memo" } } }
                    tbody { @for h in history["items"].as_array().cloned().unwrap_or_default() { tr {
                        td { (layout::when(i(&h, "at_ms"))) } td { (s(&h, "kind")) }
                        td.num { (layout::number(i(&h, "points"))) }
                        td { (h["brand_id"].as_str().unwrap_or("")) } td { (h["order_id"].as_str().unwrap_or("")) }
                        td { (s(&h, "memo")) }
                    } } }
                } }
            }
        }
    };
    Ok(page(s(&profile, "name"), &signed, body))
}

/// Progress to the next tier as a bar and a sentence ("Spend 50.00 more to reach Gold").
pub fn tier_progress(tier: &Value) -> Markup {
    let current = &tier["tier"];
    let next = &tier["next_tier"];
    let qualifying = i(tier, "qualifying");
    let share = match next["threshold"].as_i64() {
        Some(threshold) if threshold > 0 => {
            (qualifying.saturating_mul(100) / threshold).clamp(0, 100)
        }
        _ => 100,
    };
    html! {
        p { strong { (s(current, "name")) } @if !next.is_null() { " → " (s(next, "name")) } }
        div.bar role="img" aria-label={(share) "% of the way to the next tier"} { span style={"width:" (share) "%"} {} }
        p #tier-progress { (s(tier, "progress")) }
        @if let Some(warning) = tier["downgrade_warning"].as_object() {
            p.error { "Below the level that keeps this tier: "
                (warning.get("message").and_then(Value::as_str).unwrap_or("see the tier rules")) }
        }
    }
}

/// A member's lots, soonest expiry first, and the points expiring soon.
pub fn lots(points: &Value, open: bool) -> Markup {
    let upcoming = points["upcoming_expiry"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let lots = points["lots"].as_array().cloned().unwrap_or_default();
    html! {
        @if !upcoming.is_empty() {
            ul #expiry { @for u in &upcoming {
                li { strong { (layout::number(i(u, "points"))) " points" } " expire on " (layout::day(i(u, "expires_at_ms"))) }
            } }
        }
        @if lots.is_empty() { p { "No points lots." } } @else {
            details open[open] { summary { "Lots (" (lots.len()) ")" }
            div.scroll { table {
                thead { tr { th { "Earned" } th { "Source" } th { "Brand" } th.num { "Points" } th.num { "Left" } th { "Expires" } } }
                tbody { @for l in &lots { tr {
                    td { (layout::day(i(l, "earned_at_ms"))) } td { (s(l, "source")) }
                    td { (l["brand_id"].as_str().unwrap_or("")) }
                    td.num { (layout::number(i(l, "points"))) } td.num { (layout::number(i(l, "remaining"))) }
                    td { (layout::day(i(l, "expires_at_ms"))) }
                } } }
            } } }
        }
    }
}
