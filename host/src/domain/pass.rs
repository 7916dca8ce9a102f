//! The offline member pass: a short-lived token, signed with the platform's ed25519 key, that a
//! counter verifies with nothing but the public key — no server, no network.
//!
//! # Token
//! `base64url(payload JSON) "." base64url(signature)`, both without padding. The signature is
//! ed25519 over `"coalition-pass-v1." + <first segment>` (the context string keeps a pass
//! signature from ever being valid for anything else signed with the key). The payload is
//! [`PassClaims`]: key id, member id, tier, masked name and phone, issue and expiry time and a
//! random nonce. A key id is the first 16 hex characters of SHA-256 of the public key, so a
//! counter that holds only public keys still knows which one to try.
//!
//! # Keys
//! Kept in `pass_keys`, shared by all nodes: the first pass request creates the key (a UNIQUE
//! slot makes concurrent nodes agree on one), [`rotate`] retires it and creates the next.
//! Retired keys stay listed by `GET /pass-keys` so passes signed before a rotation still verify
//! until they expire. The private seed sits in the database like the other secrets of the
//! platform; whoever can read the database can sign passes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{Backend, Store};

/// Signing context prefixed to the payload segment before signing.
pub const SIGNING_CONTEXT: &[u8] = b"coalition-pass-v1.";
/// Payload format version.
pub const PASS_VERSION: u32 = 1;
/// Longest token accepted: a payload is ~300 bytes, so 2 KiB is never a real pass and keeps
/// decoding work bounded on a counter.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest pass lifetime the configuration may set: a pass that lives a day is a member card,
/// not a pass, and can be copied and replayed all day.
pub const MAX_PASS_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// Shortest pass lifetime: a counter needs time to scan it.
pub const MIN_PASS_TTL_MS: i64 = 30 * 1000;
/// Pixels per QR module in the PNG rendering: readable by a phone camera or a 2D scanner from a
/// phone screen.
pub const PNG_MODULE_PX: u32 = 8;
/// Light modules around the code (the QR standard asks for 4).
pub const QR_QUIET_ZONE_MODULES: u32 = 4;
/// Smallest SVG side, px.
pub const SVG_MIN_SIDE_PX: u32 = 256;

/// The `[pass]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassConfig {
    /// How long a pass stays valid after it is issued, ms (30 s ..= 24 h).
    pub ttl_ms: i64,
    /// Clock difference tolerated between a counter (or the server) and the issuing node: a
    /// pass issued up to this far in the verifier's future is still accepted, and an offline
    /// purchase may be stamped this far in the server's future.
    pub max_clock_skew_ms: i64,
}

impl Default for PassConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 10 * 60 * 1000,
            max_clock_skew_ms: 2 * 60 * 1000,
        }
    }
}

impl PassConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(MIN_PASS_TTL_MS..=MAX_PASS_TTL_MS).contains(&self.ttl_ms) {
            anyhow::bail!(
                "[pass] ttl_ms must be within {MIN_PASS_TTL_MS}..={MAX_PASS_TTL_MS}, not {}",
                self.ttl_ms
            );
        }
        if !(0..=MAX_PASS_TTL_MS).contains(&self.max_clock_skew_ms) {
            anyhow::bail!(
                "[pass] max_clock_skew_ms must be within 0..={MAX_PASS_TTL_MS}, not {}",
                self.max_clock_skew_ms
            );
        }
        Ok(())
    }
}

/// What a pass says; everything here may be shown at any counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassClaims {
    /// Payload format version (1).
    pub v: u32,
    /// Id of the key that signed it.
    pub key_id: String,
    /// The member.
    pub member_id: String,
    /// The member's tier when the pass was issued.
    pub tier: String,
    /// Masked display name (first character only).
    pub name_masked: String,
    /// Masked phone (`+86138****8000`).
    pub phone_masked: String,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms; the pass is refused from this moment on.
    pub expires_at_ms: i64,
    /// 128 random bits, hex: two passes are never the same token.
    pub nonce: String,
}

/// Why a pass does not verify. Each has a stable code (see [`PassError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// Not two base64url segments of a JSON payload and a 64-byte signature.
    #[error("the pass is malformed: {0}")]
    Malformed(String),
    /// A payload version this verifier does not know.
    #[error("pass format version {0} is not supported")]
    UnsupportedVersion(u32),
    /// Signed by a key that is not among the verifier's public keys.
    #[error("the pass was signed by key {0:?}, which is not a known pass key")]
    UnknownKey(String),
    /// The signature does not match the payload: the pass was altered or forged.
    #[error("the pass signature does not verify: the pass was altered or forged")]
    BadSignature,
    /// Past its expiry.
    #[error("the pass expired at {expired_at_ms} (checked at {at_ms})")]
    Expired {
        /// The pass's expiry, Unix ms.
        expired_at_ms: i64,
        /// When it was checked, Unix ms.
        at_ms: i64,
    },
    /// Issued after the moment it is checked for (beyond the tolerated clock skew).
    #[error("the pass was issued at {issued_at_ms}, after {at_ms}")]
    NotYetValid {
        /// The pass's issue time, Unix ms.
        issued_at_ms: i64,
        /// When it was checked, Unix ms.
        at_ms: i64,
    },
}

impl PassError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            PassError::Malformed(_) => "pass_malformed",
            PassError::UnsupportedVersion(_) => "pass_unsupported_version",
            PassError::UnknownKey(_) => "pass_unknown_key",
            PassError::BadSignature => "pass_bad_signature",
            PassError::Expired { .. } => "pass_expired",
            PassError::NotYetValid { .. } => "pass_not_yet_valid",
        }
    }
}

impl From<PassError> for DomainError {
    fn from(err: PassError) -> Self {
        DomainError::unprocessable(err.code(), err.to_string())
    }
}

/// The id of a public key: the first 16 hex characters of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// Parses a hex-encoded 32-byte public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not hex: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes (64 hex characters)".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

fn signing_input(payload_b64: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + payload_b64.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(payload_b64.as_bytes());
    input
}

/// Signs claims into a token. `claims.key_id` must be the id of `key`.
pub fn sign(claims: &PassClaims, key: &SigningKey) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let payload_b64 = URL_SAFE_NO_PAD.encode(payload);
    let signature = key.sign(&signing_input(&payload_b64));
    format!(
        "{payload_b64}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Verifies a token with nothing but public keys and a time: the signature by the key the
/// payload names, then that the pass was valid at `now_ms` (issued no later than
/// `now_ms + skew_ms`, not yet expired). Pure: no database, no network, no clock.
pub fn verify_with_skew(
    token: &str,
    keys: &[VerifyingKey],
    now_ms: i64,
    skew_ms: i64,
) -> Result<PassClaims, PassError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(PassError::Malformed(format!(
            "longer than {MAX_TOKEN_LEN} characters"
        )));
    }
    let (payload_b64, signature_b64) = token
        .split_once('.')
        .ok_or_else(|| PassError::Malformed("expected <payload>.<signature>".to_owned()))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|e| PassError::Malformed(format!("payload is not base64url: {e}")))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|e| PassError::Malformed(format!("signature is not base64url: {e}")))?;
    let signature = Signature::from_slice(&signature)
        .map_err(|_| PassError::Malformed("the signature is not 64 bytes".to_owned()))?;
    // The version and key id are read before the signature is checked (to pick the key); no
    // claim is trusted until it verifies.
    let value: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| PassError::Malformed(format!("payload is not JSON: {e}")))?;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(PASS_VERSION)) {
        return Err(PassError::UnsupportedVersion(
            version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        ));
    }
    let kid = value
        .get("key_id")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| PassError::Malformed("payload has no key_id".to_owned()))?;
    let key = keys
        .iter()
        .find(|k| key_id(k) == kid)
        .ok_or_else(|| PassError::UnknownKey(kid.to_owned()))?;
    key.verify(&signing_input(payload_b64), &signature)
        .map_err(|_| PassError::BadSignature)?;
    let claims: PassClaims = serde_json::from_value(value)
        .map_err(|e| PassError::Malformed(format!("payload fields: {e}")))?;
    if now_ms >= claims.expires_at_ms {
        return Err(PassError::Expired {
            expired_at_ms: claims.expires_at_ms,
            at_ms: now_ms,
        });
    }
    if claims.issued_at_ms > now_ms.saturating_add(skew_ms) {
        return Err(PassError::NotYetValid {
            issued_at_ms: claims.issued_at_ms,
            at_ms: now_ms,
        });
    }
    Ok(claims)
}

/// [`verify_with_skew`] with the default skew of [`PassConfig`].
pub fn verify(token: &str, keys: &[VerifyingKey], now_ms: i64) -> Result<PassClaims, PassError> {
    verify_with_skew(token, keys, now_ms, PassConfig::default().max_clock_skew_ms)
}

// ---------------------------------------------------------------------------------------------
// Keys in the database

/// A public pass key as listed for counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PassKeyView {
    /// Key id (first 16 hex characters of SHA-256 of the key).
    pub key_id: String,
    /// The ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// Signs new passes; retired keys verify passes signed before the rotation.
    pub active: bool,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms, for retired keys.
    pub retired_at_ms: Option<i64>,
}

/// The key that signs new passes.
#[derive(Debug)]
pub struct ActiveKey {
    /// Its id.
    pub key_id: String,
    /// The signing key.
    pub key: SigningKey,
}

fn parse_signing_key(hex_seed: &str) -> DomainResult<SigningKey> {
    let bytes = hex::decode(hex_seed).map_err(DomainError::internal)?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| DomainError::internal(anyhow::anyhow!("a pass key seed is not 32 bytes")))?;
    Ok(SigningKey::from_bytes(&seed))
}

async fn load_active(conn: &mut AnyConnection) -> DomainResult<Option<ActiveKey>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT id, private_key FROM pass_keys WHERE active_slot = 1")
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some((key_id, seed)) => Ok(Some(ActiveKey {
            key_id,
            key: parse_signing_key(&seed)?,
        })),
        None => Ok(None),
    }
}

/// Inserts a fresh key into the active slot unless another writer filled it first.
async fn insert_new_key(conn: &mut AnyConnection, now_ms: i64) -> DomainResult<()> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    sqlx::query(
        "INSERT INTO pass_keys (id, public_key, private_key, active_slot, created_at)
         VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING",
    )
    .bind(key_id(&public))
    .bind(hex::encode(public.as_bytes()))
    .bind(hex::encode(seed))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The key that signs new passes, created on first use.
pub async fn active_key(store: &Store, now_ms: i64) -> DomainResult<ActiveKey> {
    {
        let mut conn = store.read().acquire().await?;
        if let Some(key) = load_active(&mut conn).await? {
            return Ok(key);
        }
    }
    let mut tx = store.begin().await?;
    insert_new_key(&mut tx, now_ms).await?;
    let key = load_active(&mut tx).await?;
    tx.commit().await?;
    key.ok_or_else(|| {
        DomainError::internal(anyhow::anyhow!("no active pass key after creating one"))
    })
}

/// Retires the active key (if any) and creates the next one, in the caller's transaction.
pub async fn rotate(conn: &mut AnyConnection, backend: Backend, now_ms: i64) -> DomainResult<()> {
    // Lock the active row so two rotations on two nodes retire one key each, in turn.
    let _: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM pass_keys WHERE active_slot = 1{}",
        crate::foundation::store::for_update(backend)
    ))
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query("UPDATE pass_keys SET active_slot = NULL, retired_at = $1 WHERE active_slot = 1")
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    insert_new_key(conn, now_ms).await
}

/// id, public key, active slot, created_at, retired_at.
type KeyRow = (String, String, Option<i64>, i64, Option<i64>);

/// Every pass key, the active one first, then retired ones newest first.
pub async fn list_keys(conn: &mut AnyConnection) -> DomainResult<Vec<PassKeyView>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, public_key, active_slot, created_at, retired_at FROM pass_keys
         ORDER BY active_slot, created_at DESC",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut keys: Vec<PassKeyView> = rows
        .into_iter()
        .map(
            |(key_id, public_key, slot, created_at_ms, retired_at_ms)| PassKeyView {
                key_id,
                public_key,
                active: slot == Some(1),
                created_at_ms,
                retired_at_ms,
            },
        )
        .collect();
    // NULLs sort differently on the two engines; order explicitly.
    keys.sort_by(|a, b| {
        b.active
            .cmp(&a.active)
            .then(b.created_at_ms.cmp(&a.created_at_ms))
    });
    Ok(keys)
}

/// Every pass key, parsed, for verification on the server.
pub async fn verifying_keys(conn: &mut AnyConnection) -> DomainResult<Vec<VerifyingKey>> {
    list_keys(conn)
        .await?
        .iter()
        .map(|k| {
            parse_public_key(&k.public_key)
                .map_err(|e| DomainError::internal(anyhow::anyhow!("stored pass key: {e}")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Issuing

/// A freshly signed pass.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberPass {
    /// The token to show (as text or QR code) at a counter.
    pub token: String,
    /// What it says.
    pub claims: PassClaims,
}

/// Signs a pass for an active, non-blacklisted member.
pub async fn issue(
    store: &Store,
    config: &PassConfig,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<MemberPass> {
    let member = {
        let mut conn = store.read().acquire().await?;
        let member = crate::domain::members::fetch_existing(&mut conn, member_id).await?;
        if crate::domain::risk::is_blacklisted(
            &mut conn,
            crate::domain::risk::SubjectKind::Member,
            member_id,
        )
        .await?
        {
            return Err(crate::domain::risk::member_blacklisted(member_id));
        }
        member
    };
    if member.status != "active" {
        return Err(crate::ledger::member_blocked(member_id));
    }
    let key = active_key(store, now_ms).await?;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let claims = PassClaims {
        v: PASS_VERSION,
        key_id: key.key_id.clone(),
        member_id: member.id.clone(),
        tier: member.tier.clone(),
        name_masked: crate::domain::members::mask_name(&member.name),
        phone_masked: crate::domain::members::mask_phone(&member.phone),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(config.ttl_ms),
        nonce: hex::encode(nonce),
    };
    let token = sign(&claims, &key.key);
    Ok(MemberPass { token, claims })
}

// ---------------------------------------------------------------------------------------------
// QR codes

fn qr(token: &str) -> DomainResult<qrcode::QrCode> {
    // Medium error correction: survives a scuffed screen protector, keeps the code small.
    qrcode::QrCode::with_error_correction_level(token.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| DomainError::internal(anyhow::anyhow!("QR encoding failed: {e}")))
}

/// The token as an SVG QR code.
pub fn qr_svg(token: &str) -> DomainResult<String> {
    let code = qr(token)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(SVG_MIN_SIDE_PX, SVG_MIN_SIDE_PX)
        .quiet_zone(true)
        .build())
}

/// The token as a grayscale PNG QR code.
pub fn qr_png(token: &str) -> DomainResult<Vec<u8>> {
    let code = qr(token)?;
    let modules = u32::try_from(code.width())
        .map_err(|_| DomainError::internal(anyhow::anyhow!("QR code too wide")))?;
    let colors = code.to_colors();
    let side_modules = modules + 2 * QR_QUIET_ZONE_MODULES;
    let side_px = side_modules * PNG_MODULE_PX;
    let mut pixels = vec![255u8; (side_px as usize) * (side_px as usize)];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let (mx, my) = (i % modules, i / modules);
        let x0 = (mx + QR_QUIET_ZONE_MODULES) * PNG_MODULE_PX;
        let y0 = (my + QR_QUIET_ZONE_MODULES) * PNG_MODULE_PX;
        for y in y0..y0 + PNG_MODULE_PX {
            let row = (y * side_px) as usize;
            pixels[row + x0 as usize..row + (x0 + PNG_MODULE_PX) as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side_px, side_px);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(DomainError::internal)?;
        writer
            .write_image_data(&pixels)
            .map_err(DomainError::internal)?;
        writer.finish().map_err(DomainError::internal)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_for(key: &SigningKey, issued: i64, expires: i64) -> PassClaims {
        PassClaims {
            v: PASS_VERSION,
            key_id: key_id(&key.verifying_key()),
            member_id: "m1".to_owned(),
            tier: "gold".to_owned(),
            name_masked: "W*".to_owned(),
            phone_masked: "+86138****8000".to_owned(),
            issued_at_ms: issued,
            expires_at_ms: expires,
            nonce: "00".repeat(16),
        }
    }

    #[test]
    fn verifies_with_the_public_key_only() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let token = sign(&claims_for(&key, 1_000, 2_000), &key);
        let claims = verify(&token, &[key.verifying_key()], 1_500).expect("valid");
        assert_eq!(claims.member_id, "m1");
    }

    #[test]
    fn each_failure_has_its_own_code() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let token = sign(&claims_for(&key, 1_000, 2_000), &key);
        let keys = [key.verifying_key()];
        let code = |r: Result<PassClaims, PassError>| r.err().map(|e| e.code());
        assert_eq!(code(verify(&token, &keys, 2_000)), Some("pass_expired"));
        assert_eq!(
            code(verify_with_skew(&token, &keys, 0, 0)),
            Some("pass_not_yet_valid")
        );
        assert_eq!(
            code(verify(&token, &[other.verifying_key()], 1_500)),
            Some("pass_unknown_key")
        );
        // Same key id, different payload: the signature no longer matches.
        let forged = sign(&claims_for(&key, 1_000, 9_000), &other);
        let (payload, _) = forged.split_once('.').expect("dot");
        let (_, signature) = token.split_once('.').expect("dot");
        let spliced = format!("{payload}.{signature}");
        assert_eq!(
            code(verify(&spliced, &keys, 1_500)),
            Some("pass_bad_signature")
        );
        assert_eq!(
            code(verify("garbage", &keys, 1_500)),
            Some("pass_malformed")
        );
    }

    #[test]
    fn qr_renders_png_and_svg() {
        let png = qr_png("hello").expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = qr_svg("hello").expect("svg");
        assert!(svg.contains("<svg"));
    }
}
