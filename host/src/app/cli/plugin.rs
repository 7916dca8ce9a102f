//! `coalition plugin …`: what a partner developer and a platform admin run.
//!
//! Offline: `new` (a project in Rust, JavaScript or Python), `build`, `check`, `run`, `test`,
//! `replay`, `keygen` (an ed25519 key pair), `sign` (a signature over a package's content
//! hash), `hash`. Everything else talks HTTP to a server (`--server`, `COALITION_SERVER`) with
//! an API key (`--key`, `COALITION_API_KEY`): a brand key for `register-key`, `upload`,
//! `cosign`, `status`, `package`, `receipts` and `stats`; an admin key for `approve-key`, `approve`, `reject`, `deploy`,
//! `canary`, `promote`, `rollback`, `kill`, `resume`, `dry-run`, `shadow` and `audit`.
//! Responses print as JSON on stdout; a problem prints on stderr and the command fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::plugins::signing;

/// Where and as whom to talk to a server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Server base URL.
    #[arg(
        long,
        env = "COALITION_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// API key (a brand key for partner commands, an admin key for review commands).
    #[arg(long, env = "COALITION_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Idempotency key of this write (default: a fresh one; pass the same to retry safely).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `coalition plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project (manifest, code, fixtures, a test and a README) in Rust,
    /// JavaScript or Python that builds and passes its tests as generated.
    New {
        /// Plugin name, lowercase kebab-case (`books-weekend`).
        name: String,
        /// The language: rust, js or python.
        #[arg(long, default_value = "rust")]
        lang: coalition_kit::Lang,
        /// Hooks to implement, comma-separated: points-bonus, list-perks, redeem-perk,
        /// apply-coupon, settle.
        #[arg(long, value_delimiter = ',', default_value = "points-bonus")]
        hooks: Vec<String>,
        /// The brand the plugin belongs to [default: the name's first word].
        #[arg(long)]
        brand: Option<String>,
        /// Another brand the plugin involves (funds or honours its perks); each must co-sign
        /// the plugin. Repeat or comma-separate for several.
        #[arg(long = "partner", value_delimiter = ',')]
        partners: Vec<String>,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: a local coalition-sdk (checkout or unpacked crate) instead of crates.io.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build the project in a folder to `target/coalition/<name>.wasm`: Rust through cargo
    /// and wit-component, JavaScript through componentize-js (WASI and wasi:http disabled),
    /// Python through componentize-py. The JavaScript and Python tools are pinned and
    /// installed on first use (into `~/.cache/coalition/tools`, or `COALITION_TOOLS_DIR`).
    Build {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Write a new ed25519 key pair: `<out>` (secret, keep it private) and `<out>.pub`.
    Keygen {
        /// Path of the secret key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the content hash of a package.
    Hash {
        #[command(flatten)]
        package: PackageArgs,
    },
    /// Check a package offline as the server's upload does (same runtime and engine settings):
    /// the manifest parses and is within the platform maxima, the component compiles, imports
    /// only what the contract allows, and its `describe()` agrees with the manifest.
    Check {
        #[command(flatten)]
        package: PackageArgs,
    },
    /// Run a built component on one recorded call, locally, in the same sandbox and limits as
    /// the server (same runtime, same engine settings), and print its decision and what it cost
    /// against the manifest's budget and the platform's maxima. Fails (non-zero exit) when the
    /// call fails or the host would refuse the decision. The input is a call as the server
    /// records it: an item of `GET /plugins/{id}/receipts`, its `input` alone
    /// (`{"invocation": …, "config": …, "input": {"points-bonus": …}}`), or a fixture.
    Run {
        #[command(flatten)]
        package: PackageArgs,
        /// The recorded call (JSON).
        #[arg(long)]
        input: PathBuf,
        /// Run at this instant instead of the recorded one: RFC 3339
        /// (`2026-12-05T10:00:00+08:00`) or Unix milliseconds.
        #[arg(long)]
        now: Option<String>,
        /// Use this seed instead of the recorded one.
        #[arg(long)]
        seed: Option<u64>,
        /// A config value (`key=value`) on top of the recorded config; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Run every fixture in a folder: each `*.json` holds a recorded `call` (as `run` reads
    /// it), the `expect`ed decision, and optionally the `now` to run at. Prints each result
    /// with its cost and a summary; fails when any decision differs or any call fails.
    Test {
        #[command(flatten)]
        package: PackageArgs,
        /// The folder of fixtures.
        #[arg(default_value = "fixtures")]
        dir: PathBuf,
    },
    /// Run recorded production calls (the JSON array `GET /plugins/{id}/receipts` answers)
    /// on a new build and print, per call, whether its decision differs from the recorded one.
    Replay {
        #[command(flatten)]
        package: PackageArgs,
        /// The recorded calls.
        file: PathBuf,
    },
    /// Sign a package's content hash; prints the signature (hex).
    Sign {
        /// The secret key file written by `keygen`.
        #[arg(long)]
        secret_key: PathBuf,
        #[command(flatten)]
        package: PackageArgs,
    },
    /// Register a public key for a brand (pending until an admin approves it).
    RegisterKey {
        /// The brand.
        #[arg(long)]
        brand: String,
        /// The public key file written by `keygen` (`<out>.pub`).
        #[arg(long)]
        public_key: PathBuf,
        /// Free text.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a brand's pending signing key (admin).
    ApproveKey {
        /// Signing key id.
        key_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Sign and upload a package (brand).
    Upload {
        #[command(flatten)]
        package: PackageArgs,
        /// The approved signing key's id.
        #[arg(long)]
        key_id: String,
        /// The secret key file it belongs to.
        #[arg(long)]
        secret_key: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Co-sign an uploaded version, checking it is exactly the package you reviewed (brand).
    Cosign {
        /// The version id.
        version_id: String,
        /// The manifest you reviewed.
        #[arg(long)]
        manifest: PathBuf,
        /// The component you reviewed.
        #[arg(long)]
        component: PathBuf,
        /// Your approved signing key's id.
        #[arg(long)]
        key_id: String,
        /// The secret key file it belongs to.
        #[arg(long)]
        secret_key: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A version's recorded calls, newest first, each with its input (members pseudonymous,
    /// as the plugin saw them), decision, fuel and time: save them and `replay` them on a new
    /// build. Brands see their own versions.
    Receipts {
        /// The version id.
        version_id: String,
        /// Only this hook's calls (points-bonus, list-perks, …).
        #[arg(long)]
        hook: Option<String>,
        /// At most this many calls.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A version's health: calls and failures by kind, fuel and latency percentiles, breaker
    /// state. Brands see their own versions.
    Stats {
        /// The version id.
        version_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One version's status, or every version you may see.
    Status {
        /// The version id (omit to list).
        version_id: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Download the exact package a version's signatures cover (to review and co-sign it):
    /// writes `<name>-<version>.toml` and `.wasm` into `--out`, checks they hash to the
    /// version's content hash, and prints its imports, exports and budgets.
    Package {
        /// The version id.
        version_id: String,
        /// Directory to write the manifest and component into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a validated, co-signed version (admin).
    Approve {
        /// The version id.
        version_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Configuration as a JSON object, e.g. '{"double_weekday":"friday"}'. (Not `--config`:
        /// that is the global option naming the server's configuration file.)
        #[arg(long = "plugin-config", value_name = "JSON")]
        plugin_config: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a version under review (admin).
    Reject {
        /// The version id.
        version_id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deploy an approved version (admin).
    Deploy {
        /// The version id.
        version_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve an approved version to a share of members (admin); 0 ends the canary.
    Canary {
        /// The version id.
        version_id: String,
        /// Share of members in percent, e.g. 5 or 0.5 (0 ends the canary).
        #[arg(long, required_unless_present = "basis_points")]
        percent: Option<f64>,
        /// Share of members in basis points, as the API takes it (100 = 1%).
        #[arg(long, conflicts_with = "percent")]
        basis_points: Option<i64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make a plugin's canary its active version (admin).
    Promote {
        /// The plugin name.
        name: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Return a plugin to its previous version (admin).
    Rollback {
        /// The plugin name.
        name: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a plugin serving anyone, at once, on every node (admin).
    Kill {
        /// The plugin name.
        name: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn a plugin's kill switch off (admin).
    Resume {
        /// The plugin name.
        name: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a candidate on recorded inputs (the active version's; for a first version, other
    /// plugins' at its brands) or on your own fixtures, and show each changed decision. Admins,
    /// or the brand that uploaded the version.
    DryRun {
        /// The version id.
        version_id: String,
        /// Recorded inputs per hook.
        #[arg(long, conflicts_with = "fixtures")]
        limit: Option<i64>,
        /// A folder of fixtures (as `test` reads them) to run instead of recorded inputs.
        #[arg(long, value_name = "DIR")]
        fixtures: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a candidate as shadow on live calls, or stop (admin).
    Shadow {
        /// The version id.
        version_id: String,
        /// Stop the shadow instead.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the audit log, or verify its hash chain (admin).
    Audit {
        /// Verify the chain instead of listing entries.
        #[arg(long)]
        verify: bool,
        /// Entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("while reading {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("while reading {}", path.display()))
}

/// Writes a key pair: the secret to `out` (mode 0600 on Unix), the public key to `out.pub`.
/// Returns the public key.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let (secret, public) = signing::generate_keypair();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options
        .open(out)
        .with_context(|| format!("while creating {}", out.display()))?;
    writeln!(file, "{secret}")?;
    let pub_path = public_path(out);
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("while writing {}", pub_path.display()))?;
    Ok(public)
}

fn public_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads a package in a runtime built like the server's; the report on success.
pub fn check_package(manifest: &Path, component: &Path) -> anyhow::Result<Value> {
    let text = read_text(manifest)?;
    let parsed = coalition_runtime::Manifest::parse(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}", manifest.display()))?;
    let bytes = read(component)?;
    let runtime = local_runtime()?;
    let loaded = runtime
        .load(&parsed, &bytes, None)
        .map_err(|err| anyhow::anyhow!("{}: {err}", component.display()))?;
    let info = loaded.info();
    Ok(json!({
        "ok": true,
        "name": info.name,
        "version": info.version,
        "hooks": info.hooks.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "brands": info.brands,
        "uses_wasi": loaded.uses_wasi(),
        "component_bytes": bytes.len(),
        "component_sha256": loaded.component_sha256(),
        "content_sha256": signing::content_hash_hex(text.as_bytes(), &bytes),
    }))
}

/// The runtime the offline commands load components with: the server's default settings,
/// with compiled artifacts kept in the kit's cache (`~/.cache/coalition/artifacts`), so that
/// `build`, `test` and `run` compile a large JavaScript or Python guest once, not each time.
fn local_runtime() -> anyhow::Result<coalition_runtime::Runtime> {
    let config = coalition_runtime::RuntimeConfig {
        artifact_dir: Some(coalition_kit::tools::artifacts_dir()),
        ..coalition_runtime::RuntimeConfig::default()
    };
    coalition_runtime::Runtime::new(config)
        .map_err(|err| anyhow::anyhow!("starting the plugin runtime: {err}"))
}

/// The instant of `--now`: RFC 3339, or Unix milliseconds.
fn parse_now(now: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = now.parse::<i64>() {
        return Ok(ms);
    }
    let at = time::OffsetDateTime::parse(now, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--now {now:?}: expected RFC 3339 (2026-12-05T10:00:00+08:00) or Unix ms")
        })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).context("--now is out of range")
}

/// A built component loaded the way the server loads it (default runtime and engine
/// settings), once for every call `run`, `test` or `replay` makes on it.
pub fn load_built(
    manifest: &Path,
    component: &Path,
) -> anyhow::Result<coalition_runtime::LoadedPlugin> {
    let parsed = coalition_runtime::Manifest::parse(&read_text(manifest)?)
        .map_err(|err| anyhow::anyhow!("{}: {err}", manifest.display()))?;
    let bytes = read(component)?;
    let runtime = local_runtime()?;
    runtime
        .load(&parsed, &bytes, None)
        .map_err(|err| anyhow::anyhow!("{}: {err}", component.display()))
}

/// Runs one recorded call on a built component (`coalition plugin run`): see the command's
/// help. The answer has the decision and a cost report; a failed call is an error naming the
/// runtime's stable failure code, so the exit status says whether the host would accept it.
pub fn run_call(
    plugin: &coalition_runtime::LoadedPlugin,
    recorded: Value,
    now: Option<&str>,
    seed: Option<u64>,
    set: &[String],
) -> anyhow::Result<Value> {
    use coalition_runtime::limits;
    use coalition_runtime::model::CallInput;

    let parsed = plugin.manifest();
    // A receipt as `GET /plugins/{id}/receipts` lists it carries the call under `input`; a
    // fixture carries it under `call`, with the `now` to run at.
    let recorded_now = fixture_now(&recorded);
    let now = now.map(str::to_owned).or(recorded_now);
    let now = now.as_deref();
    let call = if recorded.get("invocation").is_some() {
        recorded
    } else if recorded.get("call").is_some() {
        recorded["call"].clone()
    } else {
        recorded["input"].clone()
    };
    let mut call: CallInput = serde_json::from_value(call)
        .context("the input is neither a recorded call nor a receipt with one")?;
    if let Some(now) = now {
        call.invocation.now_ms = parse_now(now)?;
    }
    if let Some(seed) = seed {
        call.invocation.seed = seed;
    }
    // The recorded config, limited to this manifest's keys, then --set, then its defaults.
    let mut admin: coalition_runtime::model::Config = call
        .config
        .iter()
        .filter(|(key, _)| parsed.config.contains_key(*key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for pair in set {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        admin.insert(key.to_owned(), value.to_owned());
    }
    let config = parsed
        .effective_config(&admin)
        .map_err(|err| anyhow::anyhow!("config: {err}"))?;
    let hook = call.input.hook();
    let budget = parsed
        .hook_limits
        .get(&hook)
        .copied()
        .unwrap_or(parsed.limits);
    let ctx = coalition_runtime::CallContext {
        invocation: call.invocation.clone(),
        config,
    };
    let input_bytes = serde_json::to_vec(&call).map(|v| v.len()).unwrap_or(0);
    let started = std::time::Instant::now();
    let cpu_started = coalition_runtime::thread_cpu_time();
    let outcome = plugin.call(&ctx, call.input.as_args());
    let wall_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    // The deadline is charged in this thread's CPU time: the same clock, around the call.
    let cpu_us = match (cpu_started, coalition_runtime::thread_cpu_time()) {
        (Some(from), Some(to)) => {
            Value::from(u64::try_from(to.saturating_sub(from).as_micros()).unwrap_or(u64::MAX))
        }
        _ => Value::Null,
    };
    let budgets = json!({
        "fuel": budget.fuel,
        "memory_mib": budget.memory_mib,
        "deadline_ms": budget.deadline_ms,
    });
    let maxima = json!({
        "fuel": limits::MAX_FUEL_PER_CALL,
        "memory_mib": limits::MAX_MEMORY_MIB,
        "deadline_ms": limits::MAX_DEADLINE_MS,
    });
    match outcome {
        Ok(decision) => {
            // The decision as the server's receipts show it: the hook's value, untagged.
            let output = match serde_json::to_value(&decision.value)? {
                Value::Object(map) if map.len() == 1 => {
                    map.into_iter().next().map(|(_, v)| v).unwrap_or_default()
                }
                other => other,
            };
            Ok(json!({
                "hook": hook.as_str(),
                "decision": output,
                "cost": {
                    "fuel_used": decision.receipt.fuel_used,
                    "peak_memory_bytes": decision.receipt.peak_memory_bytes,
                    "duration_us": decision.receipt.duration_us,
                    "wall_us": wall_us,
                    "cpu_us": cpu_us,
                    "input_bytes": input_bytes,
                    "output_bytes": serde_json::to_vec(&decision.value).map(|v| v.len()).unwrap_or(0),
                    "budget": budgets,
                    "platform_maxima": maxima,
                },
                "receipt": {
                    "input_sha256": decision.receipt.input_sha256,
                    "output_sha256": decision.receipt.output_sha256,
                    "fuel_used": decision.receipt.fuel_used,
                },
                "logs": decision.logs.iter().map(|l| l.message.clone()).collect::<Vec<_>>(),
            }))
        }
        Err(err) => bail!(
            "{} (code {}; fuel used {}; budget: fuel {}, memory {} MiB, deadline {} ms)",
            err,
            err.kind.code(),
            err.fuel_used
                .map_or_else(|| "none: no guest code ran".to_owned(), |f| f.to_string()),
            budget.fuel,
            budget.memory_mib,
            budget.deadline_ms
        ),
    }
}

/// One line of a call's cost against its budget: fuel, peak memory and time.
fn cost_line(cost: &Value) -> String {
    if cost.is_null() {
        return String::new();
    }
    let budget = &cost["budget"];
    format!(
        "fuel {}/{}  memory {:.1}/{} MiB  cpu {} µs/{} ms  wall {} µs",
        cost["fuel_used"],
        budget["fuel"],
        cost["peak_memory_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        budget["memory_mib"],
        cost["cpu_us"],
        budget["deadline_ms"],
        cost["wall_us"]
    )
}

/// A recorded call read from a file.
fn read_call(path: &Path) -> anyhow::Result<Value> {
    serde_json::from_str(&read_text(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))
}

/// The `*.json` files of a fixtures folder, sorted; none is an error.
fn fixture_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("while reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no *.json fixtures", dir.display());
    }
    Ok(files)
}

/// A fixture's `now`: RFC 3339 text or Unix milliseconds, as `--now` takes it.
fn fixture_now(fixture: &Value) -> Option<String> {
    fixture["now"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| fixture["now"].as_i64().map(|ms| ms.to_string()))
}

/// The fixtures of `dir` as a dry run sends them: name, call (at the fixture's `now`, when it
/// has one) and expected decision.
fn read_fixtures(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let files = fixture_files(dir)?;
    files
        .iter()
        .map(|file| {
            let fixture = read_call(file)?;
            let mut call = fixture["call"].clone();
            if !call.is_object() {
                bail!("{}: no `call` object", file.display());
            }
            let now = fixture_now(&fixture);
            if let Some(now) = now {
                call["invocation"]["now_ms"] = parse_now(&now)?.into();
            }
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            Ok(json!({"name": name, "call": call, "expect": fixture["expect"]}))
        })
        .collect()
}

/// Runs the fixtures of `dir` (`coalition plugin test`): see the command's help.
pub fn test_fixtures(manifest: &Path, component: &Path, dir: &Path) -> anyhow::Result<Value> {
    let files = fixture_files(dir)?;
    let plugin = load_built(manifest, component)?;
    let mut results = Vec::new();
    let mut failed = 0;
    for file in &files {
        let fixture = read_call(file)?;
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_owned();
        let now = fixture_now(&fixture);
        let outcome = run_call(&plugin, fixture["call"].clone(), now.as_deref(), None, &[]);
        let result = match outcome {
            Ok(ran) if ran["decision"] == fixture["expect"] => {
                json!({"fixture": name, "ok": true, "cost": ran["cost"]})
            }
            Ok(ran) => {
                failed += 1;
                json!({"fixture": name, "ok": false, "expected": fixture["expect"],
                    "decision": ran["decision"], "cost": ran["cost"]})
            }
            Err(err) => {
                failed += 1;
                json!({"fixture": name, "ok": false, "error": err.to_string()})
            }
        };
        eprintln!(
            "{} {name:<40} {}",
            if result["ok"] == true { "ok  " } else { "FAIL" },
            cost_line(&result["cost"])
        );
        results.push(result);
    }
    let summary = json!({"fixtures": files.len(), "failed": failed, "results": results});
    if failed > 0 {
        bail!(
            "{failed} of {} fixtures failed:\n{}",
            files.len(),
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    }
    Ok(summary)
}

/// Replays recorded calls on a build (`coalition plugin replay`): see the command's help.
pub fn replay_calls(manifest: &Path, component: &Path, file: &Path) -> anyhow::Result<Value> {
    let recorded = read_call(file)?;
    let calls = recorded
        .as_array()
        .with_context(|| format!("{} is not a JSON array of recorded calls", file.display()))?;
    let plugin = load_built(manifest, component)?;
    let mut items = Vec::new();
    let mut differing = 0;
    for call in calls {
        let item = match run_call(&plugin, call.clone(), None, None, &[]) {
            Ok(ran) => {
                let differs = ran["decision"] != call["output"];
                json!({"receipt_id": call["id"], "hook": ran["hook"], "differs": differs,
                    "recorded": call["output"], "decision": ran["decision"],
                    "recorded_fuel_used": call["fuel_used"], "fuel_used": ran["cost"]["fuel_used"]})
            }
            Err(err) => json!({"receipt_id": call["id"], "differs": true,
                "recorded": call["output"], "error": err.to_string()}),
        };
        if item["differs"] == true {
            differing += 1;
        }
        items.push(item);
    }
    Ok(json!({"calls": calls.len(), "differing": differing, "items": items}))
}

/// Signs the package at `manifest` + `component` with the secret key file.
pub fn sign_files(secret_key: &Path, manifest: &Path, component: &Path) -> anyhow::Result<String> {
    let secret = read_text(secret_key)?;
    signing::sign(secret.trim(), &read(manifest)?, &read(component)?)
        .map_err(|err| anyhow::anyhow!("{}: {err}", secret_key.display()))
}

/// A small HTTP client for the commands.
struct Client {
    http: reqwest::Client,
    args: ServerArgs,
}

impl Client {
    fn new(args: ServerArgs) -> anyhow::Result<Self> {
        if args.key.is_none() {
            bail!("an API key is needed: pass --key or set COALITION_API_KEY");
        }
        Ok(Self {
            http: reqwest::Client::new(),
            args,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.args.server.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.args.key.as_deref().unwrap_or_default());
        let mut idem = None;
        if method != reqwest::Method::GET {
            let key = match &self.args.idempotency_key {
                Some(key) => key.clone(),
                None => {
                    let key = uuid::Uuid::new_v4().to_string();
                    // Printed before the call, so a crash or a timeout still leaves the key
                    // to retry with.
                    eprintln!("idempotency key: {key}");
                    key
                }
            };
            req = req.header("Idempotency-Key", &key);
            idem = Some(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| match &idem {
            Some(key) => format!("while calling {url} (to retry safely: --idempotency-key {key})"),
            None => format!("while calling {url}"),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = value["code"].as_str().unwrap_or("error");
            let detail = value["detail"].as_str().unwrap_or_default();
            match idem {
                Some(key) if status.is_server_error() || status.as_u16() == 409 => {
                    bail!("{status}: {code}: {detail} (to retry safely: --idempotency-key {key})")
                }
                _ => bail!("{status}: {code}: {detail}"),
            }
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Writes a downloaded package as files and checks them against its content hash; answers
/// with the package's facts (without the component bytes) and the file paths.
fn save_package(package: &Value, out: &Path) -> anyhow::Result<Value> {
    let text = |field: &str| -> anyhow::Result<&str> {
        package[field]
            .as_str()
            .with_context(|| format!("the server's package has no {field}"))
    };
    let manifest = text("manifest")?;
    let component = base64::engine::general_purpose::STANDARD
        .decode(text("component_base64")?)
        .context("the server's component is not base64")?;
    let hash = crate::plugins::signing::content_hash_hex(manifest.as_bytes(), &component);
    if let Some(expected) = package["content_sha256"].as_str() {
        if !hash.eq_ignore_ascii_case(expected) {
            bail!("the downloaded package hashes to {hash}, not to the version's {expected}");
        }
    }
    let stem = format!("{}-{}", text("name")?, text("version")?);
    std::fs::create_dir_all(out).with_context(|| format!("while creating {}", out.display()))?;
    let manifest_path = out.join(format!("{stem}.toml"));
    let component_path = out.join(format!("{stem}.wasm"));
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("while writing {}", manifest_path.display()))?;
    std::fs::write(&component_path, &component)
        .with_context(|| format!("while writing {}", component_path.display()))?;
    let mut facts = package.clone();
    if let Some(map) = facts.as_object_mut() {
        map.remove("component_base64");
        map.remove("manifest");
        map.insert("content_sha256_checked".into(), json!(hash));
        map.insert("manifest_file".into(), json!(manifest_path));
        map.insert("component_file".into(), json!(component_path));
    }
    Ok(facts)
}

/// Seconds between looks at a version whose validation goes on in the background.
const VALIDATION_POLL: Duration = Duration::from_secs(1);
/// Looks before giving up: the server's longest validation budget is ten minutes.
const MAX_VALIDATION_POLLS: u32 = 600;

/// The version once the server has validated it: an upload answered `202` (still `uploaded`)
/// is followed until it is `validated`, `awaiting_cosign` or `rejected`.
async fn await_validation(client: &Client, mut version: Value) -> anyhow::Result<Value> {
    let Some(id) = version["id"].as_str().map(str::to_owned) else {
        return Ok(version);
    };
    let mut polls = 0;
    while version["status"] == "uploaded" {
        if polls == MAX_VALIDATION_POLLS {
            bail!(
                "version {id} is still being validated; follow it with \
                 `coalition plugin status {id}`"
            );
        }
        if polls % 10 == 0 {
            eprintln!("validating {id} on the server…");
        }
        polls += 1;
        tokio::time::sleep(VALIDATION_POLL).await;
        version = client.get(&format!("/plugins/{id}")).await?;
    }
    Ok(version)
}

/// Which package a command works on: by default the project in the current folder
/// (`plugin.toml` and what `coalition plugin build` wrote for it).
#[derive(Debug, Clone, Args)]
pub struct PackageArgs {
    /// The manifest.
    #[arg(long, default_value = "plugin.toml")]
    pub manifest: PathBuf,
    /// The component [default: `target/coalition/<name>.wasm` beside the manifest].
    #[arg(long)]
    pub component: Option<PathBuf>,
}

impl PackageArgs {
    /// The manifest and the component paths.
    pub fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        if let Some(component) = &self.component {
            return Ok((self.manifest.clone(), component.clone()));
        }
        let (name, _) = coalition_kit::build::manifest_facts(&self.manifest)?;
        let dir = self
            .manifest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let component = coalition_kit::component_path(dir, &name);
        if !component.exists() {
            bail!(
                "{} does not exist: run `coalition plugin build` first, or pass --component",
                component.display()
            );
        }
        Ok((self.manifest.clone(), component))
    }
}

/// The project `coalition plugin new` writes, with its defaults filled in.
fn scaffold_request(
    name: String,
    lang: coalition_kit::Lang,
    hooks: Vec<String>,
    brand: Option<String>,
    partners: Vec<String>,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> coalition_kit::scaffold::NewProject {
    use coalition_kit::scaffold;
    scaffold::NewProject {
        brand: brand.unwrap_or_else(|| scaffold::default_brand(&name)),
        dir: dir.unwrap_or_else(|| scaffold::default_dir(&name)),
        name,
        lang,
        hooks,
        partners,
        sdk_path: sdk,
    }
}

/// `coalition plugin new`: see the command's help.
fn new_project(project: coalition_kit::scaffold::NewProject) -> anyhow::Result<Value> {
    let files = coalition_kit::scaffold::create(&project)?;
    eprintln!(
        "created {} ({}, brand {}); next: cd {} && coalition plugin build && coalition plugin test",
        project.dir.display(),
        project.lang,
        project.brand,
        project.dir.display()
    );
    Ok(json!({
        "name": project.name,
        "lang": project.lang.as_str(),
        "brand": project.brand,
        "dir": project.dir,
        "files": files,
    }))
}

/// `coalition plugin build`: see the command's help. Also checks the result as the server's
/// upload would, so a build that the server would refuse fails here.
fn build_project(dir: &Path) -> anyhow::Result<Value> {
    let built = coalition_kit::build(dir)?;
    let check = check_package(&built.manifest, &built.component)?;
    Ok(json!({
        "name": built.name,
        "lang": built.lang.as_str(),
        "component": built.component,
        "bytes": built.bytes,
        "check": check,
    }))
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs one `coalition plugin` command and returns what it printed as JSON (for tests).
pub async fn execute(command: PluginCommand) -> anyhow::Result<Value> {
    use PluginCommand as C;
    let value = match command {
        C::Keygen { out } => {
            let public = keygen(&out)?;
            json!({"secret_key_file": out, "public_key_file": public_path(&out), "public_key": public})
        }
        C::New {
            name,
            lang,
            hooks,
            brand,
            partners,
            dir,
            sdk,
        } => new_project(scaffold_request(
            name, lang, hooks, brand, partners, dir, sdk,
        ))?,
        C::Build { dir } => build_project(&dir)?,
        C::Check { package } => {
            let (manifest, component) = package.resolve()?;
            check_package(&manifest, &component)?
        }
        C::Run {
            package,
            input,
            now,
            seed,
            set,
        } => {
            let (manifest, component) = package.resolve()?;
            let plugin = load_built(&manifest, &component)?;
            run_call(&plugin, read_call(&input)?, now.as_deref(), seed, &set)?
        }
        C::Test { package, dir } => {
            let (manifest, component) = package.resolve()?;
            test_fixtures(&manifest, &component, &dir)?
        }
        C::Replay { package, file } => {
            let (manifest, component) = package.resolve()?;
            replay_calls(&manifest, &component, &file)?
        }
        C::Hash { package } => {
            let (manifest, component) = package.resolve()?;
            json!({"content_sha256": signing::content_hash_hex(&read(&manifest)?, &read(&component)?)})
        }
        C::Sign {
            secret_key,
            package,
        } => {
            let (manifest, component) = package.resolve()?;
            json!({"signature": sign_files(&secret_key, &manifest, &component)?})
        }
        C::RegisterKey {
            brand,
            public_key,
            label,
            server,
        } => {
            let public = read_text(&public_key)?;
            Client::new(server)?
                .post(
                    &format!("/brands/{brand}/signing-keys"),
                    json!({"public_key": public.trim(), "label": label}),
                )
                .await?
        }
        C::ApproveKey {
            key_id,
            reason,
            server,
        } => {
            Client::new(server)?
                .post(
                    &format!("/signing-keys/{key_id}/approve"),
                    json!({"reason": reason}),
                )
                .await?
        }
        C::Upload {
            package,
            key_id,
            secret_key,
            server,
        } => {
            let (manifest, component) = package.resolve()?;
            let client = Client::new(server)?;
            let signature = sign_files(&secret_key, &manifest, &component)?;
            let uploaded = client
                .post(
                    "/plugins",
                    json!({
                        "manifest": read_text(&manifest)?,
                        "component_base64":
                            base64::engine::general_purpose::STANDARD.encode(read(&component)?),
                        "key_id": key_id,
                        "signature": signature,
                    }),
                )
                .await?;
            await_validation(&client, uploaded).await?
        }
        C::Cosign {
            version_id,
            manifest,
            component,
            key_id,
            secret_key,
            server,
        } => {
            let client = Client::new(server)?;
            let status = client.get(&format!("/plugins/{version_id}")).await?;
            let local = signing::content_hash_hex(&read(&manifest)?, &read(&component)?);
            if status["content_sha256"].as_str() != Some(local.as_str()) {
                bail!(
                    "the uploaded package's content hash is {}, yours is {local}: not the package \
                     you reviewed",
                    status["content_sha256"]
                );
            }
            let signature = sign_files(&secret_key, &manifest, &component)?;
            client
                .post(
                    &format!("/plugins/{version_id}/cosign"),
                    json!({"key_id": key_id, "signature": signature}),
                )
                .await?
        }
        C::Package {
            version_id,
            out,
            server,
        } => {
            let client = Client::new(server)?;
            let package = client
                .get(&format!("/plugins/{version_id}/package"))
                .await?;
            save_package(&package, &out)?
        }
        C::Receipts {
            version_id,
            hook,
            limit,
            server,
        } => {
            let mut path = format!("/plugins/{version_id}/receipts?limit={limit}");
            if let Some(hook) = hook {
                path.push_str(&format!("&hook={hook}"));
            }
            Client::new(server)?.get(&path).await?
        }
        C::Stats { version_id, server } => {
            Client::new(server)?
                .get(&format!("/plugins/{version_id}/stats"))
                .await?
        }
        C::Status { version_id, server } => {
            let client = Client::new(server)?;
            match version_id {
                Some(id) => client.get(&format!("/plugins/{id}")).await?,
                None => client.get("/plugins").await?,
            }
        }
        C::Approve {
            version_id,
            reason,
            plugin_config,
            server,
        } => {
            let mut body = json!({"reason": reason});
            if let Some(config) = plugin_config {
                let config: Value = serde_json::from_str(&config)
                    .context("--plugin-config must be a JSON object")?;
                body["config"] = config;
            }
            Client::new(server)?
                .post(&format!("/plugins/{version_id}/approve"), body)
                .await?
        }
        C::Reject {
            version_id,
            reason,
            server,
        } => {
            Client::new(server)?
                .post(
                    &format!("/plugins/{version_id}/reject"),
                    json!({"reason": reason}),
                )
                .await?
        }
        C::Deploy {
            version_id,
            reason,
            server,
        } => {
            Client::new(server)?
                .post(
                    &format!("/plugins/{version_id}/deploy"),
                    json!({"reason": reason}),
                )
                .await?
        }
        C::Canary {
            version_id,
            percent,
            basis_points,
            reason,
            server,
        } => {
            let basis_points = match (percent, basis_points) {
                (_, Some(bp)) => bp,
                (Some(p), None) if (0.0..100.0).contains(&p) => (p * 100.0).round() as i64,
                (Some(_), None) => bail!("--percent must be at least 0 and below 100"),
                (None, None) => bail!("give --percent or --basis-points"),
            };
            let client = Client::new(server)?;
            client
                .post(
                    &format!("/plugins/{version_id}/canary"),
                    json!({"basis_points": basis_points, "reason": reason}),
                )
                .await?;
            // The version's status, which shows the canary share now in force.
            client.get(&format!("/plugins/{version_id}")).await?
        }
        C::Promote {
            name,
            reason,
            server,
        } => name_post(server, &name, "promote", &reason).await?,
        C::Rollback {
            name,
            reason,
            server,
        } => name_post(server, &name, "rollback", &reason).await?,
        C::Kill {
            name,
            reason,
            server,
        } => name_post(server, &name, "kill", &reason).await?,
        C::Resume {
            name,
            reason,
            server,
        } => name_post(server, &name, "resume", &reason).await?,
        C::DryRun {
            version_id,
            limit,
            fixtures,
            server,
        } => {
            let body = match fixtures {
                Some(dir) => json!({"fixtures": read_fixtures(&dir)?}),
                None => json!({"limit": limit}),
            };
            Client::new(server)?
                .post(&format!("/plugins/{version_id}/dry-run"), body)
                .await?
        }
        C::Shadow {
            version_id,
            off,
            server,
        } => {
            Client::new(server)?
                .post(
                    &format!("/plugins/{version_id}/shadow"),
                    json!({"enabled": !off}),
                )
                .await?
        }
        C::Audit {
            verify,
            after,
            limit,
            server,
        } => {
            let client = Client::new(server)?;
            if verify {
                let report = client.get("/audit/verify").await?;
                if report["ok"] != Value::Bool(true) {
                    print(&report);
                    bail!("the audit chain does not verify");
                }
                report
            } else {
                client
                    .get(&format!("/audit?after={after}&limit={limit}"))
                    .await?
            }
        }
    };
    Ok(value)
}

async fn name_post(
    server: ServerArgs,
    name: &str,
    action: &str,
    reason: &str,
) -> anyhow::Result<Value> {
    Client::new(server)?
        .post(
            &format!("/plugin-names/{name}/{action}"),
            json!({"reason": reason}),
        )
        .await
}

/// Runs a command and prints its result.
pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    let value = execute(command).await?;
    print(&value);
    Ok(())
}
