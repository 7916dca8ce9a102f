//! A member's own card, mobile first: balance and what expires when, progress to the next
//! tier, perks from every brand with their cost and who honours them, redeeming with one tap
//! (the coupon shows at once), and the signed member pass as a QR code for the counter.

use axum::extract::{Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::interfaces::console::call::{self, enc};
use crate::interfaces::console::layout::{self, badge, guard, i, page, s, PageError};
use crate::interfaces::console::members::{lots, tier_progress};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// The card, redeeming, the pass image.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/me", get(card))
        .route("/console/me/redeem", post(redeem))
        .route("/console/me/pass.svg", get(pass_svg))
}

/// The member behind the signed-in key (a member key names it; others are refused by the API).
async fn me(console: &Console, signed: &Signed) -> Result<Value, PageError> {
    call::get(console, signed, "/members/me").await
}

#[derive(Debug, Deserialize)]
struct CardQuery {
    redeemed: Option<String>,
}

async fn card(
    State(console): State<Console>,
    signed: Signed,
    Query(query): Query<CardQuery>,
) -> Result<Markup, PageError> {
    let member = me(&console, &signed).await?;
    let base = format!("/members/{}", enc(s(&member, "id")));
    let points = call::get(&console, &signed, &format!("{base}/points")).await?;
    let tier = call::get_optional(&console, &signed, &format!("{base}/tier")).await;
    let perks = call::get(
        &console,
        &signed,
        &format!("{base}/perks?include_unaffordable=true"),
    )
    .await?;
    let coupons = call::get_optional(&console, &signed, &format!("{base}/coupons")).await;
    let stored = call::get_optional(&console, &signed, &format!("{base}/stored-value")).await;
    let card_view = call::get_optional(&console, &signed, &format!("{base}/membership")).await;
    let redemptions = call::get_optional(&console, &signed, &format!("{base}/redemptions")).await;
    let just = query.redeemed.as_deref().and_then(|id| {
        redemptions
            .as_ref()?
            .as_array()?
            .iter()
            .find(|r| s(r, "id") == id)
            .cloned()
    });
    let perk_list = perks["perks"].as_array().cloned().unwrap_or_default();
    let unavailable = perks["unavailable"].as_array().cloned().unwrap_or_default();
    let live_coupons: Vec<Value> = coupons
        .as_ref()
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|c| s(c, "status") == "issued")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        h1 { "Hello, " (s(&member, "name")) }
        @if let Some(r) = &just {
            section.card.notice #redeemed role="status" {
                h2 { "Redeemed: " (s(r, "perk_id")) }
                p { (layout::number(i(r, "points"))) " points spent." }
                @if let Some(coupon) = r["coupon"].as_object() {
                    p { "Your coupon: " strong #coupon-code { (coupon.get("code").and_then(Value::as_str).unwrap_or_default()) }
                        " · show it at " (s(r, "honouring_brand")) }
                }
            }
        }
        div.grid {
            section.card #balance {
                h2 { "Points" }
                p.balance { (layout::number(i(&points, "available"))) }
                p.hint { "available · " (layout::number(i(&points, "balance"))) " in all" }
                @if i(&points, "pending") > 0 {
                    p.hint #pending { (layout::number(i(&points, "pending"))) " pending until the return window ends"
                        @if let Some(at) = points["pending_earns"][0]["available_at_ms"].as_i64() {
                            " (next on " (layout::day(at)) ")" } }
                }
                (lots(&points, false))
            }
            @if let Some(sv) = stored.as_ref().filter(|sv| i(sv, "balance_cents") > 0) {
                section.card #stored-value {
                    h2 { "Stored value" }
                    p.balance { (layout::cents(i(sv, "balance_cents"))) }
                    p.hint { "pay with it at any counter of the coalition · limit "
                        (layout::cents(i(sv, "limit_cents"))) }
                }
            }
            @if let Some(m) = card_view.as_ref().filter(|m| m["card"]["in_force"].as_bool() == Some(true)) {
                section.card #membership-card {
                    h2 { "Membership card" }
                    p.balance { (s(&m["plan"], "title")) }
                    p.hint { "until " (layout::day(i(&m["card"], "expires_at_ms")))
                        @if i(&m["plan"], "points_multiplier_percent") > 100 {
                            " · ×" (format!("{}.{:02}", i(&m["plan"], "points_multiplier_percent") / 100,
                                i(&m["plan"], "points_multiplier_percent") % 100))
                            " points on purchases" } }
                    p.hint { (m["benefits"].as_array().map(|b| b.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                    @if m["notices"].as_array().is_some_and(|n| !n.is_empty()) {
                        p.hint #renewal-notice { "Renew before it expires to keep your benefits." }
                    }
                }
            }
            @if let Some(tier) = &tier { section.card #tier { h2 { "Tier" } (tier_progress(tier)) } }
        }
        section #perks {
            h2 { "Perks" }
            @if perk_list.is_empty() { p.card { "No perks on offer right now." } }
            div.perks {
                @for perk in &perk_list {
                    article.perk {
                        h3 { (s(perk, "title")) }
                        p { (s(perk, "description")) }
                        p.hint { "Honoured by " strong { (s(perk, "honouring_brand")) }
                            @if s(perk, "funding_brand") != s(perk, "honouring_brand") { " · funded by " (s(perk, "funding_brand")) } }
                        p.cost { (layout::number(i(perk, "cost_points"))) " points" }
                        @if let Some(left) = perk["remaining_stock"].as_i64() { p.hint { (left) " left" } }
                        form method="post" action="/console/me/redeem" {
                            (guard(&signed))
                            input type="hidden" name="plugin" value=(s(perk, "plugin"));
                            input type="hidden" name="perk_id" value=(s(perk, "id"));
                            input type="hidden" name="cost" value=(i(perk, "cost_points"));
                            @if perk["affordable"].as_bool() == Some(true) {
                                button type="submit" data-perk=(s(perk, "id")) { "Redeem" }
                            } @else {
                                button type="submit" disabled { "Not enough points" }
                            }
                        }
                    }
                }
            }
            @if !unavailable.is_empty() {
                p.hint { "Some brands' perks cannot be shown right now: "
                    (unavailable.iter().map(|u| s(u, "plugin")).collect::<Vec<_>>().join(", ")) "." }
            }
        }
        div.grid {
            section.card.pass #pass {
                h2 { "Member pass" }
                img src="/console/me/pass.svg" alt="Your signed member pass as a QR code: show it at the counter";
                p.hint { "Works offline: the counter checks its signature." }
            }
            section.card #coupons {
                h2 { "My coupons" }
                @if live_coupons.is_empty() { p { "No coupons to use." } } @else {
                    ul { @for c in &live_coupons {
                        li { strong { (s(c, "code")) } " · " (s(c, "title")) " at " (s(c, "honouring_brand"))
                            " · " (badge(s(c, "status"))) " · until " (layout::day(i(c, "expires_at_ms"))) }
                    } }
                }
            }
        }
    };
    Ok(page("My card", &signed, body))
}

#[derive(Debug, Deserialize)]
struct RedeemForm {
    csrf: Option<String>,
    idem: Option<String>,
    plugin: Option<String>,
    perk_id: Option<String>,
    cost: Option<String>,
}

async fn redeem(
    State(console): State<Console>,
    signed: Signed,
    Form(form): Form<RedeemForm>,
) -> Result<Response, PageError> {
    signed.check_csrf(form.csrf.as_deref())?;
    let member = me(&console, &signed).await?;
    let (plugin, perk) = (
        form.plugin.unwrap_or_default(),
        form.perk_id.unwrap_or_default(),
    );
    // The cost the member saw: if the plugin changed it since, the API refuses
    // (`perk_cost_changed`) rather than charge a different price.
    let expected = form
        .cost
        .as_deref()
        .and_then(|c| c.trim().parse::<i64>().ok());
    let path = format!(
        "/members/{}/perks/{}/{}/redeem",
        enc(s(&member, "id")),
        enc(&plugin),
        enc(&perk)
    );
    let redemption = call::post(
        &console,
        &signed,
        &path,
        &json!({ "expected_cost_points": expected }),
        form.idem.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/console/me?redeemed={}#redeemed",
        enc(s(&redemption, "id"))
    ))
    .into_response())
}

async fn pass_svg(State(console): State<Console>, signed: Signed) -> Result<Response, PageError> {
    let member = me(&console, &signed).await?;
    let answer = call::send(
        &console,
        &signed,
        Method::GET,
        &format!("/members/{}/pass.svg", enc(s(&member, "id"))),
        None,
        None,
    )
    .await?
    .ok()?;
    let mut response = answer.body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    Ok(response)
}
