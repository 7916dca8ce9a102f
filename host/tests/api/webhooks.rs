//! Webhooks on both databases, delivered to a real HTTP receiver started by the test (axum on
//! 127.0.0.1, so the apps here set `webhooks.allow_private_targets`): signatures verify with the
//! subscription's secret; a receiver that fails three times gets the event once, after four
//! logged attempts; a delivery is dead-lettered after its budget and a manual replay delivers
//! it; private and loopback targets are refused when the setting is off (at subscribe time and
//! again at delivery time); a brand sees and changes only its own subscriptions and receives
//! only its own events; and a receiver that is down while the host is killed with SIGKILL still
//! gets every committed event once the host is back.
//!
//! Tests wait by polling with generous hang guards; nothing asserts on time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::{Backend, TestApp};

/// Polls 100 ms apart at most this many times before a wait is declared hung.
const HANG_GUARD_POLLS: u32 = 1_200;
/// Attempts per budget in these tests (small, so dead-lettering comes quickly).
const MAX_ATTEMPTS: i64 = 4;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// An HTTP receiver on 127.0.0.1: fails the first `fail_first` requests (500), fails every
/// request while `failing` is set, and keeps what it accepted.
#[derive(Clone)]
struct Receiver {
    url: String,
    accepted: Arc<Mutex<Vec<Received>>>,
    calls: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::serve(listener, fail_first)
    }

    fn serve(listener: tokio::net::TcpListener, fail_first: usize) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver {
            url: format!("http://{addr}/hook"),
            accepted: Arc::default(),
            calls: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            failing: Arc::default(),
        };
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let r = r.clone();
                    async move {
                        let call = r.calls.fetch_add(1, Ordering::SeqCst);
                        if call < r.fail_first.load(Ordering::SeqCst)
                            || r.failing.load(Ordering::SeqCst)
                        {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        r.accepted.lock().expect("lock").push(Received {
                            id: header("coalition-webhook-id"),
                            timestamp: header("coalition-webhook-timestamp"),
                            signature: header("coalition-webhook-signature"),
                            body: body.to_vec(),
                        });
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        receiver
    }

    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().expect("lock").clone()
    }
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.webhooks.allow_private_targets = true;
        config.webhooks.poll_interval_ms = 50;
        // No waits between retries: the clock is frozen in these tests anyway.
        config.webhooks.retry_base_ms = 0;
        config.webhooks.retry_max_ms = 0;
        config.webhooks.max_attempts = MAX_ATTEMPTS;
    })
    .await
}

/// Defines `name::sqlite` and `name::postgres` on an app set up for webhooks.
macro_rules! webhook_test {
    ($name:ident, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: TestApp) {
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                run(spawn(Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                run(spawn(Backend::Postgres).await).await;
            }
        }
    };
}

/// Polls `check` until it gives `Some`, 100 ms apart, within the hang guard.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..HANG_GUARD_POLLS {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

async fn subscribe(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    app.post("/webhooks", key, &idem(), &body).await
}

async fn deliveries(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/webhooks/deliveries{query}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("deliveries").clone()
}

async fn purchase(app: &TestApp, counter: &str, brand: &str, member: &str, order: &str) {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            counter,
            &idem(),
            &json!({ "order_id": order, "member_id": member, "lines": [
                { "line_id": "1", "sku": "latte", "category": "drinks", "quantity": 1,
                  "unit_price_cents": 2_500 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The signature as a receiver computes it, independently of the host's code.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

webhook_test!(
    a_receiver_failing_three_times_gets_the_signed_event_once,
    |app| async move {
        create_brand(&app, "cafe").await;
        create_brand(&app, "tea").await;
        let cafe = create_key(&app, "brand", Some("cafe"), None).await;
        let tea = create_key(&app, "brand", Some("tea"), None).await;
        let counter = create_key(&app, "counter", Some("cafe"), None).await;
        let flaky = Receiver::start(3).await;
        let tea_receiver = Receiver::start(0).await;
        let (status, created) = subscribe(
            &app,
            &cafe,
            json!({ "url": flaky.url, "event_types": ["purchase", "refund"] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let secret = created["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created["subscription"]["brand_id"], "cafe");
        let (status, body) = subscribe(
            &app,
            &tea,
            json!({ "url": tea_receiver.url, "event_types": ["purchase"] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // The secret is shown once: the listing never carries it.
        let (_, list) = app.get("/webhooks", &cafe).await;
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        assert!(!list.to_string().contains(&secret));

        let member = member_id(&app, "+8613800138000", "Alice Liddell").await;
        purchase(&app, &counter, "cafe", &member, "C-1").await;

        let got = wait_for("the delivery", || {
            let flaky = flaky.clone();
            async move { flaky.accepted().first().cloned() }
        })
        .await;
        let delivered = wait_for("the delivery to be logged as delivered", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                let list = deliveries(app, &cafe, "?status=delivered").await;
                list.first().cloned()
            }
        })
        .await;
        // Four attempts (three 500s, then 204), logged; the receiver accepted exactly one.
        assert_eq!(delivered["attempts"], 4, "{delivered}");
        let codes: Vec<i64> = delivered["log"]
            .as_array()
            .expect("log")
            .iter()
            .map(|a| a["status_code"].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(codes, vec![500, 500, 500, 204]);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        assert_eq!(flaky.accepted().len(), 1);

        // The signature verifies with the secret, over timestamp + "." + body.
        assert_eq!(
            got.signature,
            expected_signature(&secret, &got.timestamp, &got.body)
        );
        let ts: i64 = got.timestamp.parse().expect("timestamp");
        assert!(coalition::workflows::webhooks::verify(
            &secret,
            ts,
            &got.body,
            &got.signature
        ));
        assert_ne!(
            got.signature,
            expected_signature("whsec_wrong", &got.timestamp, &got.body)
        );
        let event: Value = serde_json::from_slice(&got.body).expect("json body");
        assert_eq!(event["id"], got.id);
        assert_eq!(event["id"], delivered["event_id"]);
        assert_eq!(event["type"], "purchase");
        assert_eq!(event["brand_id"], "cafe");
        assert_eq!(event["member_id"], member);
        assert_eq!(event["data"]["order_id"], "C-1");
        assert_eq!(event["data"]["total_cents"], 2_500);
        // A brand's event carries no personal data of the member.
        assert!(!String::from_utf8_lossy(&got.body).contains("Alice"));

        // The other brand's endpoint got nothing of cafe's purchase.
        assert!(tea_receiver.accepted().is_empty());
        assert!(deliveries(&app, &tea, "").await.is_empty());

        // A refund is an event of its own, delivered too.
        let (status, body) = app
            .post(
                "/brands/cafe/purchases/C-1/refunds",
                &counter,
                &idem(),
                &json!({ "refund_id": "R-1", "lines": [{ "line_id": "1", "quantity": 1 }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let refund = wait_for("the refund event", || {
            let flaky = flaky.clone();
            async move {
                flaky.accepted().into_iter().find_map(|r| {
                    let v: Value = serde_json::from_slice(&r.body).ok()?;
                    (v["type"] == "refund").then_some(v)
                })
            }
        })
        .await;
        assert_eq!(refund["data"]["refund_id"], "R-1");
        app.stop().await;
    }
);

webhook_test!(
    a_dead_lettered_delivery_is_delivered_by_a_manual_replay,
    |app| async move {
        create_brand(&app, "cafe").await;
        let cafe = create_key(&app, "brand", Some("cafe"), None).await;
        let counter = create_key(&app, "counter", Some("cafe"), None).await;
        let down = Receiver::start(0).await;
        down.failing.store(true, Ordering::SeqCst);
        let (status, created) = subscribe(
            &app,
            &cafe,
            json!({ "url": down.url, "event_types": ["purchase"] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let subscription = created["subscription"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let member = member_id(&app, "+8613800138001", "Bob").await;
        purchase(&app, &counter, "cafe", &member, "C-1").await;
        let dead = wait_for("the dead letter", || {
            let app = &app;
            let cafe = cafe.clone();
            let q = format!("?status=dead&subscription={subscription}");
            async move { deliveries(app, &cafe, &q).await.first().cloned() }
        })
        .await;
        assert_eq!(dead["attempts"], MAX_ATTEMPTS, "{dead}");
        assert_eq!(dead["log"].as_array().map(Vec::len), Some(4));
        assert!(dead["log"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")));
        assert!(down.accepted().is_empty());

        // The receiver is back; a manual replay delivers, with the same event id.
        down.failing.store(false, Ordering::SeqCst);
        let id = dead["id"].as_str().expect("id").to_owned();
        let (status, replayed) = app
            .call(
                Method::POST,
                &format!("/webhooks/deliveries/{id}/replay"),
                Some(&cafe),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{replayed}");
        let got = wait_for("the replayed delivery", || {
            let down = down.clone();
            async move { down.accepted().first().cloned() }
        })
        .await;
        assert_eq!(got.id, dead["event_id"].as_str().expect("event id"));
        let done = wait_for("the delivery to be delivered", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=delivered")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        assert_eq!(done["attempts"], MAX_ATTEMPTS + 1);
        assert_eq!(down.accepted().len(), 1);
        app.stop().await;
    }
);

webhook_test!(
    a_brand_sees_and_changes_only_its_own_subscriptions,
    |app| async move {
        create_brand(&app, "cafe").await;
        create_brand(&app, "tea").await;
        let cafe = create_key(&app, "brand", Some("cafe"), None).await;
        let tea = create_key(&app, "brand", Some("tea"), None).await;
        let counter = create_key(&app, "counter", Some("cafe"), None).await;
        let receiver = Receiver::start(0).await;
        let (status, created) = subscribe(
            &app,
            &cafe,
            json!({ "url": receiver.url, "event_types": ["purchase"] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let sub = created["subscription"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let member = member_id(&app, "+8613800138002", "Cy").await;
        purchase(&app, &counter, "cafe", &member, "C-1").await;
        let delivery = wait_for("a delivery", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=delivered")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        let delivery_id = delivery["id"].as_str().expect("id").to_owned();

        // Another brand sees none of it and cannot change it.
        let (status, list) = app.get("/webhooks", &tea).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list, json!([]));
        let (status, _) = app.get("/webhooks?brand_id=cafe", &tea).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(deliveries(&app, &tea, "").await.is_empty());
        assert!(deliveries(&app, &tea, &format!("?subscription={sub}"))
            .await
            .is_empty());
        for (method, path) in [
            (Method::DELETE, format!("/webhooks/{sub}")),
            (Method::POST, format!("/webhooks/{sub}/rotate-secret")),
            (
                Method::POST,
                format!("/webhooks/deliveries/{delivery_id}/replay"),
            ),
        ] {
            let (status, body) = app
                .call(method.clone(), &path, Some(&tea), Some(&idem()), None)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        }
        // A brand key subscribes its own brand only; counters cannot manage webhooks.
        let (status, body) = subscribe(
            &app,
            &tea,
            json!({ "brand_id": "cafe", "url": receiver.url, "event_types": ["purchase"] }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) = app.get("/webhooks", &counter).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // An admin names the brand, and sees every brand's subscriptions.
        let (status, body) = subscribe(
            &app,
            &app.admin_key,
            json!({ "url": receiver.url, "event_types": ["purchase"] }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = subscribe(
            &app,
            &app.admin_key,
            json!({ "brand_id": "tea", "url": receiver.url, "event_types": ["refund"] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, all) = app.get("/webhooks", &app.admin_key).await;
        assert_eq!(all.as_array().map(Vec::len), Some(2));
        // Bad input is a problem, not a panic.
        for body in [
            json!({ "url": receiver.url, "event_types": [] }),
            json!({ "url": receiver.url, "event_types": ["nope"] }),
            json!({ "url": "not a url", "event_types": ["purchase"] }),
        ] {
            let (status, problem) = subscribe(&app, &cafe, body).await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{status} {problem}"
            );
        }

        // The owner rotates the secret: the next event is signed with the new one.
        let (status, rotated) = app
            .call(
                Method::POST,
                &format!("/webhooks/{sub}/rotate-secret"),
                Some(&cafe),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
        assert_ne!(Some(new_secret.as_str()), created["secret"].as_str());
        purchase(&app, &counter, "cafe", &member, "C-2").await;
        let second = wait_for("the second delivery", || {
            let receiver = receiver.clone();
            async move { receiver.accepted().get(1).cloned() }
        })
        .await;
        assert_eq!(
            second.signature,
            expected_signature(&new_secret, &second.timestamp, &second.body)
        );
        // Deleted: no more events.
        let (status, deleted) = app
            .call(
                Method::DELETE,
                &format!("/webhooks/{sub}"),
                Some(&cafe),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        assert_eq!(deleted["active"], false);
        purchase(&app, &counter, "cafe", &member, "C-3").await;
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE subscription_id = $1")
                .bind(&sub)
                .fetch_one(app.state.store.read())
                .await
                .expect("count");
        assert_eq!(count, 2);
        app.stop().await;
    }
);

mod ssrf {
    use super::*;

    async fn refused_private_targets(backend: Backend) {
        // The default: webhooks.allow_private_targets = false.
        let app = TestApp::spawn_with(backend, |config| {
            config.webhooks.poll_interval_ms = 50;
            config.webhooks.retry_base_ms = 0;
            config.webhooks.retry_max_ms = 0;
            config.webhooks.max_attempts = 1;
        })
        .await;
        create_brand(&app, "cafe").await;
        let cafe = create_key(&app, "brand", Some("cafe"), None).await;
        let counter = create_key(&app, "counter", Some("cafe"), None).await;
        let receiver = Receiver::start(0).await;
        for url in [
            receiver.url.clone(),
            "http://localhost:9/hook".to_owned(),
            "http://10.0.0.1/hook".to_owned(),
            "http://192.168.1.10/hook".to_owned(),
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "http://100.64.0.1/hook".to_owned(),
            "http://[::1]:9/hook".to_owned(),
            "http://[::ffff:127.0.0.1]/hook".to_owned(),
            "http://[fd00::1]/hook".to_owned(),
            "http://0.0.0.0/hook".to_owned(),
            "ftp://8.8.8.8/hook".to_owned(),
            "file:///etc/passwd".to_owned(),
        ] {
            let (status, problem) = subscribe(
                &app,
                &cafe,
                json!({ "url": url, "event_types": ["purchase"] }),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {problem}");
            assert_eq!(problem["code"], "webhook_target_forbidden", "{url}");
        }
        // A subscription that got past the check (written directly, as if the setting was on
        // then) is refused again at delivery time: the receiver never hears of it.
        let mut tx = app.state.store.begin().await.expect("tx");
        coalition::domain::webhooks::subscribe(
            &mut tx,
            "cafe",
            &receiver.url,
            &[coalition::domain::webhooks::EventType::Purchase],
            10,
            crate::helpers::T0_MS,
        )
        .await
        .expect("subscribe");
        tx.commit().await.expect("commit");
        let member = member_id(&app, "+8613800138003", "Di").await;
        purchase(&app, &counter, "cafe", &member, "C-1").await;
        let dead = wait_for("the refused delivery", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=dead")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        assert!(
            dead["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("webhook_target_forbidden")),
            "{dead}"
        );
        assert_eq!(receiver.calls.load(Ordering::SeqCst), 0);
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn private_targets_are_refused_when_not_allowed_sqlite() {
        refused_private_targets(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn private_targets_are_refused_when_not_allowed_postgres() {
        refused_private_targets(Backend::Postgres).await;
    }
}

webhook_test!(the_delivery_job_runs_one_pass, |app| async move {
    create_brand(&app, "cafe").await;
    let cafe = create_key(&app, "brand", Some("cafe"), None).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/jobs/webhook-deliveries",
            Some(&cafe),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, report) = app
        .call(
            Method::POST,
            "/jobs/webhook-deliveries",
            Some(&app.admin_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(report["claimed"].is_i64(), "{report}");
    app.stop().await;
});

webhook_test!(
    delivered_events_leave_the_log_after_the_retention_and_dead_ones_stay,
    |app| async move {
        create_brand(&app, "cafe").await;
        let cafe = create_key(&app, "brand", Some("cafe"), None).await;
        let counter = create_key(&app, "counter", Some("cafe"), None).await;
        let up = Receiver::start(0).await;
        let down = Receiver::start(0).await;
        down.failing.store(true, Ordering::SeqCst);
        for receiver in [&up, &down] {
            let (status, created) = subscribe(
                &app,
                &cafe,
                json!({ "url": receiver.url, "event_types": ["purchase"] }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
        }
        let member = member_id(&app, "+8613800138002", "Cleo").await;
        // One event, two deliveries: one delivered, one dead-lettered.
        purchase(&app, &counter, "cafe", &member, "C-1").await;
        let delivered = wait_for("the delivered one", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=delivered")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        let dead = wait_for("the dead one", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=dead")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        assert_eq!(delivered["event_id"], dead["event_id"]);
        let run_job = || async {
            let (status, report) = app
                .call(
                    Method::POST,
                    "/jobs/webhook-deliveries",
                    Some(&app.admin_key),
                    Some(&idem()),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{report}");
            assert!(report["purged"].is_i64(), "{report}");
        };
        // 29 days on, inside the 30-day retention: a pass keeps it.
        app.clock.advance_ms(29 * 86_400_000);
        run_job().await;
        assert_eq!(deliveries(&app, &cafe, "?status=delivered").await.len(), 1);
        // Past it: the next pass (the job's or the worker's) purges the delivered one and its
        // attempts; the dead one stays, and so does the event it still needs.
        app.clock.advance_ms(2 * 86_400_000);
        run_job().await;
        assert!(deliveries(&app, &cafe, "?status=delivered")
            .await
            .is_empty());
        let left = deliveries(&app, &cafe, "").await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0]["id"], dead["id"]);
        let count = |sql: &'static str, id: String| {
            let app = &app;
            async move {
                let (n,): (i64,) = sqlx::query_as(sql)
                    .bind(id)
                    .fetch_one(app.state.store.read())
                    .await
                    .expect("count");
                n
            }
        };
        let delivered_id = delivered["id"].as_str().expect("id").to_owned();
        let event_id = dead["event_id"].as_str().expect("event").to_owned();
        assert_eq!(
            count(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_attempts WHERE delivery_id = $1",
                delivered_id
            )
            .await,
            0
        );
        assert_eq!(
            count(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_events WHERE id = $1",
                event_id.clone()
            )
            .await,
            1
        );
        // The dead one is still replayable, with the same event.
        down.failing.store(false, Ordering::SeqCst);
        let (status, body) = app
            .call(
                Method::POST,
                &format!(
                    "/webhooks/deliveries/{}/replay",
                    dead["id"].as_str().unwrap_or("")
                ),
                Some(&cafe),
                Some(&idem()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got = wait_for("the replay", || {
            let down = down.clone();
            async move { down.accepted().first().cloned() }
        })
        .await;
        assert_eq!(got.id, event_id);
        // Once it is delivered and old too, the event goes with it.
        wait_for("the replay to be logged as delivered", || {
            let app = &app;
            let cafe = cafe.clone();
            async move {
                deliveries(app, &cafe, "?status=delivered")
                    .await
                    .first()
                    .cloned()
            }
        })
        .await;
        app.clock.advance_ms(31 * 86_400_000);
        run_job().await;
        assert!(deliveries(&app, &cafe, "").await.is_empty());
        assert_eq!(
            count(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_events WHERE id = $1",
                event_id
            )
            .await,
            0
        );
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// kill -9

/// The real server binary on a SQLite file, killed with SIGKILL while its webhook receiver is
/// down: every purchase it acknowledged reaches the receiver once the host is restarted and
/// the receiver is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_during_kill_9_gets_every_committed_event_after_restart_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    kill_9_while_the_receiver_is_down(&dir, &db).await;
}

/// The same on PostgreSQL (a database of its own, dropped at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_during_kill_9_gets_every_committed_event_after_restart_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("coalition_k9_{}", uuid::Uuid::new_v4().simple());
    crate::helpers::create_pg_database(&name).await;
    kill_9_while_the_receiver_is_down(&dir, &crate::helpers::pg_url(&name)).await;
    crate::helpers::drop_pg_database(&name).await;
}

async fn kill_9_while_the_receiver_is_down(dir: &tempfile::TempDir, db: &str) {
    use std::process::{Command, Stdio};

    const PURCHASES: usize = 12;
    // A port for the receiver, free now; nothing listens on it until after the kill.
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let start = |port: u16| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .expect("log");
        Command::new(env!("CARGO_BIN_EXE_coalition"))
            .args(["serve", "--demo", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("COALITION_DATA_DIR", dir.path())
            .env("COALITION_DATABASE_URL", db)
            .env_remove("COALITION_PLUGINS_DIR")
            .env("COALITION_LOG_FILTER", "warn")
            .env("COALITION_LIMITS__REQUEST_TIMEOUT_MS", "120000")
            .env("COALITION_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
            .env("COALITION_WEBHOOKS__POLL_INTERVAL_MS", "50")
            .env("COALITION_WEBHOOKS__RETRY_BASE_MS", "20")
            .env("COALITION_WEBHOOKS__RETRY_MAX_MS", "200")
            .env("COALITION_WEBHOOKS__MAX_ATTEMPTS", "50")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the server")
    };
    let http = reqwest::Client::new();
    let wait_ready = |base: String| {
        let http = http.clone();
        async move {
            wait_for("the server to be ready", || {
                let http = http.clone();
                let base = base.clone();
                async move {
                    let ok = http.get(format!("{base}/readyz")).send().await.ok()?;
                    ok.status().is_success().then_some(())
                }
            })
            .await;
        }
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(port);
    wait_ready(base.clone()).await;
    let keys: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("demo-keys.json")).expect("demo-keys.json"),
    )
    .expect("keys");
    let admin = keys["admin"].as_str().expect("admin").to_owned();
    let (brand, brand_keys) = keys["brands"]
        .as_object()
        .and_then(|b| b.iter().find(|(id, _)| id.as_str() != "mall"))
        .expect("a demo brand");
    let counter = brand_keys["counter"].as_str().expect("counter").to_owned();
    let post = |path: String, key: String, body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let resp = http
                .post(format!("{base}{path}"))
                .bearer_auth(key)
                .header("Idempotency-Key", idem())
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = post(
        "/webhooks".into(),
        admin.clone(),
        json!({ "brand_id": brand, "url": hook_url, "event_types": ["purchase"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, member) = post(
        "/members".into(),
        admin.clone(),
        json!({ "phone": "+8613800139999", "name": "Kay" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member = member["id"].as_str().expect("member").to_owned();
    let mut acknowledged = BTreeSet::new();
    for n in 0..PURCHASES {
        let order = format!("K9-{n}");
        let (status, body) = post(
            format!("/brands/{brand}/purchases"),
            counter.clone(),
            json!({ "order_id": order, "member_id": member, "lines": [
                { "line_id": "1", "sku": "x", "category": "general", "quantity": 1,
                  "unit_price_cents": 1_000 } ] }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        acknowledged.insert(order);
    }
    // SIGKILL: no graceful shutdown, attempts (to a receiver that is down) cut mid-way.
    child.kill().expect("kill -9");
    let _ = child.wait();

    let receiver = Receiver::serve(
        tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
            .await
            .expect("bind the receiver's port"),
        0,
    );
    let port = free_port();
    let mut child = start(port);
    wait_ready(format!("http://127.0.0.1:{port}")).await;
    let orders = wait_for("every acknowledged purchase at the receiver", || {
        let receiver = receiver.clone();
        let want = acknowledged.len();
        async move {
            let orders: BTreeSet<String> = receiver
                .accepted()
                .iter()
                .filter_map(|r| {
                    let v: Value = serde_json::from_slice(&r.body).ok()?;
                    v["data"]["order_id"].as_str().map(str::to_owned)
                })
                .collect();
            (orders.len() >= want).then_some(orders)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(orders, acknowledged);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The command line

/// `coalition webhooks …` and `coalition jobs run webhook-deliveries` on a SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_subscribes_lists_and_shows_the_log() {
    use coalition::foundation::store::{Store, StoreOptions};
    use std::process::Command;

    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let store = Store::open(&db, StoreOptions::default())
        .await
        .expect("open");
    let mut tx = store.begin().await.expect("tx");
    let brand: coalition::domain::brands::CreateBrand =
        serde_json::from_value(json!({ "id": "cafe", "name": "Cafe" })).expect("brand");
    coalition::domain::brands::create(&mut tx, &brand, crate::helpers::T0_MS)
        .await
        .expect("create brand");
    tx.commit().await.expect("commit");
    store.close().await;
    let run = |args: &[&str], allow_private: bool| {
        let output = Command::new(env!("CARGO_BIN_EXE_coalition"))
            .args(args)
            .env_remove("COALITION_CONFIG")
            .env("COALITION_DATA_DIR", dir.path())
            .env("COALITION_DATABASE_URL", &db)
            .env("COALITION_LOG_FILTER", "warn")
            .env(
                "COALITION_WEBHOOKS__ALLOW_PRIVATE_TARGETS",
                allow_private.to_string(),
            )
            .output()
            .expect("run coalition");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let hook = "http://127.0.0.1:9/hook";
    let subscribe = [
        "webhooks",
        "subscribe",
        "--brand",
        "cafe",
        "--url",
        hook,
        "--event",
        "purchase",
        "--event",
        "refund",
    ];
    let (ok, _, stderr) = run(&subscribe, false);
    assert!(!ok, "a loopback target is refused by default");
    assert!(stderr.contains("webhook_target_forbidden"), "{stderr}");
    let (ok, stdout, stderr) = run(&subscribe, true);
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(created["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    assert_eq!(
        created["subscription"]["event_types"],
        json!(["purchase", "refund"])
    );
    let (ok, stdout, stderr) = run(&["webhooks", "list", "--brand", "cafe"], true);
    assert!(ok, "{stderr}");
    let list: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert!(!stdout.contains("whsec_"), "the list carries no secret");
    let (ok, stdout, stderr) = run(&["webhooks", "deliveries", "--status", "dead"], true);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    let (ok, _, stderr) = run(&["webhooks", "replay", "nope"], true);
    assert!(!ok);
    assert!(stderr.contains("not_found"), "{stderr}");
    let (ok, stdout, stderr) = run(&["jobs", "run", "webhook-deliveries"], true);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(report["webhook_deliveries"]["claimed"], 0, "{report}");
}

webhook_test!(
    a_perk_redemption_reaches_the_honouring_and_the_funding_brand,
    |app| async move {
        for brand in ["parking", "mall"] {
            create_brand(&app, brand).await;
        }
        crate::fixtures::install_plugin(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        let counter = create_key(&app, "counter", Some("parking"), None).await;
        let mut receivers = Vec::new();
        for brand in ["parking", "mall"] {
            let key = create_key(&app, "brand", Some(brand), None).await;
            let receiver = Receiver::start(0).await;
            let (status, body) = subscribe(
                &app,
                &key,
                json!({ "url": receiver.url, "event_types": ["redemption"] }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            receivers.push(receiver);
        }
        let member = member_id(&app, "+8613800138004", "Eve").await;
        let (status, body) = app
            .post(
                "/brands/parking/purchases",
                &counter,
                &idem(),
                &json!({ "order_id": "P-1", "member_id": member, "lines": [
                    { "line_id": "1", "sku": "day", "category": "parking", "quantity": 1,
                      "unit_price_cents": 20_000 } ] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, redeemed) = app
            .post(
                &format!("/members/{member}/perks/parking-perk/parking-2h/redeem"),
                &counter,
                &idem(),
                &json!({}),
            )
            .await;
        assert!(status.is_success(), "{status} {redeemed}");
        for receiver in &receivers {
            let got = wait_for("the redemption event", || {
                let receiver = receiver.clone();
                async move { receiver.accepted().first().cloned() }
            })
            .await;
            let event: Value = serde_json::from_slice(&got.body).expect("json");
            assert_eq!(event["type"], "redemption", "{event}");
            assert_eq!(event["data"]["redemption_id"], redeemed["id"], "{event}");
            assert_eq!(event["data"]["honouring_brand"], "parking");
        }
        app.stop().await;
    }
);
