//! The offline member pass: verifies with nothing but the public key (after the server is
//! gone, and from the command line), refuses tampered, expired and unknown-key passes with
//! distinct codes, renders as PNG and SVG QR codes, survives a key rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use coalition::domain::pass::{self, PassError};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::support::{blacklist, idem, pass};
use crate::counter_test;
use crate::helpers::{TestApp, T0_MS};
use crate::ledger::{key, member};

async fn public_keys(app: &TestApp) -> Vec<ed25519_dalek::VerifyingKey> {
    // No credentials: counters fetch these without a key.
    let (status, body) = app.call(Method::GET, "/pass-keys", None, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| pass::parse_public_key(k["public_key"].as_str().expect("hex")).expect("key"))
        .collect()
}

fn tamper(token: &str, field: &str, value: Value) -> String {
    let (payload, signature) = token.split_once('.').expect("two segments");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    claims[field] = value;
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
    format!("{payload}.{signature}")
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_coalition"))
        .args(args)
        .env_remove("COALITION_DATABASE_URL")
        .output()
        .expect("run coalition")
}

counter_test!(
    pass_verifies_offline_with_only_the_public_key,
    |app| async move {
        let m = member(&app).await;
        let own = key(&app, "member", None, Some(&m)).await;
        let (status, body) = app.get(&format!("/members/{m}/pass"), &own).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().expect("token").to_owned();
        let keys = public_keys(&app).await;
        assert_eq!(keys.len(), 1);
        let key_hex = hex::encode(keys[0].as_bytes());
        // Another member's key may not fetch this member's pass.
        let other = member(&app).await;
        let other_key = key(&app, "member", None, Some(&other)).await;
        let (status, _) = app.get(&format!("/members/{m}/pass"), &other_key).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // The server and its database are gone: only the token and the public key remain.
        app.stop().await;
        let at = T0_MS + 60_000;
        let claims = pass::verify(&token, &keys, at).expect("verifies offline");
        assert_eq!(claims.member_id, m);
        assert_eq!(claims.tier, "bronze");
        assert_eq!(claims.name_masked, "T*** ******");
        assert!(claims.phone_masked.contains("****"), "{claims:?}");
        assert_eq!(claims.issued_at_ms, T0_MS);
        assert_eq!(claims.expires_at_ms, T0_MS + 10 * 60 * 1000);

        // Each failure has its own code.
        let tampered = tamper(&token, "tier", json!("platinum"));
        assert_eq!(
            pass::verify(&tampered, &keys, at),
            Err(PassError::BadSignature)
        );
        let longer = tamper(&token, "expires_at_ms", json!(T0_MS + 86_400_000));
        assert_eq!(
            pass::verify(&longer, &keys, at),
            Err(PassError::BadSignature)
        );
        let expired = pass::verify(&token, &keys, claims.expires_at_ms).expect_err("expired");
        assert_eq!(expired.code(), "pass_expired");
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]).verifying_key();
        let unknown = pass::verify(&token, &[stranger], at).expect_err("unknown key");
        assert_eq!(unknown.code(), "pass_unknown_key");
        // A pass signed by a key the counter does not hold, claiming a known key id.
        let forged_claims = pass::PassClaims {
            expires_at_ms: T0_MS + 86_400_000,
            ..claims.clone()
        };
        let forged = pass::sign(
            &forged_claims,
            &ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]),
        );
        assert_eq!(
            pass::verify(&forged, &keys, at),
            Err(PassError::BadSignature)
        );

        // The command line verifies with the key alone, too.
        let at_arg = at.to_string();
        let out = cli(&[
            "pass",
            "verify",
            "--public-key",
            &key_hex,
            "--at-ms",
            &at_arg,
            &token,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).expect("claims JSON");
        assert_eq!(printed["member_id"], json!(m));
        let late = (claims.expires_at_ms + 1).to_string();
        let out = cli(&[
            "pass",
            "verify",
            "--public-key",
            &key_hex,
            "--at-ms",
            &late,
            &token,
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pass_expired"));
        let out = cli(&[
            "pass",
            "verify",
            "--public-key",
            &key_hex,
            "--at-ms",
            &at_arg,
            &tampered,
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pass_bad_signature"));
    }
);

counter_test!(pass_renders_as_png_and_svg_qr_codes, |app| async move {
    let m = member(&app).await;
    let resp = app
        .client
        .get(format!("{}/members/{m}/pass.png", app.base))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("png");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let png = resp.bytes().await.expect("bytes");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: a square image.
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!(width, height);
    assert!(width >= 200, "{width}");

    let resp = app
        .client
        .get(format!("{}/members/{m}/pass.svg", app.base))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("svg");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    let svg = resp.text().await.expect("text");
    let root = svg
        .trim_start_matches(|c| c != '<')
        .split("?>")
        .last()
        .expect("after prolog")
        .trim_start();
    assert!(root.starts_with("<svg"), "{root:.80}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<path"), "dark modules are drawn");

    // A member that does not exist has no pass.
    let (status, body) = app.get("/members/nobody/pass.png", &app.admin_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
});

counter_test!(
    passes_signed_before_a_rotation_still_verify_and_blacklisted_members_get_none,
    |app| async move {
        let m = member(&app).await;
        let before = pass(&app, &m).await;
        let old_token = before["token"].as_str().expect("token").to_owned();
        let (status, rotated) = app
            .post("/pass-keys/rotate", &app.admin_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let listed = rotated["keys"].as_array().expect("keys");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["active"], true);
        assert_eq!(listed[1]["active"], false);
        assert_eq!(listed[1]["key_id"], before["claims"]["key_id"]);
        let after = pass(&app, &m).await;
        assert_eq!(after["claims"]["key_id"], listed[0]["key_id"]);
        let keys = public_keys(&app).await;
        let at = T0_MS + 1_000;
        for token in [&old_token, after["token"].as_str().expect("token")] {
            assert_eq!(
                pass::verify(token, &keys, at).expect("verifies").member_id,
                m
            );
        }
        // A rotation needs an admin.
        let brand_key = {
            crate::ledger::brand(&app, "cafe", &[], &[]).await;
            key(&app, "brand", Some("cafe"), None).await
        };
        let (status, _) = app
            .post("/pass-keys/rotate", &brand_key, &idem(), &json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        blacklist(&app, "member", &m).await;
        let (status, problem) = app.get(&format!("/members/{m}/pass"), &app.admin_key).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        assert_eq!(problem["code"], "member_blacklisted");
    }
);
