//! `coalition pass verify`: a member pass checked offline, with public keys only (no server, no
//! database).

use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;

use crate::domain::pass::{parse_public_key, verify_with_skew, PassConfig};

/// `coalition pass …`
#[derive(Debug, clap::Subcommand)]
pub enum PassCommand {
    /// Verify a member pass offline, with public keys only (no server, no database).
    Verify {
        /// A public key as 64 hex characters, or a file holding keys one per line (`#` starts
        /// a comment) or the JSON of `GET /pass-keys`. Repeat for several keys.
        #[arg(long = "public-key", required = true)]
        public_key: Vec<String>,
        /// Check validity at this Unix ms instead of now.
        #[arg(long)]
        at_ms: Option<i64>,
        /// Tolerated clock skew, ms.
        #[arg(long, default_value_t = PassConfig::default().max_clock_skew_ms)]
        skew_ms: i64,
        /// The token (the text inside the QR code).
        token: String,
    },
}

/// Runs `coalition pass …`: prints the claims as JSON, or fails with the problem code.
pub fn run_command(command: PassCommand) -> anyhow::Result<()> {
    match command {
        PassCommand::Verify {
            public_key,
            at_ms,
            skew_ms,
            token,
        } => {
            let mut keys = Vec::new();
            for arg in &public_key {
                keys.extend(keys_from_arg(arg)?);
            }
            let now_ms = at_ms.unwrap_or_else(|| {
                use crate::foundation::clock::Clock;
                crate::foundation::clock::SystemClock.now_ms()
            });
            match verify_with_skew(&token, &keys, now_ms, skew_ms) {
                Ok(claims) => {
                    println!("{}", serde_json::to_string_pretty(&claims)?);
                    Ok(())
                }
                Err(err) => anyhow::bail!("{}: {err}", err.code()),
            }
        }
    }
}

/// Public keys from a `--public-key` argument: hex, or a file of hex lines or `/pass-keys` JSON.
fn keys_from_arg(arg: &str) -> anyhow::Result<Vec<VerifyingKey>> {
    if let Ok(key) = parse_public_key(arg) {
        return Ok(vec![key]);
    }
    let path = PathBuf::from(arg);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!("--public-key {arg:?} is neither a hex key nor a readable file: {e}")
    })?;
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        let list = json.get("keys").unwrap_or(&json);
        let keys = list
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.get("public_key").and_then(serde_json::Value::as_str))
            .map(|k| parse_public_key(k).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() {
            anyhow::bail!("{} holds no public_key entries", path.display());
        }
        return Ok(keys);
    }
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| parse_public_key(l).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
        .collect()
}
