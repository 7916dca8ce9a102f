//! Referrals over HTTP on both databases: one code per member, both parties rewarded once on
//! the invitee's first qualifying purchase (not on a retry, not on a later purchase), the
//! brand-funded credits settled, anti-abuse rejections with their reasons, the monthly cap,
//! and the claw-back of both rewards on a refund — as debt when the points are spent.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;

async fn programme(app: &TestApp, id: &str, cap: i64) -> Value {
    let (status, body) = app
        .post(
            "/referrals/programmes",
            &app.admin_key,
            &idem(),
            &json!({ "id": id, "title": "Bring a friend", "referrer_points": 500,
                "invitee_points": 200, "funding_brand": "mall", "min_purchase_cents": 1_000,
                "cap_per_referrer_per_month": cap }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn code_of(app: &TestApp, member: &str) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/members/{member}/invite-code"),
            Some(&app.admin_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["code"].as_str().expect("code").to_owned()
}

async fn attach(app: &TestApp, invitee: &str, code: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/members/{invitee}/referral"),
            &app.admin_key,
            &idem(),
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn order(order_id: &str, member: &str, cents: i64) -> Value {
    json!({ "order_id": order_id, "member_id": member,
        "lines": [{ "line_id": "1", "sku": "x", "quantity": 1, "unit_price_cents": cents }] })
}

async fn buy(app: &TestApp, key: &str, order_id: &str, member: &str, cents: i64) -> Value {
    let (status, body) = app
        .post(
            "/brands/shop/purchases",
            key,
            &idem(),
            &order(order_id, member, cents),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn points(app: &TestApp, member: &str) -> (i64, i64) {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["balance"].as_i64().expect("balance"),
        body["debt"].as_i64().expect("debt"),
    )
}

async fn referral_of(app: &TestApp, invitee: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{invitee}/referrals"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["invited_by"].clone()
}

async fn setup(app: &TestApp) -> String {
    create_brand(app, "mall").await;
    create_brand(app, "shop").await;
    create_key(app, "counter", Some("shop"), None).await
}

both_backends!(
    referral_rewards_both_once_on_the_first_qualifying_purchase,
    |app| async move {
        let till = setup(&app).await;
        programme(&app, "friends", 5).await;
        let ann = member_id(&app, "+8613800000001", "Ann").await;
        let bob = member_id(&app, "+8613800000002", "Bob").await;
        // One code per member: asking again returns the same one.
        let code = code_of(&app, &ann).await;
        assert_eq!(code.len(), 10);
        assert_eq!(code_of(&app, &ann).await, code);
        let attached = attach(&app, &bob, &code.to_lowercase()).await;
        assert_eq!(attached["status"], "pending", "{attached}");
        assert_eq!(attached["referrer_id"], ann.as_str());
        // A second code is refused: a code is attached once.
        let (status, body) = app
            .post(
                &format!("/members/{bob}/referral"),
                &app.admin_key,
                &idem(),
                &json!({ "code": code }),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "referral_exists");

        // 5.00 is below the 10.00 minimum: earns its base (5 points), decides nothing.
        buy(&app, &till, "O-1", &bob, 500).await;
        assert_eq!(referral_of(&app, &bob).await["status"], "pending");
        assert_eq!(points(&app, &ann).await, (0, 0));
        // 20.00 qualifies: Bob 5 + 20 base + 200, Ann 500.
        let key = idem();
        let (status, first) = app
            .post(
                "/brands/shop/purchases",
                &till,
                &key,
                &order("O-2", &bob, 2_000),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let decided = referral_of(&app, &bob).await;
        assert_eq!(decided["status"], "rewarded", "{decided}");
        assert_eq!(decided["purchase_id"], first["id"]);
        assert_eq!(points(&app, &ann).await, (500, 0));
        assert_eq!(points(&app, &bob).await, (225, 0));
        // A retry of that purchase (same key: replayed; new key: the order exists) and a
        // later purchase reward nobody again.
        let (status, replay) = app
            .post(
                "/brands/shop/purchases",
                &till,
                &key,
                &order("O-2", &bob, 2_000),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{replay}");
        let (status, again) = app
            .post(
                "/brands/shop/purchases",
                &till,
                &idem(),
                &order("O-2", &bob, 2_000),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        buy(&app, &till, "O-3", &bob, 3_000).await;
        assert_eq!(points(&app, &ann).await, (500, 0));
        assert_eq!(points(&app, &bob).await, (255, 0));
        // The mall funds both credits: one points-issued event each, and lots it funded.
        let (events,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM settle_events
             WHERE subject_kind = 'referral' AND kind = 'points-issued' AND funding_brand = 'mall'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("events");
        assert_eq!(events, 2);
        let (funded,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM point_lots WHERE brand_id = 'mall'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("lots");
        assert_eq!(funded, 700);
        // Ann's view and the programme's figures.
        let (status, mine) = app
            .get(&format!("/members/{ann}/referrals"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{mine}");
        assert_eq!(mine["code"], code.as_str());
        assert_eq!(mine["invited_count"], 1);
        assert_eq!(mine["rewarded_count"], 1);
        let (status, stats) = app
            .get("/referrals/programmes/friends/stats", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["rewarded"], 1);
        assert_eq!(stats["referrer_points"], 500);
        assert_eq!(stats["invitee_points"], 200);
        // The funding brand sees its programme's figures; another brand does not.
        let mall = create_key(&app, "brand", Some("mall"), None).await;
        let shop = create_key(&app, "brand", Some("shop"), None).await;
        let (status, _) = app.get("/referrals/programmes/friends/stats", &mall).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = app.get("/referrals/programmes/friends/stats", &shop).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // After a purchase, a code can no longer be attached.
        let cat = member_id(&app, "+8613800000003", "Cat").await;
        buy(&app, &till, "O-4", &cat, 100).await;
        let (status, body) = app
            .post(
                &format!("/members/{cat}/referral"),
                &app.admin_key,
                &idem(),
                &json!({ "code": code }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "invitee_has_purchased");
    }
);

both_backends!(
    referral_abuse_earns_nothing_and_says_why,
    |app| async move {
        let till = setup(&app).await;
        // At most one rewarded referral per referrer per month.
        programme(&app, "friends", 1).await;
        let ann = member_id(&app, "+8613800000011", "Ann").await;
        let code = code_of(&app, &ann).await;

        // Self-referral: accepted, recorded as rejected.
        let own = attach(&app, &ann, &code).await;
        assert_eq!(own["status"], "rejected", "{own}");
        assert_eq!(own["reason"], "self_referral");

        // Same phone: Ann made her code on +…11, then moved to +…19; a new account on her
        // old phone attaches her code.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/members/{ann}"),
                Some(&app.admin_key),
                Some(&idem()),
                Some(&json!({ "phone": "+8613800000019" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let twin = member_id(&app, "+8613800000011", "Ann again").await;
        let same = attach(&app, &twin, &code).await;
        assert_eq!(same["status"], "rejected", "{same}");
        assert_eq!(same["reason"], "same_phone");
        buy(&app, &till, "O-T", &twin, 5_000).await;
        assert_eq!(points(&app, &ann).await, (0, 0));

        // Over the cap: Bob's first purchase is rewarded, Cat's is not.
        let bob = member_id(&app, "+8613800000012", "Bob").await;
        let cat = member_id(&app, "+8613800000013", "Cat").await;
        attach(&app, &bob, &code).await;
        attach(&app, &cat, &code).await;
        buy(&app, &till, "O-B", &bob, 1_000).await;
        buy(&app, &till, "O-C", &cat, 1_000).await;
        assert_eq!(referral_of(&app, &bob).await["status"], "rewarded");
        let capped = referral_of(&app, &cat).await;
        assert_eq!(capped["status"], "rejected", "{capped}");
        assert_eq!(capped["reason"], "referrer_cap_reached");
        assert_eq!(points(&app, &ann).await, (500, 0));
        // Cat earns her base (10) and no invitee reward.
        assert_eq!(points(&app, &cat).await, (10, 0));

        // A blacklisted referrer earns nothing, nor does the invitee.
        let dan = member_id(&app, "+8613800000014", "Dan").await;
        let eve = member_id(&app, "+8613800000015", "Eve").await;
        let dan_code = code_of(&app, &dan).await;
        attach(&app, &eve, &dan_code).await;
        let (status, body) = app
            .post(
                "/risk/blacklist",
                &app.admin_key,
                &idem(),
                &json!({ "kind": "member", "subject": dan, "reason": "ring of fake accounts" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        buy(&app, &till, "O-E", &eve, 1_000).await;
        let banned = referral_of(&app, &eve).await;
        assert_eq!(banned["status"], "rejected", "{banned}");
        assert_eq!(banned["reason"], "blacklisted");
        assert_eq!(points(&app, &dan).await, (0, 0));
        assert_eq!(points(&app, &eve).await, (10, 0));

        let (status, stats) = app
            .get("/referrals/programmes/friends/stats", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["rewarded"], 1, "{stats}");
        assert_eq!(stats["rejected"], 4, "{stats}");
        assert_eq!(stats["rejected_by_reason"]["self_referral"], 1);
        assert_eq!(stats["rejected_by_reason"]["same_phone"], 1);
        assert_eq!(stats["rejected_by_reason"]["referrer_cap_reached"], 1);
        assert_eq!(stats["rejected_by_reason"]["blacklisted"], 1);
    }
);

both_backends!(
    referral_refund_claws_both_back_as_debt_when_spent,
    |app| async move {
        let till = setup(&app).await;
        programme(&app, "friends", 5).await;
        let ann = member_id(&app, "+8613800000021", "Ann").await;
        let bob = member_id(&app, "+8613800000022", "Bob").await;
        let code = code_of(&app, &ann).await;
        attach(&app, &bob, &code).await;
        buy(&app, &till, "O-1", &bob, 2_000).await;
        assert_eq!(points(&app, &ann).await, (500, 0));
        assert_eq!(points(&app, &bob).await, (220, 0));
        // Ann spends 400 of her 500.
        let (status, body) = app
            .post(
                &format!("/members/{ann}/points/adjustments"),
                &app.admin_key,
                &idem(),
                &json!({ "points": -400, "reason": "spent elsewhere" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // The qualifying purchase is refunded in full.
        let (status, body) = app
            .post(
                "/brands/shop/purchases/O-1/refunds",
                &till,
                &idem(),
                &json!({ "refund_id": "R-0", "lines": [] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // Both rewards are taken back.
        let clawed = referral_of(&app, &bob).await;
        assert_eq!(clawed["status"], "clawed_back", "{clawed}");
        // Ann had 100: 100 taken, 400 owed.
        assert_eq!(clawed["referrer_shortfall"], 400);
        assert_eq!(points(&app, &ann).await, (0, 400));
        // Bob: 220 - 20 (the refund's own claw-back) - 200 = 0, nothing owed.
        assert_eq!(clawed["invitee_shortfall"], 0);
        assert_eq!(points(&app, &bob).await, (0, 0));
        // Ann's next credit pays her debt first.
        let (status, body) = app
            .post(
                &format!("/members/{ann}/points/adjustments"),
                &app.admin_key,
                &idem(),
                &json!({ "points": 450, "reason": "goodwill" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(points(&app, &ann).await, (50, 0));
        // The mall's two issues are reversed.
        let (reversals,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM settle_events
             WHERE subject_kind = 'referral_clawback' AND kind = 'refund'
               AND reverses_event_id IS NOT NULL",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("events");
        assert_eq!(reversals, 2);
        let (status, stats) = app
            .get("/referrals/programmes/friends/stats", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["clawed_back"], 1);
        assert_eq!(stats["rewarded"], 0);
    }
);

both_backends!(referral_bad_input_is_problem_json, |app| async move {
    setup(&app).await;
    let ann = member_id(&app, "+8613800000031", "Ann").await;
    // No programme in force yet.
    let code = code_of(&app, &ann).await;
    let bob = member_id(&app, "+8613800000032", "Bob").await;
    let (status, body) = app
        .post(
            &format!("/members/{bob}/referral"),
            &app.admin_key,
            &idem(),
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "no_referral_programme");
    for (change, code) in [
        (json!({ "referrer_points": -1 }), "invalid_reward_points"),
        (
            json!({ "referrer_points": 0, "invitee_points": 0 }),
            "invalid_reward_points",
        ),
        (
            json!({ "cap_per_referrer_per_month": 0 }),
            "invalid_referral_cap",
        ),
        (json!({ "min_purchase_cents": -5 }), "invalid_min_purchase"),
        (json!({ "title": " " }), "invalid_programme_title"),
        (
            json!({ "starts_at_ms": 10, "ends_at_ms": 5 }),
            "invalid_window",
        ),
        (json!({ "funding_brand": "nobody" }), "unknown_brand"),
    ] {
        let mut body = json!({ "id": "p", "title": "Friends", "referrer_points": 1,
            "invitee_points": 1, "cap_per_referrer_per_month": 1 });
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, resp) = app
            .post("/referrals/programmes", &app.admin_key, &idem(), &body)
            .await;
        assert!(status.is_client_error(), "{change}: {status} {resp}");
        assert_eq!(resp["code"], code, "{change}: {resp}");
    }
    programme(&app, "friends", 1).await;
    for (bad, status, problem) in [
        ("short", StatusCode::BAD_REQUEST, "invalid_invite_code"),
        (
            "ZZZZZZZZZZ",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_invite_code",
        ),
    ] {
        let (got, body) = app
            .post(
                &format!("/members/{bob}/referral"),
                &app.admin_key,
                &idem(),
                &json!({ "code": bad }),
            )
            .await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["code"], problem);
    }
    // A member key may not attach a code for someone else, nor make their code.
    let bob_key = create_key(&app, "member", None, Some(&bob)).await;
    let (status, body) = app
        .post(
            &format!("/members/{ann}/referral"),
            &bob_key,
            &idem(),
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/members/{ann}/invite-code"),
            Some(&bob_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
});

both_backends!(the_demo_shows_a_referral_rewarding_both, |app| async move {
    coalition::app::demo::seed_with_plugins(
        &app.state,
        Some(&crate::fixtures::plugins_dir("coffee-bonus")),
    )
    .await
    .expect("demo seed");
    let (status, stats) = app
        .get("/referrals/programmes/bring-a-friend/stats", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["rewarded"], 1, "{stats}");
    assert_eq!(stats["referrer_points"], 500);
    assert_eq!(stats["invitee_points"], 200);
    // The invitee: 88.00 at the mall earns 88, plus the 200 welcome.
    let (invitee,): (String,) =
        sqlx::query_as("SELECT id FROM members WHERE phone = '+8613800138077'")
            .fetch_one(app.state.store.read())
            .await
            .expect("invitee");
    let (balance, _) = points(&app, &invitee).await;
    assert_eq!(balance, 288);
});

/// Runs `coalition referrals …` (the real binary) against the test's database.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
        .env("COALITION_DATABASE_URL", app.state.config.database_url())
        .env_remove("COALITION_CONFIG")
        .arg("referrals")
        .args(args)
        .output()
        .expect("run coalition");
    if !out.status.success() {
        return json!({ "error": String::from_utf8_lossy(&out.stderr) });
    }
    serde_json::from_slice(&out.stdout).expect("json")
}

both_backends!(
    the_command_line_manages_programmes_and_codes,
    |app| async move {
        create_brand(&app, "mall").await;
        let ann = member_id(&app, "+8613800000041", "Ann").await;
        let made = cli(
            &app,
            &[
                "create-programme",
                "--id",
                "friends",
                "--title",
                "Friends",
                "--referrer-points",
                "300",
                "--invitee-points",
                "100",
                "--brand",
                "mall",
            ],
        );
        assert_eq!(made["id"], "friends", "{made}");
        assert_eq!(made["funding_brand"], "mall");
        let again = cli(
            &app,
            &[
                "create-programme",
                "--id",
                "friends",
                "--title",
                "Friends",
                "--referrer-points",
                "300",
                "--invitee-points",
                "100",
            ],
        );
        assert!(
            again["error"]
                .as_str()
                .is_some_and(|e| e.contains("already exists")),
            "{again}"
        );
        let code = cli(&app, &["code", &ann]);
        assert_eq!(cli(&app, &["code", &ann])["code"], code["code"], "{code}");
        assert_eq!(cli(&app, &["show", &ann])["code"], code["code"]);
        assert_eq!(cli(&app, &["deactivate", "friends"])["active"], false);
        assert_eq!(cli(&app, &["programmes"])[0]["active"], false);
        assert_eq!(cli(&app, &["stats", "friends"])["attached"], 0);
    }
);
