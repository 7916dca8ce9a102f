//! Health, readiness, metrics, OpenAPI and the problem+json contract for bad requests.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;

both_backends!(health_and_ready_answer, |app| async move {
    let (status, body) = app
        .call(reqwest::Method::GET, "/healthz", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, _) = app
        .call(reqwest::Method::GET, "/readyz", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .call(reqwest::Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"]["/healthz"].is_object());
    app.stop().await;
});

both_backends!(unknown_route_is_problem_json, |app| async move {
    let resp = app
        .client
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "not_found");
    let _ = json!({});
    app.stop().await;
});
