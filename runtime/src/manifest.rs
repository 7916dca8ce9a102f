//! The plugin manifest (`plugin.toml`): parsing and validation against the platform maxima.
//!
//! ```toml
//! name = "coffee-bonus"            # kebab-case, must equal describe().name
//! version = "1.0.0"                # semver, must equal describe().version
//! wit = "coalition:plugin@0.1.0"   # WIT package version targeted
//! description = "…"
//! hooks = ["points-bonus", "settle"]   # must equal describe().hooks
//! brands = ["coffee"]              # brand ids involved (funding and honouring)
//! [limits]                          # per-call defaults, within platform maxima
//! fuel = 2_000_000
//! memory_mib = 16
//! deadline_ms = 20
//! [limits.settle]                   # optional per-hook overrides, any subset of the keys
//! fuel = 500_000
//! [config.double_weekday]           # config keys the admin may set
//! type = "string"                   # string | integer | boolean
//! default = "monday"                # optional, a TOML value of that type
//! description = "…"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bindings::WitVersion;
use crate::limits::{self, Limits};
use crate::model::{Config, Hook};

/// Longest plugin name, brand id or config key, bytes: ids, not prose.
pub const MAX_ID_BYTES: usize = 64;
/// Longest manifest description, bytes: a paragraph an admin reads before approving.
pub const MAX_DESCRIPTION_BYTES: usize = 2000;
/// Most brands one plugin may involve: a plugin is one brand's logic plus its partners.
pub const MAX_BRANDS: usize = 32;

/// A manifest that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML, or a field has the wrong type or is unknown.
    #[error("manifest is not valid: {0}")]
    Syntax(String),
    /// Valid TOML with a value outside what the platform accepts.
    #[error("manifest field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, for example `limits.settle.fuel`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Type of an admin-settable config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    /// Any string up to the value limit.
    String,
    /// A signed 64-bit decimal integer.
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl fmt::Display for ConfigType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigType::String => "string",
            ConfigType::Integer => "integer",
            ConfigType::Boolean => "boolean",
        })
    }
}

impl ConfigType {
    /// Checks that `value` (as the `config` import returns it) is of this type.
    pub fn check(self, value: &str) -> Result<(), String> {
        if value.len() > limits::MAX_CONFIG_VALUE_BYTES {
            return Err(format!(
                "value is {} bytes, more than {}",
                value.len(),
                limits::MAX_CONFIG_VALUE_BYTES
            ));
        }
        match self {
            ConfigType::String => Ok(()),
            ConfigType::Integer => value
                .parse::<i64>()
                .map(drop)
                .map_err(|_| format!("`{value}` is not an integer")),
            ConfigType::Boolean => match value {
                "true" | "false" => Ok(()),
                _ => Err(format!("`{value}` is not `true` or `false`")),
            },
        }
    }
}

/// A config key the admin may set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    /// Value type.
    #[serde(rename = "type")]
    pub ty: ConfigType,
    /// Default, rendered as the `config` import returns it; `None` when unset.
    pub default: Option<String>,
    /// What the key means, for the admin.
    pub description: String,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plugin name, kebab-case.
    pub name: String,
    /// Semver version, exactly as written.
    pub version: String,
    /// The WIT package version the component targets.
    pub wit: WitVersion,
    /// What the plugin does, for the admin.
    pub description: String,
    /// Hooks it implements (no duplicates, WIT order).
    pub hooks: Vec<Hook>,
    /// Brands it involves; perks it proposes must be funded and honoured by these. Empty for a
    /// brand-agnostic plugin (which then cannot propose perks).
    pub brands: Vec<String>,
    /// Per-call budget for every hook without an override.
    pub limits: Limits,
    /// Per-hook budgets, fully resolved (defaults filled in).
    pub hook_limits: BTreeMap<Hook, Limits>,
    /// Config keys the admin may set.
    pub config: BTreeMap<String, ConfigKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    wit: String,
    #[serde(default)]
    description: String,
    hooks: Vec<String>,
    brands: Vec<String>,
    #[serde(default)]
    limits: toml::Table,
    #[serde(default)]
    config: BTreeMap<String, RawConfigKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigKey {
    #[serde(rename = "type")]
    ty: ConfigType,
    default: Option<toml::Value>,
    #[serde(default)]
    description: String,
}

/// True for lowercase kebab-case ids such as `coffee-bonus` (1..=64 bytes).
pub fn is_kebab_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > limits::MAX_MANIFEST_BYTES {
            return Err(ManifestError::Syntax(format!(
                "{} bytes, more than {}",
                text.len(),
                limits::MAX_MANIFEST_BYTES
            )));
        }
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_string()))?;
        Self::validate(raw)
    }

    /// Reads, parses and validates a manifest file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    fn validate(raw: RawManifest) -> Result<Manifest, ManifestError> {
        if !is_kebab_id(&raw.name) {
            return Err(invalid(
                "name",
                format!(
                    "`{}` is not lowercase kebab-case of 1..={MAX_ID_BYTES} bytes",
                    raw.name
                ),
            ));
        }
        semver::Version::parse(&raw.version)
            .map_err(|e| invalid("version", format!("`{}` is not semver: {e}", raw.version)))?;
        let wit = WitVersion::from_package_id(&raw.wit).ok_or_else(|| {
            let supported: Vec<&str> = WitVersion::ALL.iter().map(|v| v.package_id()).collect();
            invalid(
                "wit",
                format!(
                    "`{}` is not a supported WIT package (supported: {})",
                    raw.wit,
                    supported.join(", ")
                ),
            )
        })?;
        if raw.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(invalid(
                "description",
                format!("longer than {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }

        let mut hooks = BTreeSet::new();
        for name in &raw.hooks {
            let hook: Hook = name.parse().map_err(|e: String| invalid("hooks", e))?;
            if !hooks.insert(hook) {
                return Err(invalid("hooks", format!("`{name}` is listed twice")));
            }
        }
        if hooks.is_empty() {
            return Err(invalid("hooks", "lists no hook"));
        }

        // An empty list is allowed: a brand-agnostic plugin (coupon templates for any counter)
        // involves no brand of its own, and therefore may fund and honour no perk.
        if raw.brands.len() > MAX_BRANDS {
            return Err(invalid("brands", format!("more than {MAX_BRANDS} brands")));
        }
        let mut seen = BTreeSet::new();
        for brand in &raw.brands {
            if !is_kebab_id(brand) {
                return Err(invalid(
                    "brands",
                    format!("`{brand}` is not a lowercase kebab-case brand id"),
                ));
            }
            if !seen.insert(brand.as_str()) {
                return Err(invalid("brands", format!("`{brand}` is listed twice")));
            }
        }

        let (limits, hook_limits) = parse_limits(&raw.limits, &hooks)?;

        if raw.config.len() > limits::MAX_CONFIG_KEYS {
            return Err(invalid(
                "config",
                format!("more than {} keys", limits::MAX_CONFIG_KEYS),
            ));
        }
        let mut config = BTreeMap::new();
        for (key, raw_key) in raw.config {
            let field = format!("config.{key}");
            if !is_config_key(&key) {
                return Err(invalid(
                    field,
                    "key must be lowercase letters, digits, `_` or `-`, starting with a letter",
                ));
            }
            if raw_key.description.len() > MAX_DESCRIPTION_BYTES {
                return Err(invalid(
                    format!("{field}.description"),
                    format!("longer than {MAX_DESCRIPTION_BYTES} bytes"),
                ));
            }
            let default = match raw_key.default {
                None => None,
                Some(value) => Some(
                    render_default(raw_key.ty, &value)
                        .map_err(|reason| invalid(format!("{field}.default"), reason))?,
                ),
            };
            config.insert(
                key,
                ConfigKey {
                    ty: raw_key.ty,
                    default,
                    description: raw_key.description,
                },
            );
        }

        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            wit,
            description: raw.description,
            hooks: hooks.into_iter().collect(),
            brands: raw.brands,
            limits,
            hook_limits,
            config,
        })
    }

    /// The budget of one call of `hook`.
    pub fn limits_for(&self, hook: Hook) -> Limits {
        self.hook_limits.get(&hook).copied().unwrap_or(self.limits)
    }

    /// True when the manifest lists `hook`.
    pub fn implements(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// The configuration a call sees: the admin's values over the declared defaults.
    ///
    /// Every admin key must be declared and of its declared type, so a typo in the admin UI
    /// is an error rather than a silently ignored setting.
    pub fn effective_config(&self, admin: &Config) -> Result<Config, String> {
        let mut effective = Config::new();
        for (key, value) in admin {
            let declared = self
                .config
                .get(key)
                .ok_or_else(|| format!("config key `{key}` is not declared in the manifest"))?;
            declared
                .ty
                .check(value)
                .map_err(|reason| format!("config key `{key}`: {reason}"))?;
            effective.insert(key.clone(), value.clone());
        }
        for (key, declared) in &self.config {
            if let Some(default) = &declared.default {
                effective
                    .entry(key.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        Ok(effective)
    }
}

fn render_default(ty: ConfigType, value: &toml::Value) -> Result<String, String> {
    let rendered = match (ty, value) {
        (ConfigType::String, toml::Value::String(s)) => s.clone(),
        (ConfigType::Integer, toml::Value::Integer(i)) => i.to_string(),
        (ConfigType::Boolean, toml::Value::Boolean(b)) => b.to_string(),
        (ty, other) => {
            return Err(format!(
                "a {} is not of the declared type {ty}",
                other.type_str()
            ))
        }
    };
    ty.check(&rendered)?;
    Ok(rendered)
}

const LIMIT_KEYS: [&str; 3] = ["fuel", "memory_mib", "deadline_ms"];

/// Applies the budget keys of `table` over `base`; other keys are left to the caller.
fn apply_limit_keys(
    table: &toml::Table,
    base: Limits,
    prefix: &str,
) -> Result<Limits, ManifestError> {
    let mut limits = base;
    for key in LIMIT_KEYS {
        let Some(value) = table.get(key) else {
            continue;
        };
        let field = format!("{prefix}.{key}");
        let n = value.as_integer().ok_or_else(|| {
            invalid(
                &field,
                format!("must be an integer, not a {}", value.type_str()),
            )
        })?;
        match key {
            "fuel" => {
                limits.fuel = u64::try_from(n).map_err(|_| invalid(&field, "must be positive"))?
            }
            "memory_mib" => {
                limits.memory_mib = u32::try_from(n).map_err(|_| invalid(&field, "out of range"))?
            }
            _ => {
                limits.deadline_ms =
                    u32::try_from(n).map_err(|_| invalid(&field, "out of range"))?
            }
        }
    }
    limits.check().map_err(|reason| invalid(prefix, reason))?;
    Ok(limits)
}

fn parse_limits(
    table: &toml::Table,
    hooks: &BTreeSet<Hook>,
) -> Result<(Limits, BTreeMap<Hook, Limits>), ManifestError> {
    let defaults = apply_limit_keys(table, Limits::default(), "limits")?;
    let mut per_hook = BTreeMap::new();
    for (key, value) in table {
        if LIMIT_KEYS.contains(&key.as_str()) {
            continue;
        }
        let field = format!("limits.{key}");
        let hook: Hook = key.parse().map_err(|e: String| {
            invalid(
                &field,
                format!("{e}; a [limits] key is fuel, memory_mib, deadline_ms or a hook table"),
            )
        })?;
        if !hooks.contains(&hook) {
            return Err(invalid(
                &field,
                "overrides limits of a hook the plugin does not list",
            ));
        }
        let sub = value
            .as_table()
            .ok_or_else(|| invalid(&field, "must be a table such as [limits.settle]"))?;
        if let Some(unknown) = sub.keys().find(|k| !LIMIT_KEYS.contains(&k.as_str())) {
            return Err(invalid(
                format!("{field}.{unknown}"),
                "unknown key (fuel, memory_mib or deadline_ms)",
            ));
        }
        per_hook.insert(hook, apply_limit_keys(sub, defaults, &field)?);
    }
    Ok((defaults, per_hook))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "coffee-bonus"
version = "1.0.0"
wit = "coalition:plugin@0.1.0"
description = "Double points on Mondays."
hooks = ["points-bonus", "settle"]
brands = ["coffee"]
[limits]
fuel = 2_000_000
memory_mib = 16
deadline_ms = 20
[limits.settle]
fuel = 500_000
[config.double_weekday]
type = "string"
default = "monday"
description = "Weekday with double points."
[config.multiplier]
type = "integer"
default = 2
[config.enabled]
type = "boolean"
"#;

    fn with(replace: &str, by: &str) -> Result<Manifest, ManifestError> {
        assert!(EXAMPLE.contains(replace), "test edits a line that exists");
        Manifest::parse(&EXAMPLE.replacen(replace, by, 1))
    }

    fn field_of(result: Result<Manifest, ManifestError>) -> String {
        match result {
            Err(ManifestError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let m = Manifest::parse(EXAMPLE).expect("example parses");
        assert_eq!(m.name, "coffee-bonus");
        assert_eq!(m.wit, WitVersion::V0_1_0);
        assert_eq!(m.hooks, vec![Hook::PointsBonus, Hook::Settle]);
        assert_eq!(m.limits.fuel, 2_000_000);
        let settle = m.limits_for(Hook::Settle);
        assert_eq!(settle.fuel, 500_000);
        assert_eq!(settle.memory_mib, 16, "override inherits the other keys");
        assert_eq!(m.limits_for(Hook::PointsBonus).fuel, 2_000_000);
        assert_eq!(m.config["multiplier"].default.as_deref(), Some("2"));
        assert_eq!(m.config["enabled"].default, None);
    }

    #[test]
    fn a_brand_agnostic_plugin_lists_no_brand() {
        let m = with("[\"coffee\"]", "[]").expect("empty brands are allowed");
        assert!(m.brands.is_empty());
    }

    #[test]
    fn limits_default_when_absent() {
        let m = Manifest::parse(
            "name = \"a\"\nversion = \"0.1.0\"\nwit = \"coalition:plugin@0.1.0\"\nhooks = [\"settle\"]\nbrands = [\"b\"]\n",
        )
        .expect("minimal manifest parses");
        assert_eq!(m.limits, Limits::default());
        assert!(m.config.is_empty());
    }

    #[test]
    fn rejects_bad_identity_fields() {
        assert_eq!(
            field_of(with("\"coffee-bonus\"", "\"Coffee_Bonus\"")),
            "name"
        );
        assert_eq!(field_of(with("\"coffee-bonus\"", "\"\"")), "name");
        assert_eq!(field_of(with("\"1.0.0\"", "\"1.0\"")), "version");
        assert_eq!(field_of(with("plugin@0.1.0", "plugin@9.9.9")), "wit");
        assert_eq!(
            field_of(with("[\"points-bonus\", \"settle\"]", "[]")),
            "hooks"
        );
        assert_eq!(
            field_of(with(
                "[\"points-bonus\", \"settle\"]",
                "[\"settle\", \"settle\"]"
            )),
            "hooks"
        );
        assert_eq!(
            field_of(with("[\"points-bonus\", \"settle\"]", "[\"teleport\"]")),
            "hooks"
        );
        assert_eq!(
            field_of(with("[\"coffee\"]", "[\"coffee\", \"coffee\"]")),
            "brands"
        );
        assert_eq!(
            field_of(with("[\"coffee\"]", "[\"Coffee Shop\"]")),
            "brands"
        );
    }

    #[test]
    fn rejects_limits_beyond_platform_maxima() {
        assert_eq!(
            field_of(with("fuel = 2_000_000", "fuel = 999_000_000_000")),
            "limits"
        );
        assert_eq!(
            field_of(with("memory_mib = 16", "memory_mib = 4096")),
            "limits"
        );
        assert_eq!(
            field_of(with("deadline_ms = 20", "deadline_ms = 0")),
            "limits"
        );
        assert_eq!(
            field_of(with("fuel = 500_000", "fuel = -1")),
            "limits.settle.fuel"
        );
        assert_eq!(
            field_of(with("fuel = 500_000", "fuel = 60_000_000")),
            "limits.settle"
        );
        assert_eq!(
            field_of(with("fuel = 500_000", "fule = 1")),
            "limits.settle.fule"
        );
        assert_eq!(
            field_of(with("[limits.settle]", "[limits.list-perks]")),
            "limits.list-perks"
        );
        assert_eq!(
            field_of(with("[limits.settle]", "[limits.warp]")),
            "limits.warp"
        );
    }

    #[test]
    fn rejects_config_defaults_of_the_wrong_type() {
        assert_eq!(
            field_of(with("default = 2", "default = \"two\"")),
            "config.multiplier.default"
        );
        assert_eq!(
            field_of(with("default = \"monday\"", "default = 1")),
            "config.double_weekday.default"
        );
    }

    #[test]
    fn rejects_unknown_fields_and_bad_toml() {
        assert!(matches!(
            with("description =", "descripton ="),
            Err(ManifestError::Syntax(_))
        ));
        assert!(matches!(
            Manifest::parse("name = "),
            Err(ManifestError::Syntax(_))
        ));
        let huge = "#".repeat(limits::MAX_MANIFEST_BYTES + 1);
        assert!(matches!(
            Manifest::parse(&huge),
            Err(ManifestError::Syntax(_))
        ));
    }

    #[test]
    fn effective_config_applies_defaults_and_checks_types() {
        let m = Manifest::parse(EXAMPLE).expect("example parses");
        let none = m.effective_config(&Config::new()).expect("defaults only");
        assert_eq!(
            none.get("double_weekday").map(String::as_str),
            Some("monday")
        );
        assert_eq!(none.get("enabled"), None, "no default, no value");

        let admin = Config::from([("multiplier".to_string(), "3".to_string())]);
        let eff = m.effective_config(&admin).expect("valid admin value");
        assert_eq!(eff.get("multiplier").map(String::as_str), Some("3"));

        let wrong = Config::from([("multiplier".to_string(), "lots".to_string())]);
        assert!(m.effective_config(&wrong).is_err());
        let undeclared = Config::from([("typo".to_string(), "1".to_string())]);
        assert!(m
            .effective_config(&undeclared)
            .expect_err("undeclared key")
            .contains("typo"));
    }

    #[test]
    fn kebab_ids() {
        for ok in ["a", "coffee", "coffee-bonus", "mall-2"] {
            assert!(is_kebab_id(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "2a", &"a".repeat(65)] {
            assert!(!is_kebab_id(bad), "{bad}");
        }
    }
}
