//! The served OpenAPI document says what the server does, where generated clients broke on it:
//! query parameters documented as path parameters, two schemas sharing the name
//! `Verification`, the CSV export's content type, the `Idempotency-Key` rules; and an empty
//! member import, which answered 200 with nothing imported.
//!
//! The whole document is also checked from the outside by `cargo xtask api-contract`
//! (schemathesis and a generated client).

use std::collections::BTreeSet;

use coalition::interfaces::api::idempotency::{HEADER_PATTERN, MAX_KEY_LEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{
    assert_problem, count, create_brand, get, idem, install_plugin, member_id, raw, send_json, Raw,
};
use crate::helpers::{Backend, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn served_document(app: &TestApp) -> Value {
    let (status, document) = app
        .call(Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{document}");
    document
}

/// Every operation: (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

fn parameters(operation: &Value) -> Vec<Value> {
    operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The components schema a `$ref` names.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> (&'a str, &'a Value) {
    let reference = schema["$ref"].as_str().expect("a $ref");
    let name = reference
        .strip_prefix("#/components/schemas/")
        .expect("a schema ref");
    (name, &document["components"]["schemas"][name])
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_were_documented_as_path_parameters() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = served_document(&app).await;
    for (method, path, operation) in operations(&document) {
        let placeholders: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let mut in_path = BTreeSet::new();
        for parameter in parameters(&operation) {
            let name = parameter["name"].as_str().expect("name").to_owned();
            if parameter["in"] == "path" {
                assert!(
                    placeholders.contains(&name),
                    "{method} {path}: `{name}` is documented `in: path` but the path has no \
                     {{{name}}}"
                );
                in_path.insert(name);
            }
        }
        assert_eq!(in_path, placeholders, "{method} {path}: path parameters");
    }
    let expect_query = [
        ("/receipts", &["subject_kind", "subject_id"][..]),
        (
            "/audit",
            &["after", "limit", "subject_kind", "subject_id"][..],
        ),
        ("/risk/blacklist", &["kind"][..]),
        ("/plugins/{version_id}/shadow-results", &["limit"][..]),
    ];
    for (path, names) in expect_query {
        let operation = &document["paths"][path]["get"];
        for name in names {
            let parameter = parameters(operation)
                .into_iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("GET {path} documents `{name}`"));
            assert_eq!(parameter["in"], "query", "GET {path} `{name}`");
        }
    }
    // A client that follows the document is answered.
    let resp = get(&app, "/audit?after=0&limit=5", &app.admin_key).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = get(&app, "/risk/blacklist?kind=device", &app.admin_key).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_verification_and_audit_verification_shared_one_schema_name() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = served_document(&app).await;
    let response_schema = |path: &str, method: &str, status: &str| {
        document["paths"][path][method]["responses"][status]["content"]["application/json"]
            ["schema"]
            .clone()
    };
    let member_schema = response_schema("/members/{member_id}/verification", "get", "200");
    let created_schema = response_schema("/members/{member_id}/verification", "post", "201");
    let audit_schema = response_schema("/audit/verify", "get", "200");
    let (member_name, member) = resolve(&document, &member_schema);
    let (created_name, _) = resolve(&document, &created_schema);
    let (audit_name, audit) = resolve(&document, &audit_schema);
    assert_ne!(member_name, audit_name, "two different types, one name");
    assert_eq!(member_name, created_name);

    // What the server answers is what the document says, field for field.
    let member = property_names(member);
    let id = member_id(&app, "+8613900000001", "Verified Member").await;
    let (status, created) = app
        .post(
            &format!("/members/{id}/verification"),
            &app.admin_key,
            &idem(),
            &json!({ "reference": "idp-check-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let read = get(&app, &format!("/members/{id}/verification"), &app.admin_key).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let answered: BTreeSet<String> = read
        .body
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(answered, member, "GET /members/{{id}}/verification");
    let verify = get(&app, "/audit/verify", &app.admin_key).await;
    assert_eq!(verify.status, StatusCode::OK, "{}", verify.text);
    let answered: BTreeSet<String> = verify
        .body
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(answered, property_names(audit), "GET /audit/verify");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_export_as_csv_answered_an_undocumented_content_type() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = served_document(&app).await;
    let export = &document["paths"]["/members/export"]["get"]["responses"]["200"]["content"];
    let import = &document["paths"]["/members/import"]["post"]["requestBody"]["content"];
    for media_type in ["text/csv", "application/x-ndjson"] {
        assert!(
            export.get(media_type).is_some(),
            "export documents {media_type}: {export}"
        );
        assert!(
            import.get(media_type).is_some(),
            "import documents {media_type}: {import}"
        );
    }
    member_id(&app, "+8613900000002", "Exported Member").await;
    for (format, media_type) in [("csv", "text/csv"), ("jsonl", "application/x-ndjson")] {
        let resp = get(
            &app,
            &format!("/members/export?format={format}"),
            &app.admin_key,
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        let content_type = resp.headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with(media_type), "{content_type}");
        assert!(export.get(media_type).is_some());
    }
    app.stop().await;
}

/// A value for a path parameter that gets past its extractor.
fn path_value(document: &Value, parameter: &Value) -> String {
    let schema = &parameter["schema"];
    let schema = if schema.get("$ref").is_some() {
        resolve(document, schema).1
    } else {
        schema
    };
    match schema["enum"].as_array().and_then(|e| e.first()) {
        Some(first) => first.as_str().expect("a string enum").to_owned(),
        None => "x".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_rules_were_undocumented() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = served_document(&app).await;
    let mut checked = 0;
    for (method, path, operation) in operations(&document) {
        let documented = parameters(&operation)
            .into_iter()
            .find(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
        if let Some(header) = &documented {
            assert_eq!(header["required"], true, "{method} {path}");
            let schema = &header["schema"];
            assert_eq!(schema["type"], "string", "{method} {path}");
            assert_eq!(schema["minLength"], 1, "{method} {path}");
            assert_eq!(schema["maxLength"], MAX_KEY_LEN, "{method} {path}");
            assert_eq!(schema["pattern"], HEADER_PATTERN, "{method} {path}");
            assert!(
                operation["responses"]["400"]["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("invalid_idempotency_key")),
                "{method} {path}: the 400 names the key's codes"
            );
        }
        // Without the header, the server says whether the operation needs it.
        let mut concrete = path.clone();
        for parameter in parameters(&operation) {
            if parameter["in"] == "path" {
                let name = parameter["name"].as_str().expect("name");
                concrete =
                    concrete.replace(&format!("{{{name}}}"), &path_value(&document, &parameter));
            }
        }
        let bearer = format!("Bearer {}", app.admin_key);
        let mut headers = vec![("authorization", bearer.as_str())];
        let body = if operation.get("requestBody").is_some() {
            headers.push(("content-type", "application/json"));
            Some(b"{}".to_vec())
        } else {
            None
        };
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let resp: Raw = raw(&app, method.clone(), &concrete, &headers, body).await;
        let required = resp.status == StatusCode::BAD_REQUEST
            && resp.body["code"] == "idempotency_key_required";
        assert_eq!(
            documented.is_some(),
            required,
            "{method} {path}: documented {}, server answered {} {}",
            documented.is_some(),
            resp.status,
            resp.text
        );
        checked += usize::from(required);
    }
    assert!(checked > 50, "only {checked} operations take the key");

    // The documented bounds are the server's, on both sides of each.
    let register = |key: String| {
        let app = &app;
        async move {
            let bearer = format!("Bearer {}", app.admin_key);
            raw(
                app,
                Method::POST,
                "/members",
                &[
                    ("authorization", &bearer),
                    ("idempotency-key", &key),
                    ("content-type", "application/json"),
                ],
                Some(b"{\"phone\": \"not a phone\", \"name\": \"x\"}".to_vec()),
            )
            .await
        }
    };
    let printable: String = (b'!'..=b'~').map(char::from).collect();
    let longest: String = printable.chars().cycle().take(MAX_KEY_LEN).collect();
    for accepted in [longest.clone(), "k".to_owned(), printable] {
        let resp = register(accepted.clone()).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_phone");
    }
    for refused in [
        format!("{longest}k"),
        "a key".to_owned(),
        "key\t1".to_owned(),
    ] {
        let resp = register(refused).await;
        assert_problem(&resp, StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    }
    app.stop().await;
}

both_backends!(
    empty_member_import_answered_200_with_nothing_imported,
    |app| async move {
        let bearer = format!("Bearer {}", app.admin_key);
        let key = idem();
        let import = |content_type: &'static str, body: &'static str| {
            let app = &app;
            let bearer = bearer.clone();
            let key = key.clone();
            async move {
                raw(
                    app,
                    Method::POST,
                    "/members/import",
                    &[
                        ("authorization", &bearer),
                        ("idempotency-key", &key),
                        ("content-type", content_type),
                    ],
                    Some(body.as_bytes().to_vec()),
                )
                .await
            }
        };
        let before = count(&app, "members").await;
        for (content_type, body) in [
            ("text/csv", ""),
            ("application/x-ndjson", ""),
            ("application/x-ndjson", "\n\n  \n"),
            ("text/csv", "phone,name\n"),
        ] {
            let resp = import(content_type, body).await;
            assert_problem(&resp, StatusCode::BAD_REQUEST, "empty_import");
        }
        assert_eq!(count(&app, "members").await, before);
        // The refusals did not use up the key: the real file goes through with it.
        let resp = import("text/csv", "phone,name\n+8613900000003,Imported Member\n").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.body["rows"], 1, "{}", resp.text);
        assert_eq!(resp.body["created"], 1, "{}", resp.text);
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------------
// Defects the contract check (`cargo xtask api-contract`) found.

both_backends!(a_json_array_was_read_as_a_struct_body, |app| async move {
    let id = member_id(&app, "+8613900000004", "Array Body").await;
    // serde reads a struct from an array of its fields in order: `[null, null, null, null]` was a
    // MemberPatch that changed nothing, answered 200, though the document says an object.
    for body in [
        json!([null, null, null, null]),
        json!(["Renamed"]),
        json!("a string"),
    ] {
        let resp = send_json(
            &app,
            Method::PATCH,
            &format!("/members/{id}"),
            &app.admin_key,
            &body,
        )
        .await;
        assert_problem(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let resp = send_json(
        &app,
        Method::PATCH,
        &format!("/members/{id}"),
        &app.admin_key,
        &json!({ "name": "Renamed" }),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.body["name"], "Renamed");
    app.stop().await;
});

both_backends!(
    an_unknown_perk_id_answered_503_and_opened_the_breaker,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "parking").await;
        install_plugin(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        let member = member_id(&app, "+8613900000005", "Perk Seeker").await;
        // parking-perk answers `invalid-input` for a perk it does not offer: the caller's error, and
        // more of them than the breaker's threshold must not shut the plugin for everyone.
        let unknown = format!("/members/{member}/perks/parking-perk/no-such-perk/redeem");
        for _ in 0..2 * coalition_runtime::breaker::BREAKER_FAILURE_THRESHOLD {
            let resp = send_json(&app, Method::POST, &unknown, &app.admin_key, &json!({})).await;
            assert_problem(
                &resp,
                StatusCode::UNPROCESSABLE_ENTITY,
                "perk_input_invalid",
            );
            assert_eq!(
                resp.body["extra"]["plugin"], "parking-perk",
                "{}",
                resp.text
            );
        }
        let known = format!("/members/{member}/perks/parking-perk/parking-2h/redeem");
        let resp = send_json(&app, Method::POST, &known, &app.admin_key, &json!({})).await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
        app.stop().await;
    }
);
