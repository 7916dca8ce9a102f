//! What holds for every operation of the OpenAPI document, said once here rather than on each
//! handler, so that it cannot drift from the extractors that enforce it:
//! - binary bodies (a PNG) are strings of their media type;
//! - the `Idempotency-Key` header: required, with the exact length and pattern
//!   [`crate::interfaces::api::idempotency::validate_key`] accepts;
//! - the answers every operation may give before its handler runs: 401 from the API key check,
//!   400 from the idempotency-key, path and query extractors, 400/413/415/422 from the JSON
//!   body extractor, and 503 when the database is busy or the request times out.
//!
//! A status an operation documents itself keeps its own description; the codes named here are
//! appended to it.

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required, Response};

use crate::interfaces::api::idempotency::{HEADER_PATTERN, MAX_KEY_LEN};

/// The header's name as documented.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Content type of every error.
const PROBLEM_JSON: &str = "application/problem+json";

/// Applies the common parts to every operation of `openapi`.
pub fn finish(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            finish_operation(operation);
        }
    }
}

fn finish_operation(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            for (media_type, content) in response.content.iter_mut() {
                if is_binary(media_type) {
                    content.schema = Some(binary(media_type));
                }
            }
        }
    }
    let mut bad_request: Vec<&str> = Vec::new();
    let mut idempotent = false;
    for parameter in operation.parameters.iter_mut().flatten() {
        match parameter.parameter_in {
            ParameterIn::Header if parameter.name.eq_ignore_ascii_case(IDEMPOTENCY_HEADER) => {
                document_idempotency_key(parameter);
                idempotent = true;
            }
            ParameterIn::Path => push_once(&mut bad_request, "`invalid_path`"),
            ParameterIn::Query => push_once(&mut bad_request, "`invalid_query`"),
            _ => {}
        }
    }
    if idempotent {
        bad_request.push("`idempotency_key_required`");
        bad_request.push("`invalid_idempotency_key`");
    }
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body: &RequestBody| body.content.contains_key("application/json"));
    if json_body {
        bad_request.push("`malformed_json`");
        bad_request.push("`unreadable_body`");
        add_problem(
            operation,
            "413",
            "`payload_too_large`: the body exceeds the size limit",
        );
        add_problem(
            operation,
            "415",
            "`unsupported_media_type`: the body is not sent as `application/json`",
        );
        add_problem(
            operation,
            "422",
            "`invalid_body`: the body does not match the request schema",
        );
    }
    if !bad_request.is_empty() {
        add_problem(operation, "400", &bad_request.join(", "));
    }
    if is_secured(operation) {
        add_problem(
            operation,
            "401",
            "`unauthenticated`: no API key; `invalid_api_key`: malformed, unknown or revoked",
        );
    }
    add_problem(
        operation,
        "503",
        "`busy` (the database is busy) or `timeout`: retry with the same idempotency key",
    );
}

/// Media types whose bodies are bytes, not text or JSON.
fn is_binary(media_type: &str) -> bool {
    media_type.starts_with("image/") && media_type != "image/svg+xml"
        || media_type == "application/octet-stream"
}

/// OpenAPI 3.1's binary body: a string of that media type (utoipa would describe a `Vec<u8>`
/// as an array of integers, which no client can read a PNG into).
fn binary(media_type: &str) -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::T(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type(media_type)
            .into(),
    )
}

fn push_once<'a>(codes: &mut Vec<&'a str>, code: &'a str) {
    if !codes.contains(&code) {
        codes.push(code);
    }
}

/// The header as [`crate::interfaces::api::idempotency::IdempotencyKey`] reads it: required, 1 to
/// [`MAX_KEY_LEN`] printable ASCII characters without spaces.
fn document_idempotency_key(parameter: &mut Parameter) {
    parameter.name = IDEMPOTENCY_HEADER.to_owned();
    parameter.required = Required::True;
    let rule = format!(
        "1 to {MAX_KEY_LEN} printable ASCII characters, no spaces; a fresh one (e.g. a UUID) per \
         operation, the same one when retrying it"
    );
    parameter.description = Some(match parameter.description.take() {
        Some(own) if !own.is_empty() => format!("{own}. {rule}"),
        _ => rule,
    });
    parameter.schema = Some(RefOr::T(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_LEN))
            .pattern(Some(HEADER_PATTERN))
            .into(),
    ));
}

/// Whether the operation needs an API key (everything but the few `security(())` routes).
fn is_secured(operation: &Operation) -> bool {
    match &operation.security {
        None => true,
        Some(requirements) => serde_json::to_value(requirements)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|reqs| {
                reqs.iter()
                    .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
            }),
    }
}

/// Documents `status` as a problem with these codes, or appends them to the operation's own
/// description of that status.
fn add_problem(operation: &mut Operation, status: &str, codes: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            let own = response.description.trim();
            response.description = if own.is_empty() {
                codes.to_owned()
            } else {
                format!("{own}; also {codes}")
            };
            if !response.content.contains_key(PROBLEM_JSON) {
                response.content.insert(PROBLEM_JSON.to_owned(), problem());
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut response = Response::new(codes);
            response.content.insert(PROBLEM_JSON.to_owned(), problem());
            responses.insert(status.to_owned(), RefOr::T(response));
        }
    }
}

fn problem() -> Content {
    Content::new(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
        Ref::from_schema_name("Problem"),
    )))
}

#[cfg(test)]
mod snapshot {
    /// The committed document, which partners generate clients from.
    const COMMITTED: &str = "../docs/openapi.json";

    /// The OpenAPI document is the contract: any change to it shows up as a change to
    /// `docs/openapi.json` in review. `COALITION_WRITE_OPENAPI=1 cargo test` rewrites the file
    /// after a deliberate change.
    #[test]
    fn the_served_document_is_the_committed_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        let document = serde_json::to_value(crate::interfaces::api::openapi()).expect("json");
        let text = serde_json::to_string_pretty(&document).expect("json") + "\n";
        if std::env::var_os("COALITION_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &text).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).expect("read docs/openapi.json");
        assert!(
            committed == text,
            "the OpenAPI document differs from docs/openapi.json; if the change is meant, \
             run `COALITION_WRITE_OPENAPI=1 cargo test --workspace --lib snapshot` and commit it"
        );
    }
}
