//! Bad input of every kind gets a problem+json answer with a stable code, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::fixtures::{
    assert_problem, create_brand, create_key, get, idem, member_id, raw, send_json,
};
use crate::helpers::TestApp;

/// A POST to `/members` as admin with a raw body and content type.
async fn post_members(
    app: &TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> crate::fixtures::Raw {
    let bearer = format!("Bearer {}", app.admin_key);
    let key = idem();
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    raw(app, Method::POST, "/members", &headers, Some(body)).await
}

both_backends!(malformed_and_mistyped_bodies, |app| async move {
    let resp = post_members(
        &app,
        Some("application/json"),
        b"{\"phone\": \"+86".to_vec(),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "malformed_json");
    let resp = post_members(&app, Some("application/json"), b"not json at all".to_vec()).await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "malformed_json");
    let resp = post_members(
        &app,
        Some("application/json"),
        br#"{"phone": 8613800138000, "name": "A"}"#.to_vec(),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let resp = post_members(&app, Some("application/json"), br#"{"name": "A"}"#.to_vec()).await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let resp = post_members(
        &app,
        Some("application/json"),
        br#"{"phone": "+8613800138000", "name": "A", "nmae": "typo"}"#.to_vec(),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let resp = post_members(
        &app,
        Some("application/json"),
        br#"{"phone": "+8613800138000", "name": "A", "tags": "vip"}"#.to_vec(),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let resp = send_json(
        &app,
        Method::POST,
        "/keys",
        &app.admin_key,
        &json!({"role": "superuser"}),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let resp = send_json(
        &app,
        Method::POST,
        "/brands",
        &app.admin_key,
        &json!({"id": "coffee", "name": "C", "earn_points": "lots"}),
    )
    .await;
    assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(crate::fixtures::count(&app, "members").await, 0);
    app.stop().await;
});

both_backends!(missing_content_type_and_huge_bodies, |app| async move {
    let body = br#"{"phone": "+8613800138000", "name": "A"}"#.to_vec();
    let resp = post_members(&app, None, body.clone()).await;
    assert_problem(
        &resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let resp = post_members(&app, Some("text/plain"), body).await;
    assert_problem(
        &resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // 2 MiB of JSON against the 1 MiB limit.
    let huge = format!(
        "{{\"phone\": \"+8613800138000\", \"name\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let resp = post_members(&app, Some("application/json"), huge.into_bytes()).await;
    assert_problem(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    app.stop().await;
});

both_backends!(field_validation_codes, |app| async move {
    for (body, code) in [
        (
            json!({"phone": "13800138000", "name": "A"}),
            "invalid_phone",
        ),
        (json!({"phone": "+86-abc", "name": "A"}), "invalid_phone"),
        (
            json!({"phone": "+8613800138000", "name": ""}),
            "invalid_name",
        ),
        (
            json!({"phone": "+8613800138000", "name": "=SUM(A1)"}),
            "invalid_name",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "birthday": "1990-02-30"}),
            "invalid_birthday",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "birthday": "17/05/1990"}),
            "invalid_birthday",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "email": "nope"}),
            "invalid_email",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "tags": ["ok", "not ok!"]}),
            "invalid_tag",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "tags": ["x".repeat(41)]}),
            "invalid_tag",
        ),
        (
            json!({"phone": "+8613800138000", "name": "A", "tags": (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "too_many_tags",
        ),
    ] {
        let resp = send_json(&app, Method::POST, "/members", &app.admin_key, &body).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, code);
        assert!(resp.body["extra"]["field"].is_string(), "{}", resp.text);
    }
    assert_eq!(crate::fixtures::count(&app, "members").await, 0);
    app.stop().await;
});

both_backends!(unknown_ids_are_404, |app| async move {
    let ghost = "0195f0c4a8a87c3e9b1d2e3f4a5b6c7d";
    assert_problem(
        &get(&app, &format!("/members/{ghost}"), &app.admin_key).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &get(&app, "/brands/ghost", &app.admin_key).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/members/{ghost}"),
            json!({"name": "X"}),
        ),
        (
            Method::POST,
            format!("/members/{ghost}/block"),
            json!({"reason": "r"}),
        ),
        (
            Method::POST,
            format!("/members/{ghost}/unblock"),
            json!({"reason": "r"}),
        ),
        (
            Method::POST,
            format!("/members/{ghost}/tags"),
            json!({"tags": ["vip"]}),
        ),
        (
            Method::PATCH,
            "/brands/ghost".to_owned(),
            json!({"name": "X"}),
        ),
    ] {
        let resp = send_json(&app, method, &path, &app.admin_key, &body).await;
        assert_problem(&resp, StatusCode::NOT_FOUND, "not_found");
    }
    let bearer = format!("Bearer {}", app.admin_key);
    for path in [
        format!("/members/{ghost}/tags/vip"),
        "/keys/ghost".to_owned(),
    ] {
        let resp = raw(
            &app,
            Method::DELETE,
            &path,
            &[("authorization", &bearer), ("idempotency-key", &idem())],
            None,
        )
        .await;
        assert_problem(&resp, StatusCode::NOT_FOUND, "not_found");
    }
    app.stop().await;
});

both_backends!(bad_path_and_query_params, |app| async move {
    let id = member_id(&app, "+8613800138000", "A").await;
    assert_problem(
        &get(&app, "/members/not%20an%20id", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_problem(
        &get(&app, "/members/%FF%FE", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_problem(
        &get(
            &app,
            &format!("/members/{}", "a".repeat(65)),
            &app.admin_key,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    let bearer = format!("Bearer {}", app.admin_key);
    let resp = raw(
        &app,
        Method::DELETE,
        &format!("/members/{id}/tags/bad%2Ftag"),
        &[("authorization", &bearer), ("idempotency-key", &idem())],
        None,
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_tag");

    for query in [
        "limit=abc",
        "limit=0",
        "limit=201",
        "limit=-1",
        "status=zombie",
        "unknown=1",
        "cursor=%27%3B%20DROP%20TABLE%20members",
        "tier=",
    ] {
        let resp = get(&app, &format!("/members?{query}"), &app.admin_key).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_query");
    }
    assert_problem(
        &get(&app, "/members?phone=12345", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_phone",
    );
    assert_problem(
        &get(&app, "/members?tag=%21%21", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_tag",
    );
    assert_problem(
        &get(&app, "/keys?role=king", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&app, "/keys?limit=1000", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&app, "/members/export?format=xml", &app.admin_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    app.stop().await;
});

both_backends!(missing_or_bad_auth_is_401, |app| async move {
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
        vec![(
            "authorization",
            "Bearer coa_0000000000000000000000000000000000000000000000000000000000000000",
        )],
    ] {
        let resp = raw(&app, Method::GET, "/members", &headers, None).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
        assert_eq!(resp.headers["content-type"], "application/problem+json");
        let code = resp.body["code"].as_str().expect("code");
        assert!(
            code == "unauthenticated" || code == "invalid_api_key",
            "{code}"
        );
    }
    let resp = raw(&app, Method::GET, "/brands", &[], None).await;
    assert_problem(&resp, StatusCode::UNAUTHORIZED, "unauthenticated");
    let resp = raw(
        &app,
        Method::POST,
        "/members",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "k"),
        ],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_problem(&resp, StatusCode::UNAUTHORIZED, "unauthenticated");
    app.stop().await;
});

both_backends!(wrong_role_is_403, |app| async move {
    create_brand(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let brand = create_key(&app, "brand", Some("coffee"), None).await;
    let id = member_id(&app, "+8613800138000", "A").await;
    let member = create_key(&app, "member", None, Some(&id)).await;
    for (key, method, path, body) in [
        (
            &counter,
            Method::POST,
            "/brands".to_owned(),
            json!({"id": "x1", "name": "X"}),
        ),
        (
            &counter,
            Method::POST,
            format!("/members/{id}/block"),
            json!({"reason": "r"}),
        ),
        (
            &brand,
            Method::POST,
            format!("/members/{id}/block"),
            json!({"reason": "r"}),
        ),
        (
            &member,
            Method::POST,
            "/members".to_owned(),
            json!({"phone": "+8613800138001", "name": "B"}),
        ),
        (
            &member,
            Method::POST,
            "/keys".to_owned(),
            json!({"role": "admin"}),
        ),
        (
            &counter,
            Method::POST,
            "/keys".to_owned(),
            json!({"role": "counter"}),
        ),
    ] {
        let resp = send_json(&app, method, &path, key, &body).await;
        assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_problem(
        &get(&app, "/members/export", &counter).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &get(&app, "/keys", &member).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    app.stop().await;
});

both_backends!(writes_need_an_idempotency_key, |app| async move {
    let bearer = format!("Bearer {}", app.admin_key);
    let body = serde_json::to_vec(&json!({"phone": "+8613800138000", "name": "A"})).expect("json");
    let resp = raw(
        &app,
        Method::POST,
        "/members",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(body.clone()),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "idempotency_key_required");
    let long = "k".repeat(201);
    let resp = raw(
        &app,
        Method::POST,
        "/members",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("idempotency-key", &long),
        ],
        Some(body),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    for (method, path) in [
        (Method::POST, "/brands"),
        (Method::POST, "/keys"),
        (Method::DELETE, "/keys/x"),
        (Method::POST, "/members/import"),
    ] {
        let resp = raw(
            &app,
            method,
            path,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            Some(b"{}".to_vec()),
        )
        .await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "idempotency_key_required");
    }
    let resp = raw(
        &app,
        Method::PUT,
        "/members",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_problem(&resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(crate::fixtures::count(&app, "members").await, 0);
    app.stop().await;
});
