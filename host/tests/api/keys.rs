//! API keys: creation by role and scope, listing without secrets, revocation (immediate on the
//! node that revoked, within the cache TTL elsewhere), and the demo coalition's keys file.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::both_backends;
use crate::fixtures::{
    assert_problem, count, create_brand, create_key, get, idem, member_id, raw, send_json,
};
use crate::helpers::TestApp;

async fn revoke(app: &TestApp, key: &str, id: &str) -> crate::fixtures::Raw {
    let bearer = format!("Bearer {key}");
    let idem = idem();
    raw(
        app,
        Method::DELETE,
        &format!("/keys/{id}"),
        &[("authorization", &bearer), ("idempotency-key", &idem)],
        None,
    )
    .await
}

both_backends!(admin_creates_lists_and_revokes_keys, |app| async move {
    create_brand(&app, "coffee").await;
    let member = member_id(&app, "+8613800138000", "Wang Fang").await;
    let created = send_json(
        &app,
        Method::POST,
        "/keys",
        &app.admin_key,
        &json!({"role": "counter", "brand_id": "coffee", "label": "till 3"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("coa_"));
    assert_eq!(created.body["role"], "counter");
    assert_eq!(created.body["label"], "till 3");
    let id = created.body["id"].as_str().expect("id").to_owned();

    // The new key works.
    assert_eq!(
        get(&app, "/brands/coffee", &secret).await.status,
        StatusCode::OK
    );

    // Scope rules, with clear codes.
    for (body, status, code) in [
        (
            json!({"role": "counter"}),
            StatusCode::BAD_REQUEST,
            "invalid_key_scope",
        ),
        (
            json!({"role": "admin", "brand_id": "coffee"}),
            StatusCode::BAD_REQUEST,
            "invalid_key_scope",
        ),
        (
            json!({"role": "member", "brand_id": "coffee"}),
            StatusCode::BAD_REQUEST,
            "invalid_key_scope",
        ),
        (
            json!({"role": "brand", "brand_id": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_brand",
        ),
        (
            json!({"role": "member", "member_id": "0000"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_member",
        ),
        (
            json!({"role": "admin", "label": "x".repeat(101)}),
            StatusCode::BAD_REQUEST,
            "invalid_label",
        ),
    ] {
        let resp = send_json(&app, Method::POST, "/keys", &app.admin_key, &body).await;
        assert_problem(&resp, status, code);
    }
    create_key(&app, "member", None, Some(&member)).await;
    create_key(&app, "admin", None, None).await;

    // Lists show prefixes, never secrets or hashes.
    let list = get(&app, "/keys?limit=200", &app.admin_key).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    assert!(!list.text.contains(&secret));
    assert!(!list.text.contains("key_hash"));
    let listed = items
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(listed["prefix"], &secret[..12]);
    assert!(listed.get("secret").is_none());
    let counters = get(&app, "/keys?role=counter", &app.admin_key).await;
    assert_eq!(counters.body["items"].as_array().map(Vec::len), Some(1));
    let page = get(&app, "/keys?limit=3", &app.admin_key).await;
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let rest = get(
        &app,
        &format!("/keys?limit=3&cursor={cursor}"),
        &app.admin_key,
    )
    .await;
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["next_cursor"], Value::Null);

    // Revocation takes effect at once on this node and is idempotent.
    let resp = revoke(&app, &app.admin_key, &id).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let revoked_at = resp.body["revoked_at_ms"].clone();
    assert!(revoked_at.is_i64());
    assert_problem(
        &get(&app, "/brands/coffee", &secret).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    app.clock.advance_ms(1_000);
    let again = revoke(&app, &app.admin_key, &id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["revoked_at_ms"], revoked_at);
    let revoked = get(&app, "/keys?revoked=true", &app.admin_key).await;
    assert_eq!(revoked.body["items"].as_array().map(Vec::len), Some(1));
    assert_problem(
        &revoke(&app, &app.admin_key, "nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.stop().await;
});

both_backends!(
    brand_keys_manage_only_their_counter_keys,
    |app| async move {
        create_brand(&app, "coffee").await;
        create_brand(&app, "cinema").await;
        let coffee = create_key(&app, "brand", Some("coffee"), None).await;
        let cinema_counter_secret = create_key(&app, "counter", Some("cinema"), None).await;
        let coffee_counter_secret = create_key(&app, "counter", Some("coffee"), None).await;

        // A brand key creates counter keys of its own brand, defaulting the brand.
        let resp = send_json(
            &app,
            Method::POST,
            "/keys",
            &coffee,
            &json!({"role": "counter", "label": "till 1"}),
        )
        .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
        assert_eq!(resp.body["brand_id"], "coffee");
        let till = resp.body["id"].as_str().expect("id").to_owned();
        let till_secret = resp.body["secret"].as_str().expect("secret").to_owned();

        for body in [
            json!({"role": "counter", "brand_id": "cinema"}),
            json!({"role": "brand", "brand_id": "coffee"}),
            json!({"role": "admin"}),
        ] {
            let resp = send_json(&app, Method::POST, "/keys", &coffee, &body).await;
            assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
        }
        let resp = send_json(
            &app,
            Method::POST,
            "/keys",
            &coffee_counter_secret,
            &json!({"role": "counter"}),
        )
        .await;
        assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");

        // The brand sees only its own brand's keys.
        let list = get(&app, "/keys", &coffee).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        let items = list.body["items"].as_array().expect("items");
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|k| k["brand_id"] == "coffee"));
        assert_eq!(
            items
                .iter()
                .find(|k| k["id"] == till.as_str())
                .map(|k| k["created_by"].is_string()),
            Some(true)
        );
        assert_problem(
            &get(&app, "/keys?brand_id=cinema", &coffee).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_problem(
            &get(&app, "/keys", &coffee_counter_secret).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );

        // It revokes its own counter keys, not another brand's, not its own brand key.
        let cinema_counter_id = get(&app, "/keys?brand_id=cinema&role=counter", &app.admin_key)
            .await
            .body["items"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_problem(
            &revoke(&app, &coffee, &cinema_counter_id).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_eq!(
            get(&app, "/brands/cinema", &cinema_counter_secret)
                .await
                .status,
            StatusCode::OK
        );
        let own_brand_key = items
            .iter()
            .find(|k| k["role"] == "brand")
            .and_then(|k| k["id"].as_str())
            .expect("brand key")
            .to_owned();
        assert_problem(
            &revoke(&app, &coffee, &own_brand_key).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        let resp = revoke(&app, &coffee, &till).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_problem(
            &get(&app, "/brands/coffee", &till_secret).await,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        );
        app.stop().await;
    }
);

both_backends!(
    replayed_key_creation_never_reveals_the_secret,
    |app| async move {
        let key = idem();
        let body = json!({"role": "admin", "label": "ops"});
        let (s1, first) = app.post("/keys", &app.admin_key, &key, &body).await;
        let (s2, second) = app.post("/keys", &app.admin_key, &key, &body).await;
        assert_eq!(s1, StatusCode::CREATED);
        assert_eq!(s2, StatusCode::CREATED);
        assert_eq!(first["id"], second["id"]);
        assert!(first["secret"].is_string());
        assert_eq!(second["secret"], Value::Null);
        assert_eq!(count(&app, "api_keys").await, 2);
        // The secret is not stored anywhere in the database.
        let secret = first["secret"].as_str().expect("secret");
        let (stored,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys WHERE response_body LIKE $1",
        )
        .bind(format!("%{secret}%"))
        .fetch_one(app.state.store.read())
        .await
        .expect("query");
        assert_eq!(stored, 0);
        app.stop().await;
    }
);

both_backends!(
    revocation_reaches_other_nodes_within_the_cache_ttl,
    |app| async move {
        create_brand(&app, "coffee").await;
        let secret = create_key(&app, "counter", Some("coffee"), None).await;
        let id = get(&app, "/keys?role=counter", &app.admin_key).await.body["items"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        // A second node on the same database with a short cache TTL.
        let mut config = (*app.state.config).clone();
        const TTL: Duration = Duration::from_millis(1_000);
        config.limits.auth_cache_ttl_ms = TTL.as_millis() as u64;
        let other = coalition::interfaces::api::router(coalition::interfaces::api::AppState::new(
            app.state.store.clone(),
            app.clock.clone(),
            config,
            app.state.plugins.clone(),
        ));
        let call = |router: axum::Router| {
            let secret = secret.clone();
            async move {
                let req = axum::http::Request::builder()
                    .uri("/brands/coffee")
                    .header("authorization", format!("Bearer {secret}"))
                    .body(axum::body::Body::empty())
                    .expect("request");
                router.oneshot(req).await.expect("response").status()
            }
        };
        assert_eq!(call(other.clone()).await, StatusCode::OK);
        assert_eq!(
            revoke(&app, &app.admin_key, &id).await.status,
            StatusCode::OK
        );
        // The revoking node refuses at once; the other still trusts its cache, until the TTL.
        assert_eq!(
            get(&app, "/brands/coffee", &secret).await.status,
            StatusCode::UNAUTHORIZED
        );
        // (That the other node still answers from its cache inside the TTL is not asserted: on a
        // loaded machine the TTL may already have passed, so such a check fails at random.)
        tokio::time::sleep(TTL + Duration::from_millis(100)).await;
        assert_eq!(call(other.clone()).await, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }
);

both_backends!(demo_seeds_once_and_its_keys_work, |app| async move {
    coalition::app::demo::seed(&app.state).await.expect("seed");
    let path = app
        .state
        .config
        .data_dir
        .join(coalition::app::demo::KEYS_FILE);
    let first = std::fs::read(&path).expect("keys file");
    let keys = coalition::app::demo::read_keys(&path).expect("parse");
    assert_eq!(count(&app, "brands").await, 5);
    assert_eq!(count(&app, "members").await, 8);
    // One admin, a brand and a counter key per brand, two member keys, plus the test's admin.
    assert_eq!(count(&app, "api_keys").await, 1 + 10 + 2 + 1);

    let brands = get(&app, "/brands", &keys.admin).await;
    let ids: Vec<&str> = brands
        .body
        .as_array()
        .expect("brands")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["cinema", "coffee", "mall", "parking", "restaurant"]
    );
    let coffee = get(&app, "/brands/coffee", &keys.brands["coffee"].counter).await;
    assert_eq!(coffee.status, StatusCode::OK);
    assert!(coffee.body["excluded_categories"]
        .as_array()
        .expect("list")
        .contains(&json!("gift_card")));
    assert_eq!(
        get(&app, "/brands/coffee", &keys.brands["coffee"].brand)
            .await
            .status,
        StatusCode::OK
    );
    let me = get(&app, "/members/me", &keys.members[0].key).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["phone"], keys.members[0].phone.as_str());
    assert!(me.body["birthday"].is_string());
    let tagged = get(&app, "/members?tag=movie-fan", &keys.admin).await;
    assert_eq!(tagged.body["items"].as_array().map(Vec::len), Some(3));

    // A second start changes nothing and the file stays valid.
    coalition::app::demo::seed(&app.state)
        .await
        .expect("seed again");
    assert_eq!(std::fs::read(&path).expect("keys file"), first);
    assert_eq!(count(&app, "brands").await, 5);
    assert_eq!(count(&app, "members").await, 8);
    assert_eq!(count(&app, "api_keys").await, 14);
    assert_eq!(
        get(&app, "/brands", &keys.admin).await.status,
        StatusCode::OK
    );
    app.stop().await;
});

both_backends!(keys_of_a_suspended_brand_stop_working, |app| async move {
    create_brand(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    assert_eq!(
        get(&app, "/brands/coffee", &counter).await.status,
        StatusCode::OK
    );
    let resp = send_json(
        &app,
        Method::PATCH,
        "/brands/coffee",
        &app.admin_key,
        &json!({ "status": "suspended" }),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    // The key was cached as valid; past the cache TTL it is refused.
    tokio::time::sleep(Duration::from_millis(
        app.state.config.limits.auth_cache_ttl_ms + 200,
    ))
    .await;
    let resp = get(&app, "/brands/coffee", &counter).await;
    assert_problem(&resp, StatusCode::UNAUTHORIZED, "invalid_api_key");
    app.stop().await;
});
