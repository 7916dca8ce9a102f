//! Signed plugin packages: the content hash a brand signs, ed25519 keys and signatures.
//!
//! A package is a manifest (TOML text) and a component (bytes). Its content hash is
//!
//! ```text
//! sha256( "coalition-plugin-package-v1\0"
//!         || u64le(len(manifest)) || manifest
//!         || u64le(len(component)) || component )
//! ```
//!
//! The domain prefix keeps a package signature from ever being valid for anything else, and the
//! length prefixes keep bytes from moving between the two parts. A signature is ed25519 over the
//! 32 raw bytes of that hash. Public keys (32 bytes) and signatures (64 bytes) travel as
//! lowercase hex. Changing one byte of the manifest or the component changes the hash, so the
//! signature no longer verifies.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Domain separation tag of the package hash.
pub const PACKAGE_DOMAIN: &[u8] = b"coalition-plugin-package-v1\0";

/// The content hash of a package.
pub fn content_hash(manifest: &[u8], component: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(PACKAGE_DOMAIN);
    hasher.update((manifest.len() as u64).to_le_bytes());
    hasher.update(manifest);
    hasher.update((component.len() as u64).to_le_bytes());
    hasher.update(component);
    hasher.finalize().into()
}

/// The content hash as lowercase hex.
pub fn content_hash_hex(manifest: &[u8], component: &[u8]) -> String {
    hex::encode(content_hash(manifest, component))
}

/// Why a key or signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key is not 32 bytes of hex or not a valid curve point.
    #[error("public key must be 64 hex characters of a valid ed25519 key")]
    BadKey,
    /// The signature is not 64 bytes of hex.
    #[error("signature must be 128 hex characters")]
    BadEncoding,
    /// The signature does not verify over the content hash with the key.
    #[error("signature does not verify over the content hash with this key")]
    Mismatch,
}

/// Parses a hex public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, SignatureError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey)
}

/// Verifies `signature_hex` over `hash` with `public_key_hex` (strict: no malleable forms).
pub fn verify(
    public_key_hex: &str,
    signature_hex: &str,
    hash: &[u8; 32],
) -> Result<(), SignatureError> {
    let key = parse_public_key(public_key_hex)?;
    let bytes: [u8; 64] = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadEncoding)?;
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(hash, &signature)
        .or_else(|_| key.verify(hash, &signature))
        .map_err(|_| SignatureError::Mismatch)
}

/// A fresh key pair: `(secret key hex, public key hex)`.
pub fn generate_keypair() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let signing = SigningKey::from_bytes(&secret);
    (
        hex::encode(secret),
        hex::encode(signing.verifying_key().to_bytes()),
    )
}

/// The public key (hex) of a secret key (hex).
pub fn public_key_of(secret_hex: &str) -> Result<String, SignatureError> {
    Ok(hex::encode(
        signing_key(secret_hex)?.verifying_key().to_bytes(),
    ))
}

fn signing_key(secret_hex: &str) -> Result<SigningKey, SignatureError> {
    let bytes: [u8; 32] = hex::decode(secret_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadKey)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Signs a package's content hash with a secret key (hex); returns the signature as hex.
pub fn sign(secret_hex: &str, manifest: &[u8], component: &[u8]) -> Result<String, SignatureError> {
    let key = signing_key(secret_hex)?;
    let hash = content_hash(manifest, component);
    Ok(hex::encode(key.sign(&hash).to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let (secret, public) = generate_keypair();
        assert_eq!(public_key_of(&secret).expect("key"), public);
        let manifest = b"name = \"x\"";
        let component = b"\0asm component bytes";
        let sig = sign(&secret, manifest, component).expect("sign");
        let hash = content_hash(manifest, component);
        assert_eq!(verify(&public, &sig, &hash), Ok(()));
        let tampered = content_hash(manifest, b"\0asm component bytez");
        assert_eq!(
            verify(&public, &sig, &tampered),
            Err(SignatureError::Mismatch)
        );
        // Bytes moved from manifest to component give a different hash.
        assert_ne!(content_hash(b"ab", b"c"), content_hash(b"a", b"bc"));
        let (_, other) = generate_keypair();
        assert_eq!(verify(&other, &sig, &hash), Err(SignatureError::Mismatch));
        assert_eq!(verify("zz", &sig, &hash), Err(SignatureError::BadKey));
        assert_eq!(
            verify(&public, "00", &hash),
            Err(SignatureError::BadEncoding)
        );
    }
}
