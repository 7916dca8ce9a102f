//! Parked settlement events: a plugin that fails on one event must not stall its later events.
//! The failing event is parked with its reason and retried with backoff; the breaker's probe
//! goes to healthy events; an admin lists parked events, sees why they failed and retries them.
//! Fixture: `settle-gap` settles the mall-funded parking perks but traps on `valet-parking`.

use coalition::ledger::outbox::EventKind;
use coalition::workflows::settlement::parking::{
    next_retry_at, RETRY_BASE_DELAY_MS, RETRY_MAX_DELAY_MS, RETRY_MAX_FAILURES,
};
use coalition_runtime::breaker::{BREAKER_COOL_DOWN, BREAKER_FAILURE_THRESHOLD};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fixtures::{create_brand, create_key, idem};
use crate::helpers::TestApp;
use crate::settlement::{install, now, record, run_settlement, Direct};

const DAY_MS: i64 = 86_400_000;
/// The perk the fixture's share table lacks: settling it traps.
const VALET: &str = "valet-parking";
/// A perk it settles.
const HOUR: &str = "free-parking-hour";

async fn setup(app: &TestApp) {
    create_brand(app, "mall").await;
    create_brand(app, "parking").await;
    install(app, "settle-gap").await;
}

/// A 6.00 parking perk funded by the mall, governed by settle-gap, happening now.
async fn perk(app: &TestApp, reference: &str, subject: &str) -> String {
    record(
        app,
        Direct {
            kind: EventKind::PerkRedeemed,
            funding: "mall",
            honouring: "parking",
            reference,
            plugin: Some("settle-gap"),
            points: 0,
            value_cents: 600,
            subject: subject.to_owned(),
            reverses: None,
            at: now(app),
        },
    )
    .await
}

async fn parked_page(app: &TestApp, query: &str) -> Value {
    let (status, page) = app
        .get(&format!("/settlement/parked{query}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect()
}

async fn parked_event(app: &TestApp, id: &str) -> Value {
    let (status, event) = app
        .get(&format!("/settlement/parked/{id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    event
}

/// The breaker state of a plugin on this node, as `GET /plugins` shows it.
async fn breaker(app: &TestApp, plugin: &str) -> String {
    let (status, plugins) = app.get("/plugins", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{plugins}");
    plugins
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == plugin)
        .unwrap_or_else(|| panic!("{plugin} in {plugins}"))["breaker"]
        .as_str()
        .expect("breaker")
        .to_owned()
}

/// Ids of the settled events, sorted.
async fn settled(app: &TestApp) -> Vec<String> {
    sqlx::query_as::<_, (String,)>("SELECT event_id FROM settlement_runs ORDER BY event_id")
        .fetch_all(app.state.store.read())
        .await
        .expect("runs")
        .into_iter()
        .map(|(id,)| id)
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn retry(app: &TestApp, key: &str, idem_key: &str, body: &Value) -> (StatusCode, Value) {
    app.post("/settlement/parked/retry", key, idem_key, body)
        .await
}

// ---------------------------------------------------------------------------------------------
// The regression: the failing event took every half-open probe, so nothing after it settled.

crate::both_backends!(
    one_failing_settlement_event_does_not_stall_the_plugins_later_events,
    |app| async move {
        setup(&app).await;
        let bad = perk(&app, VALET, "r-valet").await;
        // The plugin fails on this event run after run while nothing else of it is pending:
        // more consecutive failures than its breaker tolerates.
        for _ in 0..=BREAKER_FAILURE_THRESHOLD {
            let report = run_settlement(&app).await;
            assert_eq!(report["settled"], 0, "{report}");
            assert_eq!(report["held"], 1, "{report}");
            app.clock.advance_ms(RETRY_MAX_DELAY_MS);
        }

        // Later, healthy events of the same plugin settle.
        let good = vec![perk(&app, HOUR, "r-1").await, perk(&app, HOUR, "r-2").await];
        let report = run_settlement(&app).await;
        assert_eq!(report["settled"], 2, "{report}");
        assert_eq!(settled(&app).await, sorted(good.clone()));
        let (status, page) = app
            .get("/settlement/periods/2026-03/lines", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let mut lines: Vec<(String, String, i64, String)> = page["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| {
                (
                    l["payer"].as_str().expect("payer").to_owned(),
                    l["payee"].as_str().expect("payee").to_owned(),
                    l["amount_cents"].as_i64().expect("amount"),
                    l["rule"].as_str().expect("rule").to_owned(),
                )
            })
            .collect();
        lines.sort();
        let line = |payee: &str, cents| {
            (
                "mall".to_owned(),
                payee.to_owned(),
                cents,
                "settle-gap@1.0.0".to_owned(),
            )
        };
        assert_eq!(
            lines,
            vec![
                line("parking", 480),
                line("parking", 480),
                line("platform", 30),
                line("platform", 30),
            ]
        );

        // The failing event is parked with its reason; the plugin's breaker is closed.
        let page = parked_page(&app, "").await;
        assert_eq!(ids(&page), vec![bad.clone()], "{page}");
        let event = &page["items"][0];
        assert_eq!(event["plugin"], "settle-gap", "{event}");
        assert_eq!(event["version"], "1.0.0", "{event}");
        let code = event["problem_code"].as_str().expect("code");
        assert!(code.starts_with("trap"), "{event}");
        let failures = i64::from(BREAKER_FAILURE_THRESHOLD) + 2;
        assert_eq!(event["failures"], failures, "{event}");
        assert_eq!(event["waits_for_admin"], false, "{event}");
        assert_eq!(
            event["next_retry_at_ms"].as_i64(),
            next_retry_at(now(&app), failures),
            "{event}"
        );
        assert_eq!(breaker(&app, "settle-gap").await, "closed");

        // And the plugin's events keep settling.
        let third = perk(&app, HOUR, "r-3").await;
        let report = run_settlement(&app).await;
        assert_eq!(report["settled"], 1, "{report}");
        assert!(settled(&app).await.contains(&third));
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// The breaker: opened by distinct failing events, as it should be; then its probe goes to a
// healthy event, and the parked events' failed retries do not open it again.

crate::both_backends!(
    the_breakers_probe_goes_to_a_healthy_event_never_to_a_parked_one,
    |app| async move {
        setup(&app).await;
        let threshold = usize::try_from(BREAKER_FAILURE_THRESHOLD).expect("small");
        let mut bad = Vec::new();
        for i in 0..threshold {
            bad.push(perk(&app, VALET, &format!("r-valet-{i}")).await);
        }
        let report = run_settlement(&app).await;
        assert_eq!(report["parked"], threshold, "{report}");
        assert_eq!(breaker(&app, "settle-gap").await, "open");

        // A healthy event while the breaker is open: held, not parked (it never ran).
        let good = perk(&app, HOUR, "r-1").await;
        let report = run_settlement(&app).await;
        assert_eq!(report["settled"], 0, "{report}");
        assert_eq!(report["held"], 1, "{report}");
        assert_eq!(report["parked"], 0, "{report}");
        assert_eq!(report["waiting"], threshold, "{report}");
        assert_eq!(ids(&parked_page(&app, "").await), bad);

        // Past the cool-down and the first backoff: the healthy event is the probe and closes
        // the breaker; the parked events are retried after it, fail, and leave it closed.
        let cool_down_ms = i64::try_from(BREAKER_COOL_DOWN.as_millis()).expect("ms");
        app.clock.advance_ms(RETRY_BASE_DELAY_MS.max(cool_down_ms));
        let report = run_settlement(&app).await;
        assert_eq!(report["settled"], 1, "{report}");
        assert_eq!(report["retried"], threshold, "{report}");
        assert_eq!(report["parked"], threshold, "{report}");
        assert_eq!(settled(&app).await, vec![good.clone()]);
        assert_eq!(breaker(&app, "settle-gap").await, "closed");

        // Later events settle at once.
        let later = perk(&app, HOUR, "r-2").await;
        let report = run_settlement(&app).await;
        assert_eq!(report["settled"], 1, "{report}");
        assert_eq!(report["waiting"], threshold, "{report}");
        assert_eq!(settled(&app).await, sorted(vec![good, later]));

        // The parked events, page by page, oldest first.
        let mut seen = Vec::new();
        let mut query = "?limit=2".to_owned();
        loop {
            let page = parked_page(&app, &query).await;
            assert!(page["items"].as_array().expect("items").len() <= 2);
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, bad);
        let (status, body) = app.get("/settlement/parked?limit=0", &app.admin_key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// Backoff on the injected clock.

crate::both_backends!(
    a_parked_event_is_retried_with_exponential_backoff_then_waits_for_an_admin,
    |app| async move {
        setup(&app).await;
        let bad = perk(&app, VALET, "r-valet").await;
        let report = run_settlement(&app).await;
        assert_eq!(report["parked"], 1, "{report}");
        let mut delays = Vec::new();
        for failures in 1..RETRY_MAX_FAILURES {
            let event = parked_event(&app, &bad).await;
            assert_eq!(event["failures"], failures, "{event}");
            assert_eq!(event["attempts"], failures, "{event}");
            let next = event["next_retry_at_ms"].as_i64().expect("next retry");
            assert_eq!(Some(next), next_retry_at(now(&app), failures), "{event}");
            delays.push(next - now(&app));
            // Not before its time...
            app.clock.set_ms(next - 1);
            let report = run_settlement(&app).await;
            assert_eq!(report["retried"], 0, "{report}");
            assert_eq!(report["waiting"], 1, "{report}");
            // ...and at its time.
            app.clock.set_ms(next);
            let report = run_settlement(&app).await;
            assert_eq!(report["retried"], 1, "{report}");
            assert_eq!(report["parked"], 1, "{report}");
        }
        // Doubling from the base delay, capped.
        assert_eq!(delays[0], RETRY_BASE_DELAY_MS);
        for pair in delays.windows(2) {
            assert_eq!(pair[1], (pair[0] * 2).min(RETRY_MAX_DELAY_MS), "{delays:?}");
        }
        assert_eq!(delays.last().copied(), Some(RETRY_MAX_DELAY_MS));

        // Out of retries: it waits for an admin, however long.
        let event = parked_event(&app, &bad).await;
        assert_eq!(event["failures"], RETRY_MAX_FAILURES, "{event}");
        assert_eq!(event["max_failures"], RETRY_MAX_FAILURES, "{event}");
        assert!(event["next_retry_at_ms"].is_null(), "{event}");
        assert_eq!(event["waits_for_admin"], true, "{event}");
        app.clock.advance_ms(7 * DAY_MS);
        let report = run_settlement(&app).await;
        assert_eq!(report["retried"], 0, "{report}");
        assert_eq!(report["waiting"], 1, "{report}");
        assert_eq!(
            parked_event(&app, &bad).await["attempts"],
            RETRY_MAX_FAILURES
        );
        let page = parked_page(&app, "?waiting_for_admin=true").await;
        assert_eq!(ids(&page), vec![bad.clone()]);
        let page = parked_page(&app, "?plugin=settle-trap").await;
        assert!(ids(&page).is_empty(), "{page}");
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// What admins and brands see, and an admin's retry.

crate::both_backends!(
    an_admin_sees_why_parked_events_failed_and_retries_them_audited_and_idempotent,
    |app| async move {
        setup(&app).await;
        create_brand(&app, "cinema").await;
        let bad = perk(&app, VALET, "r-valet").await;
        let other = perk(&app, VALET, "r-valet-2").await;
        let report = run_settlement(&app).await;
        assert_eq!(report["parked"], 2, "{report}");

        // Why it failed.
        let event = parked_event(&app, &bad).await;
        assert_eq!(event["plugin"], "settle-gap", "{event}");
        assert_eq!(event["version"], "1.0.0", "{event}");
        assert_eq!(event["kind"], "perk-redeemed", "{event}");
        assert_eq!(event["reference"], VALET, "{event}");
        let message = event["problem_message"].as_str().expect("message");
        assert!(message.contains("settle-gap@1.0.0"), "{event}");
        assert_eq!(event["held_reason"].as_str(), Some(message), "{event}");
        let (status, body) = app.get("/settlement/parked/nope", &app.admin_key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        // Brands see the parked events they are a party to, and only those; nobody but an
        // admin retries.
        let mall = create_key(&app, "brand", Some("mall"), None).await;
        let cinema = create_key(&app, "brand", Some("cinema"), None).await;
        let counter = create_key(&app, "counter", Some("mall"), None).await;
        let (status, page) = app.get("/settlement/parked", &mall).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page), vec![bad.clone(), other.clone()]);
        let (status, page) = app.get("/settlement/parked", &cinema).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(ids(&page).is_empty(), "{page}");
        let (status, body) = app.get("/settlement/parked?brand_id=mall", &cinema).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = app.get(&format!("/settlement/parked/{bad}"), &cinema).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = app.get(&format!("/settlement/parked/{bad}"), &mall).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.get("/settlement/parked", &counter).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let body = json!({ "event_ids": [bad], "reason": "share table fixed" });
        for key in [&mall, &counter] {
            let (status, problem) = retry(&app, key, &idem(), &body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        }

        // Bad requests release nothing.
        let (status, problem) =
            retry(&app, &app.admin_key, &idem(), &json!({ "reason": "x" })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        let (status, problem) = retry(
            &app,
            &app.admin_key,
            &idem(),
            &json!({ "event_ids": [bad, "nope"], "reason": "x" }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "settle_event_not_parked", "{problem}");
        assert_eq!(problem["extra"]["event_ids"], json!(["nope"]), "{problem}");
        assert_eq!(parked_event(&app, &bad).await["failures"], 1);

        // The admin retries one: due now, backoff started over, audited once however often
        // the request is replayed.
        app.clock.advance_ms(1_000);
        let key = idem();
        let (status, first) = retry(&app, &app.admin_key, &key, &body).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["released"], json!([bad]), "{first}");
        assert_eq!(first["more"], false, "{first}");
        assert_eq!(first["retry_at_ms"], now(&app), "{first}");
        let (status, again) = retry(&app, &app.admin_key, &key, &body).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, first);
        let (status, problem) = retry(
            &app,
            &app.admin_key,
            &key,
            &json!({ "event_ids": [other], "reason": "share table fixed" }),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["code"], "idempotency_key_reused", "{problem}");
        let event = parked_event(&app, &bad).await;
        assert_eq!(event["failures"], 0, "{event}");
        assert_eq!(event["next_retry_at_ms"], now(&app), "{event}");
        assert_eq!(event["release_reason"], "share table fixed", "{event}");
        assert!(
            event["released_by"]
                .as_str()
                .is_some_and(|a| a.starts_with("admin:")),
            "{event}"
        );
        let (status, audit) = app
            .get(
                &format!("/audit?subject_kind=settle_event&subject_id={bad}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let entries = audit.as_array().expect("entries");
        assert_eq!(entries.len(), 1, "{audit}");
        assert_eq!(entries[0]["action"], "settlement.retry", "{audit}");
        assert_eq!(entries[0]["reason"], "share table fixed", "{audit}");
        assert_eq!(entries[0]["details"]["plugin"], "settle-gap", "{audit}");
        assert_eq!(entries[0]["details"]["failures"], 1, "{audit}");

        // The next run retries it, and only it (the other's backoff has not passed).
        let report = run_settlement(&app).await;
        assert_eq!(report["retried"], 1, "{report}");
        assert_eq!(report["waiting"], 1, "{report}");
        assert_eq!(parked_event(&app, &bad).await["failures"], 1);

        // Every event the plugin failed on.
        let (status, report) = retry(
            &app,
            &app.admin_key,
            &idem(),
            &json!({ "plugin": "settle-gap", "reason": "share table fixed again" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["released"], json!([bad, other]), "{report}");
        let report = run_settlement(&app).await;
        assert_eq!(report["retried"], 2, "{report}");
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// The command line: `coalition settlement parked` and `coalition settlement retry`.

crate::both_backends!(
    the_command_line_lists_and_retries_parked_events,
    |app| async move {
        use coalition::app::cli::settlement::{run_command, SettlementCommand};
        setup(&app).await;
        let bad = perk(&app, VALET, "r-valet").await;
        run_settlement(&app).await;
        let config = (*app.state.config).clone();
        run_command(
            config.clone(),
            SettlementCommand::Parked {
                plugin: Some("settle-gap".into()),
                brand: None,
                waiting_for_admin: false,
            },
        )
        .await
        .expect("parked");
        let refused = run_command(
            config.clone(),
            SettlementCommand::Retry {
                event_ids: vec!["nope".into()],
                plugin: None,
                reason: "fixed".into(),
                run: false,
            },
        )
        .await;
        assert!(refused.is_err(), "an event that is not parked");
        run_command(
            config,
            SettlementCommand::Retry {
                event_ids: Vec::new(),
                plugin: Some("settle-gap".into()),
                reason: "share table fixed".into(),
                run: false,
            },
        )
        .await
        .expect("retry");
        let event = parked_event(&app, &bad).await;
        assert_eq!(event["failures"], 0, "{event}");
        assert_eq!(event["released_by"], "cli:settlement", "{event}");
        assert_eq!(event["release_reason"], "share table fixed", "{event}");
        let (_, audit) = app
            .get(
                &format!("/audit?subject_kind=settle_event&subject_id={bad}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(audit[0]["action"], "settlement.retry", "{audit}");
        assert_eq!(audit[0]["actor"], "cli:settlement", "{audit}");
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// The served OpenAPI document describes the routes as they answer.

crate::both_backends!(
    the_openapi_document_describes_the_parked_event_routes,
    |app| async move {
        let (status, doc) = app
            .call(reqwest::Method::GET, "/openapi.json", None, None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let ref_of = |op: &Value, status: &str| {
            op["responses"][status]["content"]["application/json"]["schema"]["$ref"].clone()
        };
        let list = &doc["paths"]["/settlement/parked"]["get"];
        let params: Vec<(&str, &str)> = list["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name"),
                    p["in"].as_str().expect("in"),
                )
            })
            .collect();
        assert_eq!(
            params,
            vec![
                ("brand_id", "query"),
                ("plugin", "query"),
                ("waiting_for_admin", "query"),
                ("limit", "query"),
                ("cursor", "query"),
            ]
        );
        assert_eq!(ref_of(list, "200"), "#/components/schemas/ParkedPage");
        let one = &doc["paths"]["/settlement/parked/{event_id}"]["get"];
        assert_eq!(one["parameters"][0]["in"], "path", "{one}");
        assert_eq!(ref_of(one, "200"), "#/components/schemas/ParkedEvent");
        assert!(one["responses"]["404"].is_object(), "{one}");
        let retry = &doc["paths"]["/settlement/parked/retry"]["post"];
        assert_eq!(retry["parameters"][0]["name"], "Idempotency-Key", "{retry}");
        assert_eq!(retry["parameters"][0]["in"], "header", "{retry}");
        assert_eq!(
            retry["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RetryParked"
        );
        assert_eq!(ref_of(retry, "200"), "#/components/schemas/RetryReport");
        for status in ["400", "403", "409", "422"] {
            assert!(retry["responses"][status].is_object(), "{status}: {retry}");
        }
        let schemas = &doc["components"]["schemas"];
        let event = &schemas["ParkedEvent"];
        for field in [
            "plugin",
            "version",
            "problem_code",
            "problem_message",
            "failures",
            "attempts",
            "waits_for_admin",
        ] {
            assert!(
                event["required"]
                    .as_array()
                    .expect("required")
                    .contains(&json!(field)),
                "{field}: {event}"
            );
        }
        assert_eq!(
            event["properties"]["next_retry_at_ms"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(schemas["RetryParked"]["additionalProperties"], false);
        assert_eq!(schemas["RetryParked"]["required"], json!(["reason"]));
        for field in ["parked", "retried", "waiting"] {
            assert!(
                schemas["RunReport"]["required"]
                    .as_array()
                    .expect("required")
                    .contains(&json!(field)),
                "{field}"
            );
        }
        app.stop().await;
    }
);
