//! Typed configuration: built-in defaults, then an optional TOML file, then `COALITION_*`
//! environment variables (nested keys with `__`, e.g. `COALITION_LIMITS__REQUEST_BODY_BYTES`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory for the embedded database, compiled plugin artifacts and demo keys.
    pub data_dir: PathBuf,
    /// `sqlite://path` or `postgres://…`; empty means `sqlite://<data_dir>/coalition.db`.
    pub database_url: String,
    /// Log filter in `tracing` env-filter syntax.
    pub log_filter: String,
    /// Emit logs as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// Hard limits, each with its reason.
    pub limits: Limits,
    /// Points: expiry policy, conversion rate, holds.
    pub points: crate::ledger::PointsConfig,
    /// The tier ladder and its window.
    pub tiers: crate::domain::tiers::TiersConfig,
    /// Background job intervals.
    pub jobs: crate::workflows::jobs::JobsConfig,
    /// The plugin runtime on this node.
    pub plugins: crate::plugins::PluginsConfig,
    /// Redemption frequency limits and the real-name threshold.
    pub risk: crate::domain::risk::RiskConfig,
    /// The offline member pass: lifetime and accepted clock skew.
    pub pass: crate::domain::pass::PassConfig,
    /// Perk listing cache, checkout reservations, coupons per order.
    pub perks: crate::workflows::perks::PerksConfig,
    /// Stored value: balance limits, real-name threshold, reserve and dormancy.
    pub stored_value: crate::ledger::stored_value::StoredValueConfig,
    /// The paid membership card: plan count and default renewal notice.
    pub membership: crate::domain::membership::MembershipConfig,
    /// Settlement between brands: the platform's default rules and the settle job.
    pub settlement: crate::workflows::settlement::rules::SettlementConfig,
    /// Who may scrape `/metrics`, and an optional listener of its own.
    pub metrics: MetricsConfig,
    /// The web console: sessions and cookies.
    pub console: crate::interfaces::console::ConsoleConfig,
    /// Webhooks: the delivery worker, timeouts, retries and `allow_private_targets` (development
    /// only: lets webhooks reach loopback and private addresses).
    pub webhooks: crate::workflows::webhooks::WebhooksConfig,
}

impl Config {
    /// Checks the ledger, tier, risk, pass, settlement and job sections.
    pub fn validate_sections(&self) -> anyhow::Result<()> {
        self.points.validate()?;
        self.tiers.validate()?;
        self.risk.validate()?;
        self.pass.validate()?;
        self.settlement.validate()?;
        self.stored_value.validate()?;
        self.membership.validate()?;
        self.plugins.validate()?;
        self.console.validate()?;
        self.webhooks.validate()?;
        self.jobs.validate()
    }

    /// The sections the workflows read.
    pub fn settings(&self) -> crate::workflows::Settings {
        crate::workflows::Settings {
            points: self.points.clone(),
            tiers: self.tiers.clone(),
            perks: self.perks.clone(),
            settlement: self.settlement.clone(),
            stored_value: self.stored_value.clone(),
            membership: self.membership.clone(),
            pass: self.pass.clone(),
            risk: self.risk.clone(),
            jobs: self.jobs.clone(),
            webhooks: self.webhooks.clone(),
        }
    }
}

/// Shortest accepted metrics token: 32 characters of a random token are far beyond guessing,
/// and a shorter one is more likely a placeholder left in a config file.
pub const MIN_METRICS_TOKEN_CHARS: usize = 32;

/// The `[metrics]` section. `/metrics` names routes, plugins and brands, so it is never public:
/// it answers an admin API key or this bearer token (what Prometheus is given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A bearer token that may read `/metrics` (`Authorization: Bearer <token>`), at least
    /// [`MIN_METRICS_TOKEN_CHARS`] characters; empty means only admin API keys may.
    pub bearer_token: String,
    /// A second listener that serves only `/metrics`, for a private interface Prometheus
    /// reaches; there the token is still required if one is set, and nothing else if not.
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// Refuses a token too short to be a secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        let chars = self.bearer_token.chars().count();
        if chars > 0 && chars < MIN_METRICS_TOKEN_CHARS {
            anyhow::bail!(
                "metrics.bearer_token has {chars} characters; use at least \
                 {MIN_METRICS_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 32`)"
            );
        }
        if self
            .bearer_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            anyhow::bail!("metrics.bearer_token may not contain spaces or control characters");
        }
        Ok(())
    }

    /// Whether `authorization` (the header's value) presents the configured token.
    pub fn token_matches(&self, authorization: Option<&str>) -> bool {
        use sha2::{Digest, Sha256};
        if self.bearer_token.is_empty() {
            return false;
        }
        let Some(presented) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        // Digests compared, not the secrets: how long a comparison takes then says nothing
        // about how much of the token was right.
        Sha256::digest(presented.trim().as_bytes()) == Sha256::digest(self.bearer_token.as_bytes())
    }
}

/// Limits on what one request or one process may consume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body; purchases of 500 lines fit in well under 1 MiB.
    pub request_body_bytes: usize,
    /// Largest accepted body for batch imports, which stream many members at once.
    pub import_body_bytes: usize,
    /// A request that takes longer is cut off with a 503 so clients can retry with the same key.
    pub request_timeout_ms: u64,
    /// Database connections per pool; PostgreSQL's default max is 100 shared by all nodes.
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before it is told the server is busy.
    pub db_acquire_timeout_ms: u64,
    /// Cached API key lookups; bounded so a key-guessing client cannot grow memory.
    pub auth_cache_entries: u64,
    /// How long a revoked key may still be served from the cache.
    pub auth_cache_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_body_bytes: 1024 * 1024,
            import_body_bytes: 64 * 1024 * 1024,
            request_timeout_ms: 10_000,
            db_max_connections: 16,
            db_acquire_timeout_ms: 5_000,
            auth_cache_entries: 10_000,
            auth_cache_ttl_ms: 5_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            log_filter: "info,sqlx=warn,wasmtime=warn,cranelift=warn".to_owned(),
            log_json: false,
            limits: Limits::default(),
            points: crate::ledger::PointsConfig::default(),
            tiers: crate::domain::tiers::TiersConfig::default(),
            jobs: crate::workflows::jobs::JobsConfig::default(),
            plugins: crate::plugins::PluginsConfig::default(),
            risk: crate::domain::risk::RiskConfig::default(),
            pass: crate::domain::pass::PassConfig::default(),
            perks: crate::workflows::perks::PerksConfig::default(),
            settlement: crate::workflows::settlement::rules::SettlementConfig::default(),
            stored_value: crate::ledger::stored_value::StoredValueConfig::default(),
            membership: crate::domain::membership::MembershipConfig::default(),
            metrics: MetricsConfig::default(),
            console: crate::interfaces::console::ConsoleConfig::default(),
            webhooks: crate::workflows::webhooks::WebhooksConfig::default(),
        }
    }
}

/// Whether a `COALITION_*` variable (prefix removed) belongs to the configuration: its first
/// segment (before `__`) names a top-level key of [`Config`]. Every other `COALITION_*`
/// variable belongs to another tool — the config file's path, where built plugins are, the
/// tests' PostgreSQL, and the `coalition plugin` client's `COALITION_SERVER` and
/// `COALITION_API_KEY` — and is ignored here. (A deny-list of
/// those broke every CLI command each time a client variable was added.)
fn is_config_env(key: &str) -> bool {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    });
    let first = key.split("__").next().unwrap_or(key);
    keys.iter().any(|k| k.eq_ignore_ascii_case(first))
}

impl Config {
    /// Loads defaults, then `file` (if given), then `COALITION_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("COALITION_")
                .filter(|key| is_config_env(key.as_str()))
                .split("__"),
        );
        let config: Config = figment.extract()?;
        Ok(config)
    }

    /// The database URL, defaulting to a SQLite file under the data directory.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("coalition.db").display())
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::MetricsConfig;

    #[test]
    fn a_short_metrics_token_is_refused() {
        let short = MetricsConfig {
            bearer_token: "secret".to_owned(),
            listen: None,
        };
        assert!(short.validate().is_err());
        assert!(MetricsConfig::default().validate().is_ok());
        let good = MetricsConfig {
            bearer_token: "a".repeat(64),
            listen: None,
        };
        assert!(good.validate().is_ok());
        assert!(good.token_matches(Some(&format!("Bearer {}", "a".repeat(64)))));
        assert!(!good.token_matches(Some(&format!("Bearer {}", "a".repeat(63)))));
        assert!(!good.token_matches(None));
        // No token configured: nothing matches, not even an empty bearer.
        assert!(!MetricsConfig::default().token_matches(Some("Bearer ")));
    }
}

#[cfg(test)]
mod env_tests {
    use super::is_config_env;

    #[test]
    fn variables_of_other_tools_are_not_config_keys() {
        // Regression: `cargo xtask demo` sets COALITION_PLUGINS_DIR, which the loader read as an
        // unknown config key and refused to start.
        assert!(!is_config_env("PLUGINS_DIR"));
        assert!(!is_config_env("plugins_dir"));
        assert!(!is_config_env("CONFIG"));
        assert!(!is_config_env("TEST_PG"));
        // Regression: the documented client variables made every CLI command fail with
        // "unknown field: found 'server'".
        assert!(!is_config_env("SERVER"));
        assert!(!is_config_env("API_KEY"));
        assert!(!is_config_env("IDEMPOTENCY_KEY"));
        assert!(is_config_env("DATA_DIR"));
        assert!(is_config_env("listen"));
        assert!(is_config_env("LIMITS__REQUEST_BODY_BYTES"));
    }
}
