//! Member lifecycle stages over HTTP on both databases: a member walks welcome → growth →
//! stable → silent → churned as purchases happen and the injected clock moves, each change is
//! recorded once however often the job runs, the rules are admin-only and checked, and the
//! churn-risk list and the counts follow.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{assert_problem, create_brand, create_key, get, idem, member_id, send_json};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;

/// Records a purchase of `cents` at `brand` with `key`.
pub async fn purchase(app: &TestApp, key: &str, brand: &str, member: &str, cents: i64) {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            key,
            &idem(),
            &json!({ "order_id": format!("O-{}", idem()), "member_id": member,
                "lines": [{ "line_id": "1", "sku": "x", "quantity": 1,
                    "unit_price_cents": cents }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Runs the stage job as admin; returns its report.
pub async fn run_stages(app: &TestApp) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            "/jobs/member-stages",
            Some(&app.admin_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["finished"], true, "{body}");
    body
}

async fn stage_of(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/stage"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

both_backends!(
    a_member_walks_every_stage_and_each_change_is_recorded_once,
    |app| async move {
        create_brand(&app, "shop").await;
        let counter = create_key(&app, "counter", Some("shop"), None).await;
        let m = member_id(&app, "+8613800000001", "Mei").await;
        let idle = member_id(&app, "+8613800000002", "Idle").await;

        let before = stage_of(&app, &m).await;
        assert!(before["current"].is_null(), "{before}");

        let report = run_stages(&app).await;
        assert_eq!(report["changed"], 2, "{report}");
        assert_eq!(stage_of(&app, &m).await["current"]["stage"], "welcome");

        purchase(&app, &counter, "shop", &m, 5_000).await;
        run_stages(&app).await;
        assert_eq!(stage_of(&app, &m).await["current"]["stage"], "growth");

        app.clock.advance_ms(DAY_MS);
        purchase(&app, &counter, "shop", &m, 7_000).await;
        purchase(&app, &counter, "shop", &m, 9_000).await;
        run_stages(&app).await;
        let view = stage_of(&app, &m).await;
        assert_eq!(view["current"]["stage"], "stable", "{view}");
        assert_eq!(view["current"]["purchases"], 3, "{view}");
        assert_eq!(view["current"]["spend_cents"], 21_000, "{view}");

        // Running again without any change records nothing.
        let again = run_stages(&app).await;
        assert_eq!(again["changed"], 0, "{again}");

        app.clock.advance_ms(30 * DAY_MS);
        run_stages(&app).await;
        assert_eq!(stage_of(&app, &m).await["current"]["stage"], "silent");
        // The member who never bought is silent too (past the welcome window).
        assert_eq!(stage_of(&app, &idle).await["current"]["stage"], "silent");

        let resp = get(&app, "/stages/churn-risk?limit=10", &app.admin_key).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["total"], 2, "{}", resp.text);
        // Highest spend first.
        assert_eq!(
            resp.body["members"][0]["member_id"],
            m.as_str(),
            "{}",
            resp.text
        );
        assert_eq!(resp.body["members"][0]["spend_cents"], 21_000);
        let page2 = get(&app, "/stages/churn-risk?limit=1&offset=1", &app.admin_key).await;
        assert_eq!(
            page2.body["members"][0]["member_id"],
            idle.as_str(),
            "{}",
            page2.text
        );

        app.clock.advance_ms(60 * DAY_MS);
        run_stages(&app).await;
        run_stages(&app).await;
        let view = stage_of(&app, &m).await;
        assert_eq!(view["current"]["stage"], "churned", "{view}");
        let history: Vec<(Value, Value)> = view["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| (h["from"].clone(), h["to"].clone()))
            .collect();
        assert_eq!(
            history,
            vec![
                (json!("silent"), json!("churned")),
                (json!("stable"), json!("silent")),
                (json!("growth"), json!("stable")),
                (json!("welcome"), json!("growth")),
                (Value::Null, json!("welcome")),
            ],
            "{view}"
        );

        let counts = get(&app, "/stages/counts", &app.admin_key).await;
        assert_eq!(counts.status, StatusCode::OK, "{}", counts.text);
        assert_eq!(counts.body["churned"], 2, "{}", counts.text);
        assert_eq!(counts.body["not_computed"], 0, "{}", counts.text);

        // A purchase brings the member back.
        purchase(&app, &counter, "shop", &m, 1_000).await;
        run_stages(&app).await;
        assert_eq!(stage_of(&app, &m).await["current"]["stage"], "stable");
        app.stop().await;
    }
);

both_backends!(stage_rules_are_admin_only_and_checked, |app| async move {
    create_brand(&app, "shop").await;
    let brand = create_key(&app, "brand", Some("shop"), None).await;
    let resp = get(&app, "/stages/rules", &brand).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.body["silent_after_days"], 30);
    assert_eq!(resp.body["churned_after_days"], 90);

    let rules = json!({ "welcome_days": 7, "stable_min_purchases": 2,
        "silent_after_days": 14, "churned_after_days": 60 });
    let refused = send_json(&app, Method::PUT, "/stages/rules", &brand, &rules).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden");
    for bad in [
        json!({ "welcome_days": 20, "stable_min_purchases": 2,
            "silent_after_days": 14, "churned_after_days": 60 }),
        json!({ "welcome_days": 7, "stable_min_purchases": 2,
            "silent_after_days": 14, "churned_after_days": 14 }),
        json!({ "welcome_days": 7, "stable_min_purchases": 1,
            "silent_after_days": 14, "churned_after_days": 60 }),
    ] {
        let resp = send_json(&app, Method::PUT, "/stages/rules", &app.admin_key, &bad).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_stage_rules");
    }
    let resp = send_json(
        &app,
        Method::PUT,
        "/stages/rules",
        &app.admin_key,
        &json!({ "welcome_days": 7 }),
    )
    .await;
    assert_eq!(
        resp.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        resp.text
    );
    assert_eq!(resp.body["code"], "invalid_body", "{}", resp.text);

    let ok = send_json(&app, Method::PUT, "/stages/rules", &app.admin_key, &rules).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(get(&app, "/stages/rules", &brand).await.body, rules);

    // The new rules apply: a member who never bought is silent after 7 days, not 30.
    let m = member_id(&app, "+8613800000003", "Lin").await;
    app.clock.advance_ms(8 * DAY_MS);
    run_stages(&app).await;
    assert_eq!(stage_of(&app, &m).await["current"]["stage"], "silent");

    let bad_page = get(&app, "/stages/churn-risk?limit=0", &app.admin_key).await;
    assert_problem(&bad_page, StatusCode::BAD_REQUEST, "invalid_page");
    let counter = create_key(&app, "counter", Some("shop"), None).await;
    assert_eq!(
        get(&app, "/stages/churn-risk", &counter).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&app, "/stages/counts", &brand).await.status,
        StatusCode::FORBIDDEN
    );
    let unknown = get(&app, "/members/nobody/stage", &app.admin_key).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    app.stop().await;
});
