//! Set-up shared by the counter tests: an app without background jobs, coupon templates
//! inserted with SQL (the template HTTP API lives elsewhere), members in bulk, passes.

#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, T0_MS};

/// Defines `name::sqlite` and `name::postgres` on an app whose background jobs are off.
#[macro_export]
macro_rules! counter_test {
    ($name:ident, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::helpers::TestApp) {
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                run($crate::ledger::spawn_quiet($crate::helpers::Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                run($crate::ledger::spawn_quiet($crate::helpers::Backend::Postgres).await).await;
            }
        }
    };
    ($name:ident, config = $tweak:expr, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::helpers::TestApp) {
                $body.await
            }

            async fn spawn(backend: $crate::helpers::Backend) -> $crate::helpers::TestApp {
                $crate::helpers::TestApp::spawn_with(backend, |config| {
                    config.jobs.enabled = false;
                    let tweak: fn(&mut coalition::interfaces::config::Config) = $tweak;
                    tweak(config);
                })
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                run(spawn($crate::helpers::Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                run(spawn($crate::helpers::Backend::Postgres).await).await;
            }
        }
    };
}

/// A fresh idempotency key.
pub fn idem() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// SQL fixture: a coupon template funded by `funding` and honoured at `honouring`.
pub async fn sql_coupon_template(
    app: &TestApp,
    id: &str,
    funding: &str,
    honouring: &str,
    validity_days: i64,
    value_cents: i64,
) {
    sqlx::query(
        "INSERT INTO coupon_templates (id, title, funding_brand, honouring_brand, plugin, params,
            exclusive, validity_days, value_cents, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'coupon-logic', '{}', 0, $5, $6, 'active', $7, $7)",
    )
    .bind(id)
    .bind(format!("Template {id}"))
    .bind(funding)
    .bind(honouring)
    .bind(validity_days)
    .bind(value_cents)
    .bind(T0_MS)
    .execute(app.state.store.write())
    .await
    .expect("insert coupon template");
}

/// SQL fixture: one coupon of `template` issued to `member` by an admin, returning its code.
pub async fn sql_coupon(app: &TestApp, template: &str, member: &str, source_id: &str) -> String {
    let mut tx = app.state.store.begin().await.expect("begin");
    let coupon =
        coalition::domain::coupons::issue(&mut tx, template, member, "admin", source_id, T0_MS)
            .await
            .expect("issue coupon");
    tx.commit().await.expect("commit");
    coupon.code
}

/// Imports `count` members with phones from `first` on and the given tags; returns the
/// number created.
pub async fn import_members(app: &TestApp, first: u64, count: u64, tags: &[&str]) -> u64 {
    let mut body = String::new();
    for i in first..first + count {
        body.push_str(
            &json!({ "phone": format!("+86137{i:08}"), "name": format!("Member {i}"),
                     "tags": tags })
            .to_string(),
        );
        body.push('\n');
    }
    let resp = app
        .client
        .post(format!("{}/members/import", app.base))
        .bearer_auth(&app.admin_key)
        .header("Idempotency-Key", idem())
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("import");
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.expect("report");
    report["created"].as_u64().expect("created")
}

/// A member's pass (as an admin).
pub async fn pass(app: &TestApp, member: &str) -> Value {
    let (status, body) = app
        .get(&format!("/members/{member}/pass"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "pass: {body}");
    body
}

/// Blacklists a member or device as admin.
pub async fn blacklist(app: &TestApp, kind: &str, subject: &str) {
    let (status, body) = app
        .post(
            "/risk/blacklist",
            &app.admin_key,
            &idem(),
            &json!({ "kind": kind, "subject": subject, "reason": "coupon abuse" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "blacklist: {body}");
}

/// One purchase line.
pub fn line(id: &str, quantity: i64, unit_price_cents: i64) -> Value {
    json!({ "line_id": id, "sku": format!("SKU-{id}"), "category": "general",
            "quantity": quantity, "unit_price_cents": unit_price_cents })
}
