//! Plugins: the review queue, a version's page (manifest, budgets against the platform's
//! maxima, capabilities, signatures, dry-run diff, shadow results, live numbers and charts),
//! the lifecycle actions with confirmation and a reason, and co-signing.
//!
//! Admins see every version; a brand sees the versions whose manifest names it (the API's
//! rule), and another brand's version is a 404 here as it is there.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::access::Role;
use crate::interfaces::console::call::{self, enc};
use crate::interfaces::console::charts::{self, Series};
use crate::interfaces::console::layout::{self, badge, guard, page, s, PageError};
use crate::interfaces::console::session::Signed;
use crate::interfaces::console::Console;

/// Recorded calls shown on a version page (the CLI's `coalition plugin receipts` pages on).
const RECEIPTS_SHOWN: i64 = 20;

/// Recorded inputs a dry run from the console replays per hook by default.
const DRY_RUN_INPUTS: i64 = 50;

/// The review queue, the version page and its forms.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/plugins", get(queue))
        .route("/console/plugins/{id}", get(version_page))
        .route("/console/plugins/{id}/dry-run", post(dry_run))
        .route("/console/plugins/{id}/action", post(action))
        .route("/console/plugins/{id}/cosign", post(cosign))
}

/// Review states, in the order a version moves through them.
const QUEUE: [(&str, &str); 3] = [
    (
        "Waiting for review",
        "uploaded, validated or waiting for a co-signature",
    ),
    ("Approved", "ready to deploy or running as a canary"),
    ("Serving", "active versions"),
];

fn stage(status: &str) -> usize {
    match status {
        "uploaded" | "validated" | "awaiting_cosign" => 0,
        "approved" => 1,
        "active" => 2,
        _ => 3,
    }
}

fn list(value: &Value, field: &str) -> String {
    value[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Versions a brand's co-signature requests are read from at most (each is one status call).
const MAX_COSIGN_LOOKUPS: usize = 20;

async fn queue(State(console): State<Console>, signed: Signed) -> Result<Markup, PageError> {
    let versions = call::get(&console, &signed, "/plugins").await?;
    let versions = versions.as_array().cloned().unwrap_or_default();
    // A brand's co-signature requests: versions waiting for a signature that its brand owes.
    let mut requests = Vec::new();
    if signed.0.principal.role == Role::Brand {
        for v in versions
            .iter()
            .filter(|v| s(v, "status") == "awaiting_cosign")
            .take(MAX_COSIGN_LOOKUPS)
        {
            let path = format!("/plugins/{}", enc(s(v, "id")));
            if let Some(status) = call::get_optional(&console, &signed, &path).await {
                if cosign_is_mine(&signed, &status) {
                    requests.push(status);
                }
            }
        }
    }
    let table = |items: Vec<&Value>| {
        html! {
            div.scroll { table {
                thead { tr {
                    th { "Plugin" } th { "Version" } th { "Status" } th { "Brands" } th { "WIT" }
                    th { "Uploaded by" } th { "Breaker" } th { "Since" }
                } }
                tbody { @for v in items { tr {
                    td { a href={"/console/plugins/" (s(v, "id"))} { (s(v, "name")) } }
                    td { (s(v, "version")) }
                    td { (badge(s(v, "status"))) }
                    td { (list(v, "brands")) }
                    td { code { (s(v, "wit")) } }
                    td { (v["uploaded_by_brand"].as_str().unwrap_or("platform")) }
                    td { (badge(s(v, "breaker"))) }
                    td { (layout::when(v["created_at"].as_i64().unwrap_or_default())) }
                } } }
            } }
        }
    };
    let body = html! {
        h1 { "Plugins" }
        @if signed.0.principal.role == Role::Brand {
            p.hint { "Versions whose manifest names your brand. Upload with "
                code { "coalition plugin upload" } "; co-sign from a version's page." }
            section.card #cosign-requests {
                h2 { "Waiting for your co-signature (" (requests.len()) ")" }
                @if requests.is_empty() { p { "None." } } @else {
                    ul { @for r in &requests { li {
                        a href={"/console/plugins/" (s(r, "id"))} { (s(r, "name")) " " (s(r, "version")) }
                        " uploaded by " (r["uploaded_by_brand"].as_str().unwrap_or("platform"))
                    } } }
                }
            }
        }
        @for (i, (title, hint)) in QUEUE.iter().enumerate() {
            @let items: Vec<&Value> = versions.iter().filter(|v| stage(s(v, "status")) == i).collect();
            section.card {
                h2 { (title) " (" (items.len()) ")" }
                p.hint { (hint) }
                @if items.is_empty() { p { "None." } } @else { (table(items)) }
            }
        }
        @let closed: Vec<&Value> = versions.iter().filter(|v| stage(s(v, "status")) == 3).collect();
        details.card {
            summary { "Rejected and retired (" (closed.len()) ")" }
            (table(closed))
        }
    };
    Ok(page("Plugins", &signed, body))
}

#[derive(Debug, Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

async fn version_page(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
    Query(query): Query<DoneQuery>,
) -> Result<Markup, PageError> {
    render_version(&console, &signed, &id, query.done.as_deref(), None).await
}

async fn render_version(
    console: &Console,
    signed: &Signed,
    id: &str,
    done: Option<&str>,
    dry_run: Option<Value>,
) -> Result<Markup, PageError> {
    let base = format!("/plugins/{}", enc(id));
    let status = call::get(console, signed, &base).await?;
    let package = call::get_optional(console, signed, &format!("{base}/package")).await;
    let stats = call::get_optional(console, signed, &format!("{base}/stats")).await;
    let receipts = call::get_optional(
        console,
        signed,
        &format!("{base}/receipts?limit={RECEIPTS_SHOWN}"),
    )
    .await;
    let admin = signed.0.principal.role == Role::Admin;
    let shadow = if admin {
        call::get_optional(console, signed, &format!("{base}/shadow-results?limit=20")).await
    } else {
        None
    };
    let name = s(&status, "name").to_owned();
    let title = format!("{name} {}", s(&status, "version"));
    let body = html! {
        p { a href="/console/plugins" { "← Plugins" } }
        h1 { (title) " " (badge(s(&status, "status"))) }
        @if let Some(done) = done {
            p.notice role="status" { "Done: " (done.replace('_', " ")) "." }
        }
        @if !s(&status, "status_reason").is_empty() {
            p.hint { "Reason: " (s(&status, "status_reason")) }
        }
        div.grid {
            section.card { h2 { "Version" } (facts(&status, package.as_ref())) }
            section.card { h2 { "Signatures" } (signatures(&status)) }
        }
        @if let Some(package) = &package {
            div.grid {
                section.card { h2 { "Capabilities" } (capabilities(package)) }
                section.card { h2 { "Budgets against the platform's maxima" } (budgets(package)) }
            }
            details.card {
                summary { "Manifest (byte for byte as signed)" }
                pre { (s(package, "manifest")) }
            }
        }
        @if cosign_is_mine(signed, &status) {
            @if let Some(package) = &package { (cosign_form(signed, &status, package)) }
        }
        @if admin || status["uploaded_by_brand"].as_str() == signed.0.principal.brand_id.as_deref() {
            section.card #dry-run {
                h2 { "Dry run against recorded inputs" }
                p.hint { "Replays the newest recorded inputs of this plugin's hooks on this version and shows \
                    which decisions change. Nothing is stored or applied." }
                form method="post" action={"/console/plugins/" (id) "/dry-run"} {
                    (guard(signed))
                    label for="limit" { "Inputs per hook" }
                    input #limit type="number" name="limit" min="1" max="500" value=(DRY_RUN_INPUTS);
                    button type="submit" { "Run dry run" }
                }
                @if let Some(report) = &dry_run { (dry_run_table(report)) }
            }
        }
        @if let Some(stats) = &stats { (live(stats)) }
        @if let Some(receipts) = &receipts { (receipts_table(receipts)) }
        @if let Some(shadow) = &shadow { (shadow_table(shadow)) }
        @if admin { (actions(signed, id, &name, &status)) }
    };
    Ok(page(&title, signed, body))
}

fn facts(status: &Value, package: Option<&Value>) -> Markup {
    let canary = status["canary_basis_points"].as_i64();
    html! {
        dl.facts {
            dt { "WIT" } dd { code { (s(status, "wit")) } }
            dt { "Hooks" } dd { (list(status, "hooks")) }
            dt { "Brands" } dd { (list(status, "brands")) }
            dt { "Uploaded by" } dd { (status["uploaded_by_brand"].as_str().unwrap_or("platform")) }
            dt { "Uploaded" } dd { (layout::when(status["created_at"].as_i64().unwrap_or_default())) }
            @if let Some(package) = package {
                dt { "Size" } dd { (layout::number(package["component_bytes"].as_i64().unwrap_or_default())) " bytes" }
            }
            dt { "Component sha256" } dd { code { (s(status, "component_sha256")) } }
            dt { "Content hash" } dd { code { (status["content_sha256"].as_str().unwrap_or("— (installed directly)")) } }
            dt { "Serving" } dd {
                @if status["loaded"].as_bool() == Some(true) { "loaded on this node" } @else { "not loaded" }
                @if let Some(bp) = canary { " · canary " (bp / 100) "." (format!("{:02}", bp % 100)) "% of members" }
                @if status["shadow"].as_bool() == Some(true) { " · shadow" }
                @if status["killed"].as_bool() == Some(true) { " · " (badge("killed")) }
            }
            @if !s(status, "description").is_empty() { dt { "Description" } dd { (s(status, "description")) } }
        }
    }
}

fn signatures(status: &Value) -> Markup {
    let sigs = status["signatures"].as_array().cloned().unwrap_or_default();
    let missing = list(status, "cosignatures_missing");
    html! {
        @if sigs.is_empty() { p { "No signatures (installed directly by the platform)." } } @else {
            div.scroll { table {
                thead { tr { th { "Brand" } th { "Key id" } th { "Kind" } th { "When" } } }
                tbody { @for sig in &sigs { tr {
                    td { (s(sig, "brand_id")) } td { code { (s(sig, "key_id")) } }
                    td { (s(sig, "kind")) } td { (layout::when(sig["created_at"].as_i64().unwrap_or_default())) }
                } } }
            } }
        }
        @if !missing.is_empty() { p { (badge("awaiting_cosign")) " still to co-sign: " strong { (missing) } } }
    }
}

fn capabilities(package: &Value) -> Markup {
    let items = |field: &str| -> Vec<String> {
        package[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let imports = items("imports");
    let exports = items("exports");
    html! {
        h3 { "Imports (what it may call)" }
        @if package["imports"].is_null() { p.hint { "Known once validated." } }
        @else if imports.is_empty() { p { "Nothing: a pure function of its input." } }
        @else { ul #imports { @for i in &imports { li { code { (i) } } } } }
        h3 { "Exports" }
        ul #exports { @for e in &exports { li { code { (e) } } } }
    }
}

fn budgets(package: &Value) -> Markup {
    let max = &package["platform_maxima"];
    let share = |value: i64, max: i64| -> i64 {
        if max <= 0 {
            0
        } else {
            (value.saturating_mul(100) / max).clamp(0, 100)
        }
    };
    let rows = package["budgets"].as_array().cloned().unwrap_or_default();
    html! {
        div.scroll { table {
            thead { tr { th { "Hook" } th.num { "Fuel" } th.num { "Memory MiB" } th.num { "Deadline ms" } } }
            tbody {
                @for b in &rows {
                    tr {
                        td { (s(b, "hook")) }
                        @for (field, cap) in [("fuel", "fuel"), ("memory_mib", "memory_mib"), ("deadline_ms", "deadline_ms")] {
                            @let value = b[field].as_i64().unwrap_or_default();
                            @let limit = max[cap].as_i64().unwrap_or_default();
                            td.num {
                                (layout::number(value)) " / " (layout::number(limit))
                                div.bar role="img" aria-label={(share(value, limit)) "% of the maximum"} {
                                    span style={"width:" (share(value, limit)) "%"} {}
                                }
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn cosign_is_mine(signed: &Signed, status: &Value) -> bool {
    let Some(brand) = signed.0.principal.brand_id.as_deref() else {
        return false;
    };
    signed.0.principal.role == Role::Brand
        && status["cosignatures_missing"]
            .as_array()
            .is_some_and(|m| m.iter().any(|b| b.as_str() == Some(brand)))
}

fn cosign_form(signed: &Signed, status: &Value, package: &Value) -> Markup {
    let id = s(status, "id");
    let hash = s(package, "content_sha256");
    html! {
        section.card #cosign {
            h2 { "Co-sign this package" }
            p { "Your signature says your brand reviewed exactly these bytes: the manifest above and the \
                component with sha256 " code { (s(package, "component_sha256")) } ". The content hash you sign is "
                code { (hash) } "." }
            form method="post" action={"/console/plugins/" (id) "/cosign"} data-cosign=(hash) {
                (guard(signed))
                label for="key_id" { "Your approved signing key's id" }
                input #key_id type="text" name="key_id" required maxlength="64";
                label for="secret" { "Secret key (64 hex characters; signed here in your browser and never sent)" }
                textarea #secret data-secret autocomplete="off" spellcheck="false" {}
                label for="signature" { "…or a signature made elsewhere (128 hex characters)" }
                input #signature type="text" name="signature" maxlength="128";
                p.hint data-status role="status" {}
                button type="submit" { "Co-sign" }
            }
            p.hint { "With the CLI instead, after downloading the package with "
                code { "coalition plugin package " (id) " --out pkg" } ":" }
            @let stem = format!("pkg/{}-{}", s(status, "name"), s(status, "version"));
            pre { "coalition plugin cosign " (id) " --manifest " (stem) ".toml --component " (stem) ".wasm \\\n  --key-id <your key id> --secret-key <your secret key file>" }
        }
    }
}

fn dry_run_table(report: &Value) -> Markup {
    let items = report["items"].as_array().cloned().unwrap_or_default();
    let compact = |v: &Value| -> String {
        if v.is_null() {
            "—".to_owned()
        } else {
            serde_json::to_string(v).unwrap_or_default()
        }
    };
    html! {
        p #dry-run-summary {
            strong { (report["differing"].as_i64().unwrap_or_default()) " of "
                (report["inputs"].as_i64().unwrap_or_default()) " decisions change" }
            " (baseline: " (s(report, "baseline"))
            @if let Some(active) = report["active_version"].as_str() { ", active version " (active) }
            ")."
        }
        div.scroll { table #dry-run-table {
            thead { tr { th { "Input" } th { "Hook" } th { "Recorded by" } th { "Before" } th { "After" }
                th.num { "Fuel before → after" } th.num { "µs before → after" } } }
            tbody { @for item in &items {
                tr class=(if item["differs"].as_bool() == Some(true) { "changed" } else { "" }) {
                    td { code { (s(item, "receipt_id").chars().take(12).collect::<String>()) } }
                    td { (s(item, "hook")) }
                    td { (s(item, "recorded_by")) }
                    td { code { (compact(&item["active_output"])) } }
                    td {
                        @if let Some(err) = item["candidate_error"].as_str() { span.error { (err) } }
                        @else { code { (compact(&item["candidate_output"])) } }
                    }
                    td.num { (item["active_fuel_used"].as_i64().unwrap_or_default()) " → "
                        (item["candidate_fuel_used"].as_i64().map(|f| f.to_string()).unwrap_or_default()) }
                    td.num { (item["active_duration_us"].as_i64().unwrap_or_default()) " → "
                        (item["candidate_duration_us"].as_i64().map(|f| f.to_string()).unwrap_or_default()) }
                }
            } }
        } }
    }
}

fn live(stats: &Value) -> Markup {
    let hooks = stats["hooks"].as_array().cloned().unwrap_or_default();
    let failures = stats["failures"].as_array().cloned().unwrap_or_default();
    let daily = stats["daily"].as_array().cloned().unwrap_or_default();
    let series = |name: &str, field: &str| Series {
        name: name.to_owned(),
        points: daily
            .iter()
            .map(|d| {
                (
                    d["day_ms"].as_i64().unwrap_or_default(),
                    d[field].as_f64().unwrap_or_default(),
                )
            })
            .collect(),
    };
    let failure_bars: Vec<(String, i64)> = failures
        .iter()
        .map(|f| {
            (
                format!("{} {}", s(f, "hook"), s(f, "code")),
                f["count"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    html! {
        section.card #live {
            h2 { "Live calls" }
            p { "Breaker on this node: " (badge(s(stats, "breaker"))) }
            div.scroll { table {
                thead { tr { th { "Hook" } th.num { "Calls" } th.num { "Fuel p50" } th.num { "Fuel p99" }
                    th.num { "µs p50" } th.num { "µs p99" } } }
                tbody { @for h in &hooks { tr {
                    td { (s(h, "hook")) }
                    @for f in ["calls", "fuel_p50", "fuel_p99", "duration_us_p50", "duration_us_p99"] {
                        td.num { (layout::number(h[f].as_i64().unwrap_or_default())) }
                    }
                } } }
            } }
            div.charts {
                (charts::lines_over_days("Calls and failures per day", "count",
                    &[series("calls", "calls"), series("failures", "failures")]))
                (charts::lines_over_days("Latency per day", "µs",
                    &[series("p50", "duration_us_p50"), series("p99", "duration_us_p99")]))
                (charts::lines_over_days("Fuel per call, median", "fuel", &[series("fuel p50", "fuel_p50")]))
                (charts::bars("Failures by kind", "count", &failure_bars))
            }
        }
    }
}

fn receipts_table(calls: &Value) -> Markup {
    let items = calls.as_array().cloned().unwrap_or_default();
    html! {
        details.card #receipts {
            summary { "Recent calls with their receipts (" (items.len()) ")" }
            p.hint { "Each decision's receipt: input and output hashes and fuel, enough to replay it bit for bit. "
                "Download them all with " code { "coalition plugin receipts" } "." }
            @if items.is_empty() { p { "No recorded calls." } } @else {
                div.scroll { table {
                    thead { tr { th { "When" } th { "Hook" } th { "Subject" } th.num { "Fuel" } th.num { "µs" }
                        th { "Input sha256" } th { "Decision" } } }
                    tbody { @for c in &items {
                        @let r = &c["receipt"];
                        tr {
                            td { (layout::when(r["created_at"].as_i64().unwrap_or_default())) }
                            td { (s(r, "hook")) }
                            td { (s(r, "subject_kind")) " " code { (s(r, "subject_id")) } }
                            td.num { (layout::number(r["fuel_used"].as_i64().unwrap_or_default())) }
                            td.num { (layout::number(r["duration_us"].as_i64().unwrap_or_default())) }
                            td { code { (s(r, "input_sha256").chars().take(16).collect::<String>()) "…" } }
                            td { code { (serde_json::to_string(&r["output"]).unwrap_or_default()) } }
                        }
                    } }
                } }
            }
        }
    }
}

fn shadow_table(results: &Value) -> Markup {
    let items = results.as_array().cloned().unwrap_or_default();
    html! {
        details.card {
            summary { "Shadow results (" (items.len()) ")" }
            @if items.is_empty() { p { "No shadow comparisons recorded." } } @else {
                div.scroll { table {
                    thead { tr { th { "When" } th { "Hook" } th { "Same decision" } } }
                    tbody { @for r in &items { tr {
                        td { (layout::when(r["created_at"].as_i64().unwrap_or_default())) }
                        td { (s(r, "hook")) }
                        td { (r["same"].as_bool().map(|m| if m { "yes" } else { "no" }).unwrap_or("—")) }
                    } } }
                } }
            }
        }
    }
}

/// The admin's actions that fit the version's state.
fn actions(signed: &Signed, id: &str, name: &str, status: &Value) -> Markup {
    let state = s(status, "status");
    let canary = status["canary_basis_points"].as_i64().is_some();
    let killed = status["killed"].as_bool() == Some(true);
    let mut forms: Vec<(&str, &str, bool)> = Vec::new();
    match state {
        "validated" | "awaiting_cosign" | "uploaded" => {
            forms.push(("approve", "Approve", false));
            forms.push(("reject", "Reject", true));
        }
        "approved" => {
            if canary {
                forms.push(("promote", "Promote the canary to active", false));
                forms.push(("rollback", "End the canary (roll back)", true));
            } else {
                forms.push(("deploy", "Deploy to every member", false));
                forms.push(("canary", "Deploy as a canary", false));
            }
            forms.push(("reject", "Reject", true));
        }
        "active" => forms.push(("rollback", "Roll back to the previous version", true)),
        _ => {}
    }
    if matches!(state, "active" | "approved") {
        if killed {
            forms.push(("resume", "Resume the plugin", false));
        } else {
            forms.push(("kill", "Kill switch: stop the plugin everywhere", true));
        }
    }
    html! {
        section.card #actions {
            h2 { "Actions" }
            p.hint { "Every action needs a reason and lands in the audit log." }
            @if forms.is_empty() { p { "No actions in this state." } }
            div.actions {
                @for (action, label, danger) in &forms {
                    form method="post" action={"/console/plugins/" (id) "/action"} data-action=(action) {
                        (guard(signed))
                        input type="hidden" name="action" value=(action);
                        input type="hidden" name="name" value=(name);
                        h3 { (label) }
                        @if *action == "canary" {
                            label for={"percent-" (action)} { "Share of members, %" }
                            input id={"percent-" (action)} type="number" name="percent" min="1" max="99" value="20" required;
                        }
                        label for={"reason-" (action)} { "Reason" }
                        textarea id={"reason-" (action)} name="reason" required maxlength="500" {}
                        label.check { input type="checkbox" name="confirm" value="yes" required; "I confirm" }
                        button class=(if *danger { "danger" } else { "" }) type="submit" { (label) }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct DryRunForm {
    csrf: Option<String>,
    limit: Option<String>,
}

async fn dry_run(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<DryRunForm>,
) -> Result<Markup, PageError> {
    signed.check_csrf(form.csrf.as_deref())?;
    let limit = match form.limit.as_deref().map(str::trim) {
        None | Some("") => DRY_RUN_INPUTS,
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| PageError::bad_form("inputs per hook is a whole number"))?,
    };
    let answer = call::send(
        &console,
        &signed,
        axum::http::Method::POST,
        &format!("/plugins/{}/dry-run", enc(&id)),
        Some(&json!({ "limit": limit })),
        None,
    )
    .await?
    .ok()?;
    render_version(&console, &signed, &id, None, Some(answer.json())).await
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    idem: Option<String>,
    action: Option<String>,
    name: Option<String>,
    reason: Option<String>,
    confirm: Option<String>,
    percent: Option<String>,
}

async fn action(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    signed.check_csrf(form.csrf.as_deref())?;
    let reason = form.reason.unwrap_or_default().trim().to_owned();
    if form.confirm.as_deref() != Some("yes") {
        return Err(PageError::bad_form(
            "tick “I confirm” to carry out the action",
        ));
    }
    if reason.is_empty() {
        return Err(PageError::bad_form(
            "give a reason; it goes to the audit log",
        ));
    }
    let action = form.action.unwrap_or_default();
    let name = enc(form.name.as_deref().unwrap_or_default());
    let version = format!("/plugins/{}", enc(&id));
    let (path, body) = match action.as_str() {
        "approve" | "reject" | "deploy" => {
            (format!("{version}/{action}"), json!({ "reason": reason }))
        }
        "canary" => {
            let percent: i64 = form
                .percent
                .as_deref()
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| PageError::bad_form("the canary share is a whole percentage"))?;
            if !(1..=99).contains(&percent) {
                return Err(PageError::bad_form("the canary share is 1 to 99 %"));
            }
            (
                format!("{version}/canary"),
                json!({ "basis_points": percent * 100, "reason": reason }),
            )
        }
        "promote" | "rollback" | "kill" | "resume" => (
            format!("/plugin-names/{name}/{action}"),
            json!({ "reason": reason }),
        ),
        _ => return Err(PageError::bad_form("unknown action")),
    };
    let idem = form.idem.unwrap_or_default();
    call::post(&console, &signed, &path, &body, &idem).await?;
    Ok(Redirect::to(&format!("/console/plugins/{}?done={action}", enc(&id))).into_response())
}

#[derive(Debug, Deserialize)]
struct CosignForm {
    csrf: Option<String>,
    idem: Option<String>,
    key_id: Option<String>,
    signature: Option<String>,
}

async fn cosign(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CosignForm>,
) -> Result<Response, PageError> {
    signed.check_csrf(form.csrf.as_deref())?;
    let signature = form.signature.unwrap_or_default().trim().to_owned();
    if signature.is_empty() {
        return Err(PageError::bad_form(
            "no signature: paste your secret key to sign here, or a signature made with the CLI",
        ));
    }
    let body = json!({
        "key_id": form.key_id.unwrap_or_default().trim(),
        "signature": signature,
    });
    let idem = form.idem.unwrap_or_default();
    call::post(
        &console,
        &signed,
        &format!("/plugins/{}/cosign", enc(&id)),
        &body,
        &idem,
    )
    .await?;
    Ok(Redirect::to(&format!("/console/plugins/{}?done=co-signed", enc(&id))).into_response())
}
