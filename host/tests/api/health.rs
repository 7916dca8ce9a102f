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

/// A metrics token as an operator would make one (`openssl rand -hex 32`).
const METRICS_TOKEN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async fn scrape(url: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(bearer) = bearer {
        req = req.bearer_auth(bearer);
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status();
    (status, resp.text().await.expect("text"))
}

mod metrics_are_not_public {
    use super::*;
    use crate::fixtures::{create_brand, create_key};
    use crate::helpers::{Backend, TestApp};

    async fn run(backend: Backend) {
        let app = TestApp::spawn_with(backend, |config| {
            config.metrics.bearer_token = METRICS_TOKEN.to_owned();
        })
        .await;
        create_brand(&app, "coffee").await;
        let brand = create_key(&app, "brand", Some("coffee"), None).await;
        let url = format!("{}/metrics", app.base);
        // Regression: `/metrics` answered anyone (~650 KB naming routes, plugins and brands).
        let (status, body) = scrape(&url, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(!body.contains("http_requests_total"), "{body}");
        let (status, _) = scrape(&url, Some("not-the-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = scrape(&url, Some(&METRICS_TOKEN[..40])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = scrape(&url, Some(&brand)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        for key in [METRICS_TOKEN, app.admin_key.as_str()] {
            let (status, body) = scrape(&url, Some(key)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body.contains("http_requests_total"), "{body}");
        }
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

mod metrics_listener_serves_only_metrics {
    use super::*;
    use crate::helpers::{Backend, TestApp};

    async fn run(backend: Backend) {
        let app = TestApp::spawn_with(backend, |config| {
            config.metrics.bearer_token = METRICS_TOKEN.to_owned();
            config.metrics.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        // Some traffic to count.
        let _ = app
            .call(reqwest::Method::GET, "/healthz", None, None, None)
            .await;
        let base = format!("http://{}", app.metrics_addr.expect("metrics listener"));
        let (status, _) = scrape(&format!("{base}/metrics"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = scrape(&format!("{base}/metrics"), Some(METRICS_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("http_requests_total"), "{body}");
        // Nothing of the API is served there, not even with an admin key.
        let (status, _) = scrape(&format!("{base}/brands"), Some(&app.admin_key)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}
