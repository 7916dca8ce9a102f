//! The `coalition` command line from the outside (the real binary), for defects partners hit:
//! a write that fails on a 503 or on an unreachable server must print the idempotency key it
//! used, with the flag to retry it safely; the documented curl writes send a Content-Type.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Runs `coalition plugin register-key` (a write) against `server`; returns stderr.
fn register_key_against(server: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = dir.path().join("k.pub");
    std::fs::write(&public, "ab".repeat(32)).expect("write key");
    let output = Command::new(env!("CARGO_BIN_EXE_coalition"))
        .env("COALITION_SERVER", server)
        .env("COALITION_API_KEY", "coa_test")
        .env_remove("COALITION_CONFIG")
        .args([
            "plugin",
            "register-key",
            "--brand",
            "cinema",
            "--public-key",
        ])
        .arg(&public)
        .output()
        .expect("run coalition");
    assert!(!output.status.success(), "a failed write fails the command");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The key printed before the call, and the same key in the retry hint.
fn assert_retry_hint(stderr: &str) {
    let key = stderr
        .lines()
        .find_map(|line| line.strip_prefix("idempotency key: "))
        .unwrap_or_else(|| panic!("no idempotency key printed: {stderr}"))
        .trim();
    assert_eq!(key.len(), 36, "a UUID: {stderr}");
    assert!(
        stderr.contains(&format!("--idempotency-key {key}")),
        "the retry hint names the same key: {stderr}"
    );
}

#[test]
fn a_write_answered_503_prints_its_idempotency_key_to_retry_with() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 65_536];
        let _ = stream.read(&mut buf);
        let body = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"code":"timeout","detail":"try again"}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let stderr = register_key_against(&format!("http://{addr}"));
    server.join().expect("server thread");
    assert!(stderr.contains("503"), "{stderr}");
    assert_retry_hint(&stderr);
}

#[test]
fn a_write_to_an_unreachable_server_prints_its_idempotency_key() {
    // A port nothing listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("addr");
    let stderr = register_key_against(&format!("http://{addr}"));
    assert_retry_hint(&stderr);
}

#[test]
fn documented_curl_writes_send_a_content_type() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for doc in [
        "README.md",
        "docs/API.md",
        "docs/COUNTER.md",
        "docs/SETTLEMENT.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).expect("doc");
        // One command per entry: continuation lines joined.
        let joined = text.replace("\\\n", " ");
        for line in joined
            .lines()
            .filter(|l| l.trim_start().starts_with("curl "))
        {
            if !(line.contains(" -d ") || line.contains(" --data")) {
                continue;
            }
            checked += 1;
            assert!(
                line.contains("Content-Type") || line.contains("\"$JSON\""),
                "{doc}: a curl write without Content-Type (the server answers 415): {line}"
            );
        }
    }
    assert!(checked > 10, "only {checked} documented curl writes found");
}
