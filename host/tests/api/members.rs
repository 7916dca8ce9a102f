//! Members: registration and idempotency, lookup, masking per role, scope, profile updates,
//! tags, blocking, pagination, and batch import/export.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{
    assert_problem, count, create_brand, create_key, get, idem, member_id, raw, send_json,
};
use crate::helpers::TestApp;

const PHONE: &str = "+8613800138000";
const MASKED: &str = "+86138****8000";

both_backends!(
    counter_registers_and_masking_follows_the_role,
    |app| async move {
        create_brand(&app, "coffee").await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let brand = create_key(&app, "brand", Some("coffee"), None).await;
        let (status, created) = app
            .post(
                "/members",
                &counter,
                &idem(),
                &json!({
                    "phone": "+86 138 0013 8000",
                    "name": "Wang Fang",
                    "birthday": "1990-05-17",
                    "email": "wang@example.com",
                    "tags": ["VIP", "Skincare Enthusiast"]
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        // The counter sees what it typed only masked: it is not an admin nor the member.
        assert_eq!(created["phone"], MASKED);
        assert_eq!(created["name"], "W*** ****");
        assert_eq!(created["email"], "w***@example.com");
        assert_eq!(created["birthday"], Value::Null);
        assert_eq!(created["birthday_month"], 5);
        assert_eq!(created["masked"], true);
        assert_eq!(created["joined_brand_id"], "coffee");
        assert_eq!(created["tier"], "bronze");
        assert_eq!(created["status"], "active");
        assert_eq!(created["tags"], json!(["skincare-enthusiast", "vip"]));
        let id = created["id"].as_str().expect("id").to_owned();

        let admin_view = get(&app, &format!("/members/{id}"), &app.admin_key).await;
        assert_eq!(admin_view.status, StatusCode::OK);
        assert_eq!(admin_view.body["phone"], PHONE);
        assert_eq!(admin_view.body["name"], "Wang Fang");
        assert_eq!(admin_view.body["birthday"], "1990-05-17");
        assert_eq!(admin_view.body["masked"], false);

        for key in [&brand, &counter] {
            let view = get(&app, &format!("/members/{id}"), key).await;
            assert_eq!(view.status, StatusCode::OK);
            assert_eq!(view.body["phone"], MASKED);
            assert_eq!(view.body["masked"], true);
        }

        let own = create_key(&app, "member", None, Some(&id)).await;
        let me = get(&app, "/members/me", &own).await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.text);
        assert_eq!(me.body["phone"], PHONE);
        assert_eq!(me.body["email"], "wang@example.com");
        let by_id = get(&app, &format!("/members/{id}"), &own).await;
        assert_eq!(by_id.body["phone"], PHONE);

        // Another member's key sees nothing of this member, and cannot list.
        let other_id = member_id(&app, "+8613800138001", "Li Na").await;
        let other = create_key(&app, "member", None, Some(&other_id)).await;
        assert_problem(
            &get(&app, &format!("/members/{id}"), &other).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_problem(
            &get(&app, "/members", &other).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_problem(
            &get(&app, "/members/me", &brand).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );

        // Lists mask too: brand sees masked, admin sees full.
        let listed = get(&app, "/members", &brand).await;
        let phones: Vec<&str> = listed.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["phone"].as_str())
            .collect();
        assert_eq!(phones, vec![MASKED, "+86138****8001"]);
        let listed = get(&app, "/members", &app.admin_key).await;
        assert_eq!(listed.body["items"][0]["phone"], PHONE);
        app.stop().await;
    }
);

both_backends!(lookup_by_phone, |app| async move {
    create_brand(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let id = member_id(&app, PHONE, "Wang Fang").await;
    member_id(&app, "+8613800138001", "Li Na").await;

    let found = get(&app, "/members?phone=%2B8613800138000", &counter).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    let items = found.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["phone"], MASKED);
    // An unencoded `+` decodes to a space; the lookup still finds the member.
    let found = get(&app, "/members?phone=+8613800138000", &counter).await;
    assert_eq!(found.body["items"][0]["id"], id.as_str());
    let none = get(&app, "/members?phone=%2B8613900000000", &counter).await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body["items"], json!([]));
    // A counter cannot browse the member base.
    assert_problem(
        &get(&app, "/members", &counter).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    app.stop().await;
});

both_backends!(
    registration_is_idempotent_and_phones_unique,
    |app| async move {
        let key = idem();
        let body = json!({"phone": PHONE, "name": "Wang Fang"});
        let (s1, first) = app.post("/members", &app.admin_key, &key, &body).await;
        let replay = app
            .client
            .post(format!("{}/members", app.base))
            .bearer_auth(&app.admin_key)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(s1, StatusCode::CREATED);
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let second: Value = replay.json().await.expect("json");
        assert_eq!(first["id"], second["id"]);
        assert_eq!(count(&app, "members").await, 1);

        let (status, err) = app
            .post(
                "/members",
                &app.admin_key,
                &key,
                &json!({"phone": "+8613800138009", "name": "Other"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(err["code"], "idempotency_key_reused");

        let dup = send_json(
            &app,
            Method::POST,
            "/members",
            &app.admin_key,
            &json!({"phone": "+86 13800138000", "name": "Imposter"}),
        )
        .await;
        assert_problem(&dup, StatusCode::CONFLICT, "phone_taken");
        assert_eq!(count(&app, "members").await, 1);
        app.stop().await;
    }
);

both_backends!(
    concurrent_identical_registrations_make_one_member,
    |app| async move {
        create_brand(&app, "coffee").await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let app = std::sync::Arc::new(app);
        let key = idem();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let app = app.clone();
            let counter = counter.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                app.post(
                    "/members",
                    &counter,
                    &key,
                    &json!({"phone": PHONE, "name": "Wang Fang"}),
                )
                .await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            let (status, body) = task.await.expect("task");
            // A request that saw the first one still in flight may be told to retry; none may fail
            // otherwise or create a second member.
            if status == StatusCode::CONFLICT {
                assert_eq!(body["code"], "idempotency_key_in_flight", "{body}");
            } else {
                assert_eq!(status, StatusCode::CREATED, "{body}");
                ids.insert(body["id"].as_str().expect("id").to_owned());
            }
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(count(&app, "members").await, 1);
        assert_eq!(count(&app, "member_tags").await, 0);

        // Twenty different keys for the same phone: exactly one wins, the rest are phone_taken.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let app = app.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                app.post(
                    "/members",
                    &counter,
                    &format!("k{i}"),
                    &json!({"phone": "+8613800138001", "name": "Li Na"}),
                )
                .await
            }));
        }
        let mut created = 0;
        for task in tasks {
            let (status, body) = task.await.expect("task");
            match status {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => assert_eq!(body["code"], "phone_taken", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(count(&app, "members").await, 2);
        match std::sync::Arc::try_unwrap(app) {
            Ok(app) => app.stop().await,
            Err(_) => panic!("app still shared"),
        }
    }
);

both_backends!(profile_updates_by_admin_and_self_only, |app| async move {
    create_brand(&app, "coffee").await;
    let brand = create_key(&app, "brand", Some("coffee"), None).await;
    let id = member_id(&app, PHONE, "Wang Fang").await;
    let other = member_id(&app, "+8613800138001", "Li Na").await;
    let own = create_key(&app, "member", None, Some(&id)).await;
    let path = format!("/members/{id}");

    let resp = send_json(
        &app,
        Method::PATCH,
        &path,
        &own,
        &json!({"name": "Wang F.", "email": "f@example.com", "birthday": "1990-05-17"}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.body["name"], "Wang F.");
    assert_eq!(resp.body["email"], "f@example.com");
    assert_eq!(resp.body["birthday"], "1990-05-17");

    // `null` clears, absent keeps.
    let resp = send_json(&app, Method::PATCH, &path, &own, &json!({"email": null})).await;
    assert_eq!(resp.body["email"], Value::Null);
    assert_eq!(resp.body["birthday"], "1990-05-17");

    // Only an admin changes the phone, and never to one that is taken.
    let resp = send_json(
        &app,
        Method::PATCH,
        &path,
        &own,
        &json!({"phone": "+8613800138099"}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::PATCH,
        &path,
        &app.admin_key,
        &json!({"phone": "+8613800138001"}),
    )
    .await;
    assert_problem(&resp, StatusCode::CONFLICT, "phone_taken");
    let resp = send_json(
        &app,
        Method::PATCH,
        &path,
        &app.admin_key,
        &json!({"phone": "+8613800138099"}),
    )
    .await;
    assert_eq!(resp.body["phone"], "+8613800138099");

    // Brands and other members may not edit.
    let resp = send_json(&app, Method::PATCH, &path, &brand, &json!({"name": "X"})).await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::PATCH,
        &format!("/members/{other}"),
        &own,
        &json!({"name": "X"}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::PATCH,
        &path,
        &own,
        &json!({"birthday": "2999-01-01"}),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_birthday");
    assert_eq!(
        get(&app, &path, &app.admin_key).await.body["name"],
        "Wang F."
    );
    app.stop().await;
});

both_backends!(
    tags_are_normalised_bounded_and_filterable,
    |app| async move {
        create_brand(&app, "coffee").await;
        let brand = create_key(&app, "brand", Some("coffee"), None).await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let id = member_id(&app, PHONE, "Wang Fang").await;
        let other = member_id(&app, "+8613800138001", "Li Na").await;
        let tags_path = format!("/members/{id}/tags");

        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &brand,
            &json!({"tags": ["Coffee Lover", "VIP", "vip"]}),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["tags"], json!(["coffee-lover", "vip"]));
        assert_eq!(resp.body["phone"], MASKED);

        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &counter,
            &json!({"tags": ["x"]}),
        )
        .await;
        assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &brand,
            &json!({"tags": ["no/slash"]}),
        )
        .await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_tag");

        // 62 more fit (64 in all); one more does not, and nothing of the refused call sticks.
        let many: Vec<String> = (0..62).map(|i| format!("t{i}")).collect();
        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &brand,
            &json!({"tags": many}),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["tags"].as_array().map(Vec::len), Some(64));
        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &brand,
            &json!({"tags": ["one-too-many", "vip"]}),
        )
        .await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "too_many_tags");
        // Re-adding existing tags is fine at the limit.
        let resp = send_json(
            &app,
            Method::POST,
            &tags_path,
            &brand,
            &json!({"tags": ["vip"]}),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

        let filtered = get(&app, "/members?tag=Coffee%20Lover", &app.admin_key).await;
        let ids: Vec<&str> = filtered.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, vec![id.as_str()]);

        let untag = raw(
            &app,
            Method::DELETE,
            &format!("/members/{id}/tags/Coffee%20Lover"),
            &[
                ("authorization", &format!("Bearer {brand}")),
                ("idempotency-key", &idem()),
            ],
            None,
        )
        .await;
        assert_eq!(untag.status, StatusCode::OK, "{}", untag.text);
        assert!(!untag.body["tags"]
            .as_array()
            .expect("tags")
            .contains(&json!("coffee-lover")));
        let filtered = get(&app, "/members?tag=coffee-lover", &app.admin_key).await;
        assert_eq!(filtered.body["items"], json!([]));
        let _ = other;
        app.stop().await;
    }
);

both_backends!(only_admins_block_and_unblock, |app| async move {
    create_brand(&app, "coffee").await;
    let brand = create_key(&app, "brand", Some("coffee"), None).await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let id = member_id(&app, PHONE, "Wang Fang").await;
    member_id(&app, "+8613800138001", "Li Na").await;
    let own = create_key(&app, "member", None, Some(&id)).await;
    let block = format!("/members/{id}/block");
    let reason = json!({"reason": "coupon abuse"});

    for key in [&counter, &brand, &own] {
        let resp = send_json(&app, Method::POST, &block, key, &reason).await;
        assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    }
    let resp = send_json(
        &app,
        Method::POST,
        &block,
        &app.admin_key,
        &json!({"reason": " "}),
    )
    .await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_reason");

    let resp = send_json(&app, Method::POST, &block, &app.admin_key, &reason).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.body["status"], "blocked");
    assert_eq!(resp.body["blocked_reason"], "coupon abuse");
    let resp = send_json(&app, Method::POST, &block, &app.admin_key, &reason).await;
    assert_problem(&resp, StatusCode::CONFLICT, "member_already_blocked");

    // The ledger reads members.status; the brand sees the status but not the reason.
    let (status,): (String,) = sqlx::query_as("SELECT status FROM members WHERE id = $1")
        .bind(&id)
        .fetch_one(app.state.store.read())
        .await
        .expect("status");
    assert_eq!(status, "blocked");
    let seen = get(&app, &format!("/members/{id}"), &brand).await;
    assert_eq!(seen.body["status"], "blocked");
    assert_eq!(seen.body["blocked_reason"], Value::Null);
    let seen = get(&app, "/members/me", &own).await;
    assert_eq!(seen.body["blocked_reason"], "coupon abuse");

    let blocked = get(&app, "/members?status=blocked", &app.admin_key).await;
    assert_eq!(blocked.body["items"].as_array().map(Vec::len), Some(1));

    let unblock = format!("/members/{id}/unblock");
    let resp = send_json(
        &app,
        Method::POST,
        &unblock,
        &counter,
        &json!({"reason": "appeal"}),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    let resp = send_json(
        &app,
        Method::POST,
        &unblock,
        &app.admin_key,
        &json!({"reason": "appeal upheld"}),
    )
    .await;
    assert_eq!(resp.body["status"], "active");
    assert_eq!(resp.body["blocked_reason"], Value::Null);
    let resp = send_json(
        &app,
        Method::POST,
        &unblock,
        &app.admin_key,
        &json!({"reason": "again"}),
    )
    .await;
    assert_problem(&resp, StatusCode::CONFLICT, "member_not_blocked");
    assert_eq!(count(&app, "member_status_changes").await, 2);
    let active = get(&app, "/members?status=active", &app.admin_key).await;
    assert_eq!(active.body["items"].as_array().map(Vec::len), Some(2));
    app.stop().await;
});

both_backends!(list_pages_with_a_cursor, |app| async move {
    let mut expected = Vec::new();
    for i in 0..7 {
        expected.push(member_id(&app, &format!("+86138001380{i:02}"), &format!("M{i}")).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/members?limit=3&cursor={c}"),
            None => "/members?limit=3".to_owned(),
        };
        let page = get(&app, &path, &app.admin_key).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        pages += 1;
        for m in page.body["items"].as_array().expect("items") {
            seen.push(m["id"].as_str().expect("id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
    let tier = get(&app, "/members?tier=bronze&limit=200", &app.admin_key).await;
    assert_eq!(tier.body["items"].as_array().map(Vec::len), Some(7));
    let tier = get(&app, "/members?tier=gold", &app.admin_key).await;
    assert_eq!(tier.body["items"], json!([]));
    app.stop().await;
});

async fn import(app: &TestApp, key: &str, content_type: &str, body: &str) -> crate::fixtures::Raw {
    let bearer = format!("Bearer {}", app.admin_key);
    raw(
        app,
        Method::POST,
        "/members/import",
        &[
            ("authorization", &bearer),
            ("idempotency-key", key),
            ("content-type", content_type),
        ],
        Some(body.as_bytes().to_vec()),
    )
    .await
}

both_backends!(
    import_reports_rows_and_is_idempotent_by_phone,
    |app| async move {
        member_id(&app, "+8613800138004", "Already Here").await;
        let jsonl = [
        r#"{"phone":"+8613800138001","name":"Li Na","birthday":"1987-11-02","tags":["new parent"]}"#,
        r#"{"phone":"+8613800138002","name":"Zhang Wei","email":"zw@example.com"}"#,
        "",
        r#"{"phone":"12345","name":"Bad Phone"}"#,
        r#"{"phone":"+8613800138002","name":"Duplicate in file"}"#,
        r#"not json"#,
        r#"{"phone":"+8613800138004","name":"Already registered"}"#,
    ]
    .join("\n");
        let key = idem();
        let resp = import(&app, &key, "application/x-ndjson", &jsonl).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["rows"], 6);
        assert_eq!(resp.body["created"], 2);
        assert_eq!(resp.body["skipped"], 2);
        assert_eq!(resp.body["failed"], 2);
        assert_eq!(resp.body["errors"][0]["line"], 4);
        assert_eq!(resp.body["errors"][0]["code"], "invalid_phone");
        assert_eq!(resp.body["errors"][1]["line"], 6);
        assert_eq!(resp.body["errors"][1]["code"], "malformed_row");
        assert_eq!(count(&app, "members").await, 3);

        // The same request again replays; the same file under a new key skips every row.
        let replay = import(&app, &key, "application/x-ndjson", &jsonl).await;
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert_eq!(replay.body, resp.body);
        let again = import(&app, &idem(), "application/x-ndjson", &jsonl).await;
        assert_eq!(again.body["created"], 0);
        assert_eq!(again.body["skipped"], 4);
        let reused = import(&app, &key, "application/x-ndjson", "{}").await;
        assert_problem(&reused, StatusCode::CONFLICT, "idempotency_key_reused");
        assert_eq!(count(&app, "members").await, 3);

        let found = get(&app, "/members?phone=%2B8613800138001", &app.admin_key).await;
        assert_eq!(found.body["items"][0]["tags"], json!(["new-parent"]));
        assert_eq!(found.body["items"][0]["birthday"], "1987-11-02");
        app.stop().await;
    }
);

both_backends!(
    import_spans_batches_and_export_round_trips,
    |app| async move {
        // 1,234 rows: three insert batches, the last one partial.
        let mut csv = String::from("phone,name,birthday,email,tags\n");
        for i in 0..1234 {
            csv.push_str(&format!(
                "+861390000{i:04},Member {i},1990-01-{:02},,tag{};all\n",
                i % 28 + 1,
                i % 3
            ));
        }
        let resp = import(&app, &idem(), "text/csv", &csv).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["created"], 1234);
        assert_eq!(resp.body["failed"], 0);
        assert_eq!(count(&app, "members").await, 1234);
        assert_eq!(count(&app, "member_tags").await, 2468);

        for format in ["csv", "jsonl"] {
            let export = get(
                &app,
                &format!("/members/export?format={format}"),
                &app.admin_key,
            )
            .await;
            assert_eq!(export.status, StatusCode::OK);
            let content_type = export.headers["content-type"]
                .to_str()
                .expect("ct")
                .to_owned();
            let lines = export.text.lines().count();
            if format == "csv" {
                assert!(content_type.starts_with("text/csv"));
                assert_eq!(lines, 1235);
            } else {
                assert_eq!(content_type, "application/x-ndjson");
                assert_eq!(lines, 1234);
                let first: Value =
                    serde_json::from_str(export.text.lines().next().expect("line")).expect("json");
                assert_eq!(first["phone"], "+8613900000000");
                assert_eq!(first["tags"], json!(["all", "tag0"]));
            }

            // Importing the export into an empty coalition recreates every member.
            let other = TestApp::spawn(app.backend).await;
            let ct = if format == "csv" {
                "text/csv"
            } else {
                "application/x-ndjson"
            };
            let bearer = format!("Bearer {}", other.admin_key);
            let key = idem();
            let resp = raw(
                &other,
                Method::POST,
                "/members/import",
                &[
                    ("authorization", &bearer),
                    ("idempotency-key", &key),
                    ("content-type", ct),
                ],
                Some(export.text.clone().into_bytes()),
            )
            .await;
            assert_eq!(resp.body["created"], 1234, "{}", resp.text);
            let back = get(&other, "/members/export?format=jsonl", &other.admin_key).await;
            let strip = |text: &str| -> Vec<Value> {
                text.lines()
                    .map(|l| {
                        let mut v: Value = serde_json::from_str(l).expect("json");
                        for k in ["id", "created_at_ms"] {
                            v.as_object_mut().expect("object").remove(k);
                        }
                        v
                    })
                    .collect()
            };
            let original = get(&app, "/members/export", &app.admin_key).await;
            let mut a = strip(&original.text);
            let mut b = strip(&back.text);
            a.sort_by_key(|v| v["phone"].as_str().map(str::to_owned));
            b.sort_by_key(|v| v["phone"].as_str().map(str::to_owned));
            assert_eq!(a, b);
            other.stop().await;
        }

        // Export is admin-only.
        create_brand(&app, "coffee").await;
        let brand = create_key(&app, "brand", Some("coffee"), None).await;
        assert_problem(
            &get(&app, "/members/export", &brand).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        app.stop().await;
    }
);

both_backends!(import_limits, |app| async move {
    // No Content-Type and no ?format: the server cannot guess.
    let bearer = format!("Bearer {}", app.admin_key);
    let key = idem();
    let resp = raw(
        &app,
        Method::POST,
        "/members/import",
        &[("authorization", &bearer), ("idempotency-key", &key)],
        Some(b"x".to_vec()),
    )
    .await;
    assert_problem(
        &resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // A CSV without the phone column is refused as a whole.
    let resp = import(&app, &idem(), "text/csv", "name\nAlice\n").await;
    assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_import");
    // More rows than one request may carry, refused before anything is written.
    let many = "\n".repeat(50_005);
    let resp = import(&app, &idem(), "application/x-ndjson", &many).await;
    assert_problem(&resp, StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows");
    // A body above the router-wide 1 MiB limit is fine for an import (64 MiB by default).
    let mut big = String::new();
    let mut i = 0;
    while big.len() < 1_100_000 {
        big.push_str(&format!("{{\"phone\":\"+86139{i:08}\",\"name\":\"Member number {i} with a long name to fill the body\"}}\n"));
        i += 1;
    }
    let resp = import(&app, &idem(), "application/x-ndjson", &big).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.body["created"], i);
    // Brand keys may not import.
    create_brand(&app, "coffee").await;
    let brand = create_key(&app, "brand", Some("coffee"), None).await;
    let resp = raw(
        &app,
        Method::POST,
        "/members/import",
        &[
            ("authorization", &format!("Bearer {brand}")),
            ("idempotency-key", &idem()),
            ("content-type", "text/csv"),
        ],
        Some(b"phone,name\n".to_vec()),
    )
    .await;
    assert_problem(&resp, StatusCode::FORBIDDEN, "forbidden");
    app.stop().await;
});

/// The import body limit comes from `limits.import_body_bytes`.
mod import_body_limit {
    use super::*;

    async fn run(backend: crate::helpers::Backend) {
        let app = TestApp::spawn_with(backend, |c| c.limits.import_body_bytes = 1_000).await;
        let body = format!(
            "{{\"phone\":\"+8613800138000\",\"name\":\"{}\"}}\n",
            "x".repeat(2_000)
        );
        let resp = import(&app, &idem(), "application/x-ndjson", &body).await;
        assert_problem(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        let resp = import(
            &app,
            &idem(),
            "application/x-ndjson",
            "{\"phone\":\"+8613800138000\",\"name\":\"A\"}\n",
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(count(&app, "members").await, 1);
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        run(crate::helpers::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        run(crate::helpers::Backend::Postgres).await;
    }
}
