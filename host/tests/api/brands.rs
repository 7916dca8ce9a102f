//! Brands: admin create/update, validation codes, per-brand read scope, the public list.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::fixtures::{assert_problem, create_brand, create_key, get, idem, send_json};

both_backends!(admin_creates_and_updates_brands, |app| async move {
    let (status, brand) = app
        .post(
            "/brands",
            &app.admin_key,
            &idem(),
            &json!({
                "id": "coffee",
                "name": "Bean There",
                "earn_points": 2,
                "earn_unit_cents": 100,
                "excluded_skus": ["GC-100", " GC-100 "],
                "excluded_categories": ["gift_card"]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{brand}");
    assert_eq!(brand["id"], "coffee");
    assert_eq!(brand["status"], "active");
    assert_eq!(brand["earn_points"], 2);
    assert_eq!(brand["excluded_skus"], json!(["GC-100"]));

    // Defaults apply when the earn rule is omitted.
    let cinema = create_brand(&app, "cinema").await;
    assert_eq!(cinema["earn_points"], 1);
    assert_eq!(cinema["earn_unit_cents"], 100);

    let dup = send_json(
        &app,
        Method::POST,
        "/brands",
        &app.admin_key,
        &json!({"id": "coffee", "name": "Again"}),
    )
    .await;
    assert_problem(&dup, StatusCode::CONFLICT, "brand_exists");

    let updated = send_json(
        &app,
        Method::PATCH,
        "/brands/coffee",
        &app.admin_key,
        &json!({ "status": "suspended", "earn_points": 3, "excluded_categories": ["gift_card", "delivery_fee"] }),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["status"], "suspended");
    assert_eq!(updated.body["earn_points"], 3);
    assert_eq!(updated.body["earn_unit_cents"], 100);
    assert_eq!(updated.body["name"], "Bean There");
    assert_eq!(
        updated.body["excluded_categories"],
        json!(["gift_card", "delivery_fee"])
    );

    let read = get(&app, "/brands/coffee", &app.admin_key).await;
    assert_eq!(read.body["earn_points"], 3);
    assert_eq!(read.body["status"], "suspended");
    app.stop().await;
});

both_backends!(brand_validation_has_clear_codes, |app| async move {
    for (body, code) in [
        (json!({"id": "Coffee", "name": "x"}), "invalid_brand_id"),
        (json!({"id": "c", "name": "x"}), "invalid_brand_id"),
        (json!({"id": "coffee", "name": "  "}), "invalid_name"),
        (
            json!({"id": "coffee", "name": "x", "earn_points": -1}),
            "invalid_earn_rule",
        ),
        (
            json!({"id": "coffee", "name": "x", "earn_unit_cents": 0}),
            "invalid_earn_rule",
        ),
        (
            json!({"id": "coffee", "name": "x", "earn_points": 100000}),
            "invalid_earn_rule",
        ),
        (
            json!({"id": "coffee", "name": "x", "excluded_skus": [""]}),
            "invalid_exclusions",
        ),
    ] {
        let resp = send_json(&app, Method::POST, "/brands", &app.admin_key, &body).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, code);
        assert!(resp.body["extra"]["field"].is_string(), "{}", resp.text);
    }
    create_brand(&app, "coffee").await;
    let resp = send_json(
        &app,
        Method::PATCH,
        "/brands/coffee",
        &app.admin_key,
        &json!({"earn_unit_cents": -5}),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_earn_rule");
    let resp = send_json(
        &app,
        Method::PATCH,
        "/brands/nope",
        &app.admin_key,
        &json!({"name": "x"}),
    )
    .await;
    assert_problem(&resp, StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
});

both_backends!(brand_keys_read_only_their_own_brand, |app| async move {
    create_brand(&app, "coffee").await;
    create_brand(&app, "cinema").await;
    let coffee_brand = create_key(&app, "brand", Some("coffee"), None).await;
    let coffee_counter = create_key(&app, "counter", Some("coffee"), None).await;
    let cinema_brand = create_key(&app, "brand", Some("cinema"), None).await;

    let own = get(&app, "/brands/coffee", &coffee_brand).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert_eq!(own.body["id"], "coffee");
    assert_eq!(
        get(&app, "/brands/coffee", &coffee_counter).await.status,
        StatusCode::OK
    );

    assert_problem(
        &get(&app, "/brands/cinema", &coffee_brand).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &get(&app, "/brands/coffee", &cinema_brand).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // Brand keys may neither create nor update brands, not even their own.
    let resp = send_json(
        &app,
        Method::POST,
        "/brands",
        &coffee_brand,
        &json!({"id": "tea", "name": "Tea"}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::PATCH,
        "/brands/coffee",
        &coffee_brand,
        &json!({"earn_points": 100}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        get(&app, "/brands/coffee", &app.admin_key).await.body["earn_points"],
        1
    );

    // Everyone authenticated sees the list of ids and names, and nothing more.
    let list = get(&app, "/brands", &coffee_counter).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body.as_array().expect("array");
    let ids: Vec<&str> = items.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids, vec!["cinema", "coffee"]);
    assert!(items[0].get("earn_points").is_none());
    assert_eq!(items[1]["name"], "Brand coffee");
    app.stop().await;
});

both_backends!(brand_creation_is_idempotent, |app| async move {
    let key = idem();
    let body = json!({"id": "mall", "name": "The Mall"});
    let (first, a) = app.post("/brands", &app.admin_key, &key, &body).await;
    let resp = app
        .client
        .post(format!("{}/brands", app.base))
        .bearer_auth(&app.admin_key)
        .header("Idempotency-Key", &key)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(first, StatusCode::CREATED);
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let b: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(a, b);
    let (status, other) = app
        .post(
            "/brands",
            &app.admin_key,
            &key,
            &json!({"id": "mall2", "name": "Another"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(other["code"], "idempotency_key_reused");
    assert_eq!(crate::fixtures::count(&app, "brands").await, 1);
    app.stop().await;
});

both_backends!(
    openapi_documents_the_routes_without_dangling_refs,
    |app| async move {
        let (status, doc) = app
            .call(Method::GET, "/openapi.json", None, None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        for (path, methods) in [
            ("/brands", vec!["get", "post"]),
            ("/brands/{brand_id}", vec!["get", "patch"]),
            ("/keys", vec!["get", "post"]),
            ("/keys/{key_id}", vec!["delete"]),
            ("/members", vec!["get", "post"]),
            ("/members/me", vec!["get"]),
            ("/members/{member_id}", vec!["get", "patch"]),
            ("/members/{member_id}/tags", vec!["post"]),
            ("/members/{member_id}/tags/{tag}", vec!["delete"]),
            ("/members/{member_id}/block", vec!["post"]),
            ("/members/{member_id}/unblock", vec!["post"]),
            ("/members/import", vec!["post"]),
            ("/members/export", vec!["get"]),
            // Plugin lifecycle and audit.
            ("/plugins", vec!["get", "post"]),
            ("/plugins/{version_id}/approve", vec!["post"]),
            ("/plugins/{version_id}/dry-run", vec!["post"]),
            ("/plugin-names/{name}/rollback", vec!["post"]),
            ("/plugin-names/{name}/kill", vec!["post"]),
            ("/audit/verify", vec!["get"]),
            ("/brands/{brand_id}/signing-keys", vec!["post"]),
            // Perks, coupons and the counter.
            (
                "/members/{member_id}/perks/{plugin}/{perk_id}/redeem",
                vec!["post"],
            ),
            ("/coupon-templates", vec!["get", "post"]),
            ("/brands/{brand_id}/checkouts", vec!["post"]),
            ("/members/{member_id}/coupons/{code}/return", vec!["post"]),
            (
                "/brands/{brand_id}/checkouts/{checkout_id}/cancel",
                vec!["post"],
            ),
            ("/campaigns/{campaign_id}/issue", vec!["post"]),
            ("/members/{member_id}/pass.png", vec!["get"]),
            ("/pass-keys", vec!["get"]),
            ("/brands/{brand_id}/offline-purchases", vec!["post"]),
            ("/risk/blacklist", vec!["get", "post"]),
            // Settlement.
            ("/settlement/run", vec!["post"]),
            ("/settlement/periods/{period_id}/close", vec!["post"]),
            (
                "/settlement/periods/{period_id}/statements/{party}",
                vec!["get"],
            ),
            (
                "/settlement/periods/{period_id}/reconciliation",
                vec!["get"],
            ),
        ] {
            for method in methods {
                assert!(
                    doc["paths"][path][method].is_object(),
                    "{method} {path} is not documented"
                );
            }
        }
        let text = doc.to_string();
        let prefix = "#/components/schemas/";
        for piece in text.split(prefix).skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "dangling schema ref {name}"
            );
        }
        app.stop().await;
    }
);
