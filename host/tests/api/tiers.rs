//! Tiers: upgrade on purchase, one-step downgrade per evaluation, progress and warnings,
//! refunds in the qualifying pool, the ladder API and the monthly schedule.

use coalition::foundation::clock::DAY_MS;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends_no_jobs;
use crate::helpers::TestApp;
use crate::ledger::{brand, check_invariants, credit, key, member};
use crate::purchases::{purchase, refund};

fn order(id: &str, member: &str, cents: i64) -> Value {
    json!({ "order_id": id, "member_id": member,
            "lines": [{ "line_id": "1", "sku": "ITEM", "quantity": 1, "unit_price_cents": cents }] })
}

async fn tier(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/tier"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn evaluate(app: &TestApp, idem: &str) -> Value {
    let (status, body) = app
        .post("/tiers/evaluate", &app.admin_key, idem, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

both_backends_no_jobs!(purchase_upgrades_at_once_with_progress, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    let view = tier(&app, &m).await;
    assert_eq!(view["tier"]["code"], "bronze");
    assert_eq!(view["progress"], "Spend 2000.00 more to reach Silver");
    // 2026-04-01T00:00Z: the first of next month.
    assert_eq!(view["next_evaluation_at_ms"], 1_775_001_600_000_i64);
    assert!(view["downgrade_warning"].is_null());

    let (status, body) = purchase(&app, &counter, "store", &order("o1", &m, 250_000)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tier_change"]["from"], "bronze");
    assert_eq!(body["tier_change"]["to"], "silver");
    let view = tier(&app, &m).await;
    assert_eq!(view["tier"]["code"], "silver");
    assert_eq!(view["qualifying"], 250_000);
    assert_eq!(view["next_tier"]["code"], "gold");
    assert_eq!(view["remaining_to_next"], 750_000);
    assert_eq!(view["progress"], "Spend 7500.00 more to reach Gold");

    // Crossing two thresholds at once jumps two steps.
    let (_, body) = purchase(&app, &counter, "store", &order("o2", &m, 4_800_000)).await;
    assert_eq!(body["tier_change"]["to"], "platinum");
    let view = tier(&app, &m).await;
    assert_eq!(view["progress"], "Platinum is the highest tier");
    assert_eq!(view["recent_changes"].as_array().map(Vec::len), Some(2));

    // The part paid with points does not qualify, nor does the spendable balance.
    let other = member(&app).await;
    credit(&app, &other, 1_000_000).await;
    let (status, body) = purchase(
        &app,
        &counter,
        "store",
        &json!({
            "order_id": "o3", "member_id": other, "points_spent": 20_000,
            "lines": [{ "line_id": "1", "sku": "ITEM", "quantity": 1, "unit_price_cents": 200_000 }]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let view = tier(&app, &other).await;
    assert_eq!(view["qualifying"], 180_000);
    assert_eq!(
        view["tier"]["code"], "bronze",
        "10,000 points in the wallet earn no tier"
    );
    check_invariants(&app).await;
    app.stop().await;
});

both_backends_no_jobs!(evaluation_downgrades_one_step_at_a_time, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    let (_, body) = purchase(&app, &counter, "store", &order("o1", &m, 5_000_000)).await;
    assert_eq!(body["tier_change"]["to"], "platinum");
    // At the next evaluation the purchase still counts: no warning.
    assert!(tier(&app, &m).await["downgrade_warning"].is_null());
    let report = evaluate(&app, "e0").await;
    assert_eq!(
        (report["upgraded"].as_i64(), report["downgraded"].as_i64()),
        (Some(0), Some(0))
    );

    // A year and a bit later the window is empty: warned, then down one step per evaluation.
    app.clock.advance_ms(366 * DAY_MS);
    let view = tier(&app, &m).await;
    let warning = &view["downgrade_warning"];
    assert_eq!(warning["would_become"]["code"], "gold");
    assert_eq!(warning["shortfall"], 4_000_000);
    assert_eq!(
        warning["message"],
        "Spend 40000.00 more before 2027-04-01 to keep Platinum"
    );
    let report = evaluate(&app, "e1").await;
    assert_eq!(report["downgraded"], 1);
    assert_eq!(tier(&app, &m).await["tier"]["code"], "gold");
    // Retrying the same evaluation replays it and moves nobody again.
    let again = evaluate(&app, "e1").await;
    assert_eq!(again["id"], report["id"]);
    assert_eq!(tier(&app, &m).await["tier"]["code"], "gold");
    evaluate(&app, "e2").await;
    assert_eq!(tier(&app, &m).await["tier"]["code"], "silver");
    evaluate(&app, "e3").await;
    assert_eq!(tier(&app, &m).await["tier"]["code"], "bronze");
    let last = evaluate(&app, "e4").await;
    assert_eq!(last["downgraded"], 0);
    let (changes,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tier_changes WHERE member_id = $1 AND reason = 'evaluation'",
    )
    .bind(&m)
    .fetch_one(app.state.store.read())
    .await
    .expect("changes");
    assert_eq!(changes, 3);
    // Only admins evaluate.
    let (status, _) = app
        .post("/tiers/evaluate", &counter, "e5", &json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
});

both_backends_no_jobs!(refunds_leave_the_qualifying_pool, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    let (_, body) = purchase(&app, &counter, "store", &order("o1", &m, 250_000)).await;
    assert_eq!(body["tier_change"]["to"], "silver");
    let (status, r) = refund(&app, &counter, "store", "o1", &json!({ "refund_id": "r1" })).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["qualifying_reversed_cents"], 250_000);
    // A refund does not downgrade by itself, but the member is warned and the next evaluation
    // moves them.
    let view = tier(&app, &m).await;
    assert_eq!(view["qualifying"], 0);
    assert_eq!(view["tier"]["code"], "silver");
    assert_eq!(view["downgrade_warning"]["would_become"]["code"], "bronze");
    evaluate(&app, "e1").await;
    assert_eq!(tier(&app, &m).await["tier"]["code"], "bronze");
    check_invariants(&app).await;
    app.stop().await;
});

both_backends_no_jobs!(ladder_can_be_read_and_replaced, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let (status, ladder) = app.get("/tiers", &counter).await;
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<&str> = ladder["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .filter_map(|t| t["code"].as_str())
        .collect();
    assert_eq!(codes, vec!["bronze", "silver", "gold", "platinum"]);
    let tier = |code: &str, threshold: i64| {
        json!({ "code": code, "name": code.to_uppercase(), "threshold": threshold,
                "retain_threshold": threshold / 2, "points_pay_max_percent": 50 })
    };
    let bad = json!({ "tiers": [tier("basic", 0), tier("vip", 0)] });
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/tiers",
            Some(&app.admin_key),
            Some("l1"),
            Some(&bad),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let good = json!({ "tiers": [tier("basic", 0), tier("vip", 10_000)] });
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            "/tiers",
            Some(&counter),
            Some("l2"),
            Some(&good),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/tiers",
            Some(&app.admin_key),
            Some("l3"),
            Some(&good),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m = member(&app).await;
    let (_, body) = purchase(&app, &counter, "store", &order("o1", &m, 10_000)).await;
    assert_eq!(body["tier_change"]["to"], "vip");
    app.stop().await;
});

both_backends_no_jobs!(scheduled_evaluation_runs_once_a_month, |app| async move {
    brand(&app, "store", &[], &[]).await;
    let counter = key(&app, "counter", Some("store"), None).await;
    let m = member(&app).await;
    let state = &app.state;
    let run = || async {
        coalition::domain::tiers::run_scheduled(
            &state.store,
            &state.config.tiers,
            0,
            app.state.now_ms(),
        )
        .await
        .expect("scheduled run")
    };
    // The first run ever only records a baseline.
    assert!(run().await.is_none());
    let (_, body) = purchase(&app, &counter, "store", &order("o1", &m, 1_000_000)).await;
    assert_eq!(body["tier_change"]["to"], "gold");
    // Same month: nothing to do.
    assert!(run().await.is_none());
    // Thirteen months on: one run, one step down; a second tick that month does nothing.
    app.clock.advance_ms(396 * DAY_MS);
    let report = run().await.expect("this month's evaluation");
    assert_eq!(report.downgraded, 1);
    assert!(run().await.is_none());
    assert_eq!(tier(&app, &m).await["tier"]["code"], "silver");
    app.clock.advance_ms(31 * DAY_MS);
    assert_eq!(run().await.expect("next month").downgraded, 1);
    assert_eq!(tier(&app, &m).await["tier"]["code"], "bronze");
    app.stop().await;
});

/// Per brand: (brand, spend 7 days, spend 30 days, visits 30 days).
fn spend_of(ctx: &coalition_runtime::model::MemberContext) -> Vec<(&str, i64, i64, u32)> {
    ctx.spend
        .iter()
        .map(|s| {
            (
                s.brand.as_str(),
                s.spend_7d_cents,
                s.spend_30d_cents,
                s.visits_30d,
            )
        })
        .collect()
}

both_backends_no_jobs!(
    the_member_context_plugins_see_reads_every_number_in_three_queries,
    |app| async move {
        brand(&app, "store", &[], &[]).await;
        brand(&app, "cafe", &[], &[]).await;
        let store = key(&app, "counter", Some("store"), None).await;
        let cafe = key(&app, "counter", Some("cafe"), None).await;
        let m = member(&app).await;
        let context = |app: &TestApp, m: String| {
            let state = app.state.clone();
            async move {
                let mut conn = state.store.read().acquire().await.expect("conn");
                coalition::plugins::context::member_context(
                    &mut conn,
                    &state.settings.tiers,
                    &m,
                    state.now_ms(),
                )
                .await
                .expect("context")
            }
        };

        let (ctx, blocked) = context(&app, m.clone()).await;
        assert!(!blocked);
        assert_eq!((ctx.tier.as_str(), ctx.tier_rank), ("bronze", 0));
        assert_eq!(ctx.points_balance, 0);
        assert_eq!(ctx.qualifying_spend_cents, 0);
        assert!(ctx.spend.is_empty());

        // Coffee ten days ago (inside 30 days, outside 7), then the store today (silver on
        // the configured ladder), twice at the store.
        let (status, body) = purchase(&app, &cafe, "cafe", &order("c1", &m, 5_000)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.clock.advance_ms(10 * DAY_MS);
        purchase(&app, &store, "store", &order("s1", &m, 240_000)).await;
        purchase(&app, &store, "store", &order("s2", &m, 10_000)).await;
        let (ctx, _) = context(&app, m.clone()).await;
        assert_eq!((ctx.tier.as_str(), ctx.tier_rank), ("silver", 1));
        let (wallet,): (i64,) =
            sqlx::query_as("SELECT balance FROM point_wallets WHERE member_id = $1")
                .bind(&m)
                .fetch_one(app.state.store.read())
                .await
                .expect("wallet");
        assert!(wallet > 0);
        assert_eq!(ctx.points_balance, wallet);
        assert_eq!(ctx.qualifying_spend_cents, 255_000);
        assert_eq!(
            spend_of(&ctx),
            [("cafe", 0, 5_000, 1), ("store", 250_000, 250_000, 2)]
        );

        // A refunded purchase still counts as a visit, with no spend left.
        let (status, body) = purchase(&app, &cafe, "cafe", &order("c2", &m, 3_000)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = refund(&app, &cafe, "cafe", "c2", &json!({ "refund_id": "r" })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (ctx, _) = context(&app, m.clone()).await;
        assert_eq!(
            spend_of(&ctx),
            [("cafe", 0, 5_000, 2), ("store", 250_000, 250_000, 2)]
        );

        // Twenty-five days on, the first coffee is out of the 30-day window and the store
        // spend out of the 7-day one; the refunded coffee is a visit with no spend.
        app.clock.advance_ms(25 * DAY_MS);
        let (ctx, _) = context(&app, m.clone()).await;
        assert_eq!(
            spend_of(&ctx),
            [("cafe", 0, 0, 1), ("store", 0, 250_000, 2)]
        );

        // A stored ladder replaces the configured one: silver is not on it (rank 0) until
        // the next purchase moves the member onto it.
        let tier = |code: &str, threshold: i64| {
            json!({ "code": code, "name": code, "threshold": threshold,
                    "retain_threshold": threshold / 2, "points_pay_max_percent": 50 })
        };
        let ladder =
            json!({ "tiers": [tier("basic", 0), tier("plus", 1_000), tier("vip", 100_000)] });
        let (status, body) = app
            .call(
                reqwest::Method::PUT,
                "/tiers",
                Some(&app.admin_key),
                Some("ladder"),
                Some(&ladder),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (ctx, _) = context(&app, m.clone()).await;
        assert_eq!((ctx.tier.as_str(), ctx.tier_rank), ("silver", 0));
        purchase(&app, &store, "store", &order("s3", &m, 1_000)).await;
        let (ctx, _) = context(&app, m.clone()).await;
        assert_eq!((ctx.tier.as_str(), ctx.tier_rank), ("vip", 2));
        app.stop().await;
    }
);
