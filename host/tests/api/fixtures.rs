//! Shared set-up for the brands, members, keys and bad-input tests: brands, keys and members
//! created over HTTP, raw requests, and the problem+json assertion.

#![allow(dead_code)]

use base64::Engine as _;
use coalition::plugins::signing;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// A fresh idempotency key.
pub fn idem() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Creates a brand as admin and returns it.
pub async fn create_brand(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .post(
            "/brands",
            &app.admin_key,
            &idem(),
            &json!({ "id": id, "name": format!("Brand {id}") }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Creates a key as admin and returns its secret.
pub async fn create_key(
    app: &TestApp,
    role: &str,
    brand: Option<&str>,
    member: Option<&str>,
) -> String {
    let (status, body) = app
        .post(
            "/keys",
            &app.admin_key,
            &idem(),
            &json!({ "role": role, "brand_id": brand, "member_id": member, "label": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["secret"].as_str().expect("secret").to_owned()
}

/// Registers a member with `key` and returns the response body.
pub async fn register(app: &TestApp, key: &str, phone: &str, name: &str) -> Value {
    let (status, body) = app
        .post(
            "/members",
            key,
            &idem(),
            &json!({ "phone": phone, "name": name }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Registers a member as admin and returns its id.
pub async fn member_id(app: &TestApp, phone: &str, name: &str) -> String {
    let admin = app.admin_key.clone();
    register(app, &admin, phone, name).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// A response as the tests need it: status, headers and the body as JSON (or a string).
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends a request with exactly the given headers and raw body.
pub async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Raw {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    Raw {
        status,
        headers,
        body,
        text,
    }
}

/// Asserts a problem+json response with this status and code.
pub fn assert_problem(resp: &Raw, status: StatusCode, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text);
    assert_eq!(
        resp.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{}",
        resp.text
    );
    assert_eq!(resp.body["code"], code, "{}", resp.text);
    assert_eq!(resp.body["status"], status.as_u16(), "{}", resp.text);
}

/// Sends a JSON request with a bearer key and a fresh idempotency key.
pub async fn send_json(app: &TestApp, method: Method, path: &str, key: &str, body: &Value) -> Raw {
    let bearer = format!("Bearer {key}");
    let idem = idem();
    raw(
        app,
        method,
        path,
        &[
            ("authorization", &bearer),
            ("idempotency-key", &idem),
            ("content-type", "application/json"),
        ],
        Some(serde_json::to_vec(body).expect("json")),
    )
    .await
}

/// Sends a GET with a bearer key.
pub async fn get(app: &TestApp, path: &str, key: &str) -> Raw {
    let bearer = format!("Bearer {key}");
    raw(app, Method::GET, path, &[("authorization", &bearer)], None).await
}

/// Counts rows of a table directly.
pub async fn count(app: &TestApp, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"))
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
    n
}

/// Where `cargo xtask build-plugins` put the components (`COALITION_PLUGINS_DIR` overrides),
/// checked to hold `expected` (`<expected>.wasm`) so a missing build fails with the fix.
pub fn plugins_dir(expected: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("COALITION_PLUGINS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("plugins")
        });
    assert!(
        dir.join(format!("{expected}.wasm")).exists(),
        "plugin components missing in {}: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// Installs the built component `file` (`<file>.wasm` + `<file>.toml`) through the registry,
/// trusted (the platform's direct install), with `config`.
pub async fn try_install_plugin(
    app: &TestApp,
    file: &str,
    config: Value,
) -> Result<coalition::plugins::registry::InstalledVersion, coalition::foundation::error::DomainError>
{
    use coalition::foundation::clock::Clock;
    let dir = plugins_dir(file);
    let component = std::fs::read(dir.join(format!("{file}.wasm"))).expect("component");
    let manifest = std::fs::read_to_string(dir.join(format!("{file}.toml"))).expect("manifest");
    coalition::plugins::registry::install(
        &app.state.store,
        &app.state.plugins,
        &manifest,
        component,
        config.as_object().cloned().unwrap_or_default(),
        "test",
        app.clock.now_ms(),
    )
    .await
}

/// [`try_install_plugin`], panicking with the reason if it fails.
pub async fn install_plugin(app: &TestApp, file: &str, config: Value) {
    if let Err(err) = try_install_plugin(app, file, config).await {
        panic!("install {file}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Partners: a brand with a back-office key and an approved signing key, and signed uploads.

/// `(manifest, component)` of a built plugin.
pub fn package(file_stem: &str) -> (String, Vec<u8>) {
    let dir = plugins_dir("coffee-bonus-next");
    let component = std::fs::read(dir.join(format!("{file_stem}.wasm"))).expect("component");
    let manifest = std::fs::read_to_string(dir.join(format!("{file_stem}.toml"))).expect("toml");
    (manifest, component)
}

/// A brand with a back-office key and an approved signing key.
pub struct Partner {
    pub brand: String,
    pub api_key: String,
    pub key_id: String,
    pub secret: String,
}

pub async fn partner(app: &TestApp, brand: &str) -> Partner {
    create_brand(app, brand).await;
    let api_key = create_key(app, "brand", Some(brand), None).await;
    let (secret, public) = signing::generate_keypair();
    let (status, key) = app
        .post(
            &format!("/brands/{brand}/signing-keys"),
            &api_key,
            &idem(),
            &json!({ "public_key": public, "label": "release key" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    assert_eq!(key["status"], "pending");
    let key_id = key["id"].as_str().expect("id").to_owned();
    // A brand cannot approve its own key.
    let (status, _) = app
        .post(
            &format!("/signing-keys/{key_id}/approve"),
            &api_key,
            &idem(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, key) = app
        .post(
            &format!("/signing-keys/{key_id}/approve"),
            &app.admin_key,
            &idem(),
            &json!({ "reason": "verified with the brand" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["status"], "approved");
    Partner {
        brand: brand.to_owned(),
        api_key,
        key_id,
        secret,
    }
}

pub async fn upload_raw(
    app: &TestApp,
    p: &Partner,
    manifest: &str,
    component: &[u8],
    signature: &str,
) -> (StatusCode, Value) {
    app.post(
        "/plugins",
        &p.api_key,
        &idem(),
        &json!({
            "manifest": manifest,
            "component_base64": base64::engine::general_purpose::STANDARD.encode(component),
            "key_id": p.key_id,
            "signature": signature,
        }),
    )
    .await
}

/// Uploads a built plugin signed by `p`; returns the version.
pub async fn upload(app: &TestApp, p: &Partner, file_stem: &str) -> Value {
    let (manifest, component) = package(file_stem);
    let signature =
        signing::sign(&p.secret, manifest.as_bytes(), &component).expect("sign package");
    let (status, body) = upload_raw(app, p, &manifest, &component, &signature).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Upload (coffee), approve and deploy `file_stem`; returns the version id.
pub async fn ship(app: &TestApp, p: &Partner, file_stem: &str) -> String {
    let version = upload(app, p, file_stem).await;
    assert_eq!(version["status"], "validated", "{version}");
    let id = version["id"].as_str().expect("id").to_owned();
    let (status, body) = app
        .post(
            &format!("/plugins/{id}/approve"),
            &app.admin_key,
            &idem(),
            &json!({ "reason": "reviewed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/plugins/{id}/deploy"),
            &app.admin_key,
            &idem(),
            &json!({ "reason": "go" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    id
}

/// Records a coffee purchase of 32.00 (32 base points); returns the response body.
pub async fn coffee_purchase(app: &TestApp, counter: &str, member: &str) -> Value {
    let order_id = format!("O-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = app
        .post(
            "/brands/coffee/purchases",
            counter,
            &idem(),
            &json!({ "order_id": order_id, "member_id": member, "lines": [
                { "line_id": "1", "sku": "latte", "category": "coffee", "quantity": 1,
                  "unit_price_cents": 3_200 }
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// The cinema's half-price ticket coupon, applied by coupon-logic.
pub async fn cinema_template(app: &TestApp) {
    let (status, body) = app
        .post(
            "/coupon-templates",
            &app.admin_key,
            &idem(),
            &json!({
                "id": "cinema-ticket-half", "title": "Half-price cinema ticket",
                "funding_brand": "restaurant", "honouring_brand": "cinema",
                "plugin": "coupon-logic",
                "params": { "kind": "percent-off-category", "category": "ticket",
                            "percent-bp": "5000", "cap-cents": "4000" },
                "validity_days": 30, "value_cents": 4000
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
