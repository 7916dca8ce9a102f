//! Coupon campaigns: a hard cap that concurrent issue calls never exceed, segments by tier and
//! tag that skip blocked and blacklisted members, windows and access.

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::{blacklist, idem, import_members, sql_coupon_template};
use crate::counter_test;
use crate::helpers::{TestApp, T0_MS};
use crate::ledger::{brand, key, member};

async fn create_campaign(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    app.post("/campaigns", key, &idem(), body).await
}

/// Calls issue until it reports `finished` (a call stops at its time budget).
async fn issue_until_finished(app: &TestApp, key: &str, id: &str) -> i64 {
    let mut issued = 0;
    for _ in 0..1_000 {
        let (status, body) = app
            .post(&format!("/campaigns/{id}/issue"), key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "issue: {body}");
        issued += body["issued_now"].as_i64().expect("issued_now");
        if body["finished"] == true {
            return issued;
        }
    }
    panic!("issue never finished");
}

async fn campaign_coupons(app: &TestApp, id: &str) -> (i64, i64) {
    let (coupons, members): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT member_id) AS BIGINT) FROM coupons
         WHERE source_kind = 'campaign' AND source_id = $1",
    )
    .bind(id)
    .fetch_one(app.state.store.read())
    .await
    .expect("count coupons");
    (coupons, members)
}

counter_test!(
    campaign_to_10000_members_with_cap_5000_issues_exactly_5000,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500).await;
        let started = Instant::now();
        let created = import_members(&app, 0, 10_000, &["spring"]).await;
        assert_eq!(created, 10_000);
        let imported = started.elapsed();
        let (status, campaign) = create_campaign(
            &app,
            &app.admin_key,
            &json!({ "title": "Spring latte", "template_id": "latte-free", "cap": 5_000,
                     "segment": { "tags": ["spring"] } }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{campaign}");
        assert_eq!(campaign["matched"], 10_000);
        assert_eq!(campaign["issued"], 0);
        let id = campaign["id"].as_str().expect("id").to_owned();

        // Several concurrent issue calls race for the same 5,000 slots.
        let app = Arc::new(app);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let app = app.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let admin = app.admin_key.clone();
                issue_until_finished(&app, &admin, &id).await
            }));
        }
        let mut issued_by_calls = 0;
        for task in tasks {
            issued_by_calls += task.await.expect("task");
        }
        eprintln!(
            "{:?}: import of 10,000 members {:?}, concurrent issue of 5,000 coupons {:?}",
            app.backend,
            imported,
            started.elapsed()
        );
        assert_eq!(issued_by_calls, 5_000);
        assert_eq!(campaign_coupons(&app, &id).await, (5_000, 5_000));
        let (status, view) = app.get(&format!("/campaigns/{id}"), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["issued"], 5_000);
        assert_eq!(view["remaining"], 0);
        assert_eq!(view["cap"], 5_000);

        // Issuing again issues nothing more.
        let (status, again) = app
            .post(
                &format!("/campaigns/{id}/issue"),
                &app.admin_key,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["issued_now"], 0);
        assert_eq!(again["cap_reached"], true);
        assert_eq!(campaign_coupons(&app, &id).await, (5_000, 5_000));
    }
);

counter_test!(
    segments_match_tier_and_tag_and_skip_blocked_and_blacklisted,
    |app| async move {
        brand(&app, "cafe", &[], &[]).await;
        brand(&app, "cinema", &[], &[]).await;
        sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500).await;
        import_members(&app, 0, 5, &["coffee"]).await;
        import_members(&app, 100, 3, &["tea"]).await;
        // Of the five coffee lovers, one is blocked and one blacklisted.
        let (_, page) = app.get("/members?tag=coffee", &app.admin_key).await;
        let coffee: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(coffee.len(), 5, "{page}");
        let (status, body) = app
            .post(
                &format!("/members/{}/block", coffee[0]),
                &app.admin_key,
                &idem(),
                &json!({ "reason": "fraud" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        blacklist(&app, "member", &coffee[1]).await;

        // A brand key of another brand may not run the cafe's campaign.
        let cinema = key(&app, "brand", Some("cinema"), None).await;
        let body = json!({ "title": "Coffee", "template_id": "latte-free", "cap": 100,
                           "segment": { "tiers": ["bronze"], "tags": ["coffee"] } });
        let (status, problem) = create_campaign(&app, &cinema, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        let cafe = key(&app, "brand", Some("cafe"), None).await;
        let (status, campaign) = create_campaign(&app, &cafe, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{campaign}");
        assert_eq!(campaign["matched"], 3);
        let id = campaign["id"].as_str().expect("id").to_owned();
        let (status, problem) = app
            .post(
                &format!("/campaigns/{id}/issue"),
                &cinema,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        let issue_key = idem();
        let (status, report) = app
            .post(
                &format!("/campaigns/{id}/issue"),
                &cafe,
                &issue_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["issued_now"], 3);
        assert_eq!(report["finished"], true);
        assert_eq!(report["cap_reached"], false);
        // The same key replays the report instead of issuing.
        let (_, replay) = app
            .post(
                &format!("/campaigns/{id}/issue"),
                &cafe,
                &issue_key,
                &json!({}),
            )
            .await;
        assert_eq!(replay, report);
        let owners: Vec<(String,)> =
            sqlx::query_as("SELECT member_id FROM coupons WHERE source_id = $1")
                .bind(&id)
                .fetch_all(app.state.store.read())
                .await
                .expect("owners");
        assert_eq!(owners.len(), 3);
        assert!(owners
            .iter()
            .all(|(m,)| m != &coffee[0] && m != &coffee[1] && coffee.contains(m)));

        // A tier that matches nobody, and an unknown tier.
        let (status, gold) = create_campaign(
            &app,
            &cafe,
            &json!({ "title": "Gold", "template_id": "latte-free", "cap": 10,
                     "segment": { "tiers": ["gold"] } }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{gold}");
        assert_eq!(gold["matched"], 0);
        let (status, problem) = create_campaign(
            &app,
            &cafe,
            &json!({ "title": "X", "template_id": "latte-free", "cap": 10,
                     "segment": { "tiers": ["diamond-ultra"] } }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        let (status, problem) = create_campaign(
            &app,
            &cafe,
            &json!({ "title": "X", "template_id": "latte-free", "cap": 10, "segment": {} }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        let (status, problem) = create_campaign(
            &app,
            &cafe,
            &json!({ "title": "X", "template_id": "no-such", "cap": 10,
                     "segment": { "tags": ["coffee"] } }),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    }
);

counter_test!(campaign_window_is_enforced, |app| async move {
    brand(&app, "cafe", &[], &[]).await;
    sql_coupon_template(&app, "latte-free", "cafe", "cafe", 30, 500).await;
    let m = member(&app).await;
    let (status, _) = app
        .post(
            &format!("/members/{m}/tags"),
            &app.admin_key,
            &idem(),
            &json!({ "tags": ["coffee"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, campaign) = create_campaign(
        &app,
        &app.admin_key,
        &json!({ "title": "Later", "template_id": "latte-free", "cap": 10,
                 "segment": { "tags": ["coffee"] },
                 "starts_at_ms": T0_MS + 3_600_000, "ends_at_ms": T0_MS + 7_200_000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let id = campaign["id"].as_str().expect("id").to_owned();
    async fn issue(app: &TestApp, id: &str) -> (StatusCode, Value) {
        let path = format!("/campaigns/{id}/issue");
        app.post(&path, &app.admin_key, &idem(), &json!({})).await
    }
    let (status, problem) = issue(&app, &id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "campaign_not_started");
    app.clock.advance_ms(3_600_000);
    let (status, report) = issue(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["issued_now"], 1);
    app.clock.advance_ms(3_600_000);
    let (status, problem) = issue(&app, &id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "campaign_ended");
});
