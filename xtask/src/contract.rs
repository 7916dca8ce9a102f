//! `cargo xtask api-contract` (also the last step of `cargo xtask test`): the served OpenAPI
//! document against the real server, from the outside.
//!
//! 1. installs the pinned Python tools into a virtualenv under `target/contract/venv`
//!    (`xtask/contract/requirements.txt`: schemathesis, openapi-python-client and every
//!    dependency at an exact version; reinstalled only when that file changes);
//! 2. builds the `coalition` binary and starts it with `serve --demo` on a fresh SQLite
//!    database in `target/contract/data`, with the example plugins, on a free local port;
//! 3. runs schemathesis against `/openapi.json` with the demo admin key, a bounded number of
//!    examples per operation, a fixed seed and a fresh `Idempotency-Key` per call
//!    (`xtask/contract/hooks.py`); fails on any 5xx and any check failure (status codes,
//!    content types, headers and bodies conformant to the document, invalid input refused);
//! 4. generates a Python client from the document with openapi-python-client and makes one
//!    call of each tag with it (`xtask/contract/client_calls.py`); fails on any error.
//!
//! It prints `schemathesis: N operations, M calls, X 5xx, Y schema violations`.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::paths;

/// Test cases per operation and phase: enough to reach every status an operation documents,
/// few enough that the whole step takes a few minutes on two cores.
const DEFAULT_MAX_EXAMPLES: u32 = 25;
/// A fixed seed: CI runs the same cases every time (pass `--seed` to explore others).
const DEFAULT_SEED: u64 = 20_260_302;
/// How long the server may take to seed the demo and answer `/readyz`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// One request's limit; the server's own request timeout is 10 s.
const REQUEST_TIMEOUT_S: &str = "30";
/// Every check that compares the server with its document; the stateful checks
/// (`use_after_free`, `ensure_resource_availability`) need links the document does not declare,
/// and `positive_data_acceptance` would call a schema-valid but unknown id a failure, where a
/// 404 is the right answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_headers_conformance,response_schema_conformance,negative_data_rejection,\
    missing_required_header,unsupported_method,allow_header_conformance,ignored_auth";

/// Flags of `cargo xtask api-contract`.
#[derive(clap::Args)]
pub struct Args {
    /// Test cases per operation and phase.
    #[arg(long, default_value_t = DEFAULT_MAX_EXAMPLES)]
    pub max_examples: u32,
    /// Seed of the generated cases.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Only operations whose path matches this regular expression.
    #[arg(long)]
    pub path_regex: Option<String>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            max_examples: DEFAULT_MAX_EXAMPLES,
            seed: DEFAULT_SEED,
            path_regex: None,
        }
    }
}

/// Where this step keeps its files: `target/contract/` under the repository root.
fn work_dir() -> PathBuf {
    paths::repo_root().join("target").join("contract")
}

/// The step's own files: requirements, hooks and the client script.
fn script_dir() -> PathBuf {
    paths::repo_root().join("xtask").join("contract")
}

/// Runs the whole check.
pub fn run(args: &Args) -> Result<()> {
    let work = work_dir();
    fs::create_dir_all(&work).with_context(|| format!("while creating {}", work.display()))?;
    let venv = ensure_venv(&work)?;
    let binary = build_server()?;
    let server = Server::start(&binary, &work)?;
    let outcome = schemathesis(&venv, &server, &work, args).and_then(|summary| {
        println!("{summary}");
        generated_client(&venv, &server, &work)
    });
    server.stop();
    outcome
}

// ---------------------------------------------------------------------------------------------
// The pinned Python tools

/// Creates `target/contract/venv` and installs the pinned requirements into it, unless the
/// requirements it was made from are the current ones. Returns the venv's `bin` directory.
fn ensure_venv(work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let bin = venv.join("bin");
    let requirements = script_dir().join("requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .with_context(|| format!("while reading {}", requirements.display()))?;
    let stamp = venv.join("installed-requirements.txt");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) && bin.join("python").exists() {
        return Ok(bin);
    }
    println!(
        "==> installing the pinned API contract tools into {}",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("while removing {}", venv.display()))?;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run_quiet(
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (Python 3.10 or later with the venv module is needed)",
    )?;
    run_quiet(
        Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--requirement",
            ])
            .arg(&requirements),
        "pip install of the pinned contract tools",
    )?;
    fs::write(&stamp, wanted).with_context(|| format!("while writing {}", stamp.display()))?;
    Ok(bin)
}

fn run_quiet(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("while starting {what}"))?;
    ensure!(status.success(), "failed: {what} ({status})");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server

/// Builds the server binary and returns its path (from cargo's own report, so any target
/// directory works).
pub(crate) fn build_server() -> Result<PathBuf> {
    println!("==> building the coalition server");
    let output = Command::new(crate::test::cargo())
        .current_dir(paths::repo_root())
        .args([
            "build",
            "--workspace",
            "--bin",
            "coalition",
            "--message-format",
            "json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("while starting cargo build")?;
    ensure!(output.status.success(), "cargo build of the server failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "coalition" {
            if let Some(path) = message["executable"].as_str() {
                return Ok(PathBuf::from(path));
            }
        }
    }
    bail!("cargo build did not report the coalition executable")
}

/// A running `coalition serve --demo`, killed when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) base_url: String,
    pub(crate) admin_key: String,
    pub(crate) data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(binary: &Path, work: &Path) -> Result<Server> {
        let data_dir = work.join("data");
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .with_context(|| format!("while removing {}", data_dir.display()))?;
        }
        fs::create_dir_all(&data_dir)?;
        let addr = free_local_addr()?;
        let log = work.join("server.log");
        let log_file =
            fs::File::create(&log).with_context(|| format!("while creating {}", log.display()))?;
        println!("==> starting the server on {addr} (log: {})", log.display());
        let child = Command::new(binary)
            .current_dir(&data_dir)
            .env("COALITION_DATA_DIR", &data_dir)
            .env_remove("COALITION_DATABASE_URL")
            .env_remove("COALITION_CONFIG")
            // A 503 `timeout` is a documented answer, but a 5xx fails this check: on a loaded
            // CI machine a debug build must not hit the 10 s default cut-off.
            .env("COALITION_LIMITS__REQUEST_TIMEOUT_MS", "120000")
            .args(["serve", "--demo", "--listen", &addr.to_string()])
            .arg("--plugins-dir")
            .arg(paths::plugins_out_dir())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("while starting {}", binary.display()))?;
        let mut server = Server {
            child: Some(child),
            base_url: format!("http://{addr}"),
            admin_key: String::new(),
            data_dir,
            log,
        };
        server.wait_ready(addr)?;
        Ok(server)
    }

    /// Waits for `/readyz` and the demo's keys file.
    fn wait_ready(&mut self, addr: SocketAddr) -> Result<()> {
        let started = Instant::now();
        let keys = self.data_dir.join("demo-keys.json");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the server exited with {status} before it was ready:\n{}",
                        self.log_tail()
                    );
                }
            }
            if keys.exists() && http_get_status(addr, "/readyz") == Some(200) {
                let parsed: serde_json::Value = serde_json::from_slice(&fs::read(&keys)?)
                    .with_context(|| format!("while parsing {}", keys.display()))?;
                self.admin_key = parsed["admin"]
                    .as_str()
                    .context("no admin key in demo-keys.json")?
                    .to_owned();
                return Ok(());
            }
            if started.elapsed() > SERVER_START_TIMEOUT {
                bail!(
                    "the server was not ready within {SERVER_START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub(crate) fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local address nobody listens on now (the OS picks the port).
fn free_local_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("while picking a free port")?;
    Ok(listener.local_addr()?)
}

/// The status of a plain HTTP/1.1 GET, or `None` when nothing answers yet.
fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::Write;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// schemathesis and the generated client

fn schemathesis(venv: &Path, server: &Server, work: &Path, args: &Args) -> Result<String> {
    println!(
        "==> schemathesis against {}/openapi.json ({} examples per operation, seed {})",
        server.base_url, args.max_examples, args.seed
    );
    let stats_path = work.join("schemathesis-stats.json");
    let junit = work.join("schemathesis-junit.xml");
    let _ = fs::remove_file(&stats_path);
    let _ = fs::remove_file(&junit);
    let mut command = Command::new(venv.join("schemathesis"));
    command
        .current_dir(work)
        .env("SCHEMATHESIS_HOOKS", script_dir().join("hooks.py"))
        .env("CONTRACT_STATS", &stats_path)
        .env("CONTRACT_BASE_URL", &server.base_url)
        .env("CONTRACT_ADMIN_KEY", &server.admin_key)
        .env("CONTRACT_KEYS_FILE", server.data_dir.join("demo-keys.json"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(script_dir().join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", server.base_url)])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &args.max_examples.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--generation-database", "none"])
        // One worker: the same cases in the same order against the same server state on every
        // run, so CI does not depend on timing.
        .args(["--workers", "1"])
        .args(["--request-timeout", REQUEST_TIMEOUT_S])
        .args(["--suppress-health-check", "all"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .args(["--no-color", "--output-truncate", "true"])
        .stdin(Stdio::null());
    if let Some(regex) = &args.path_regex {
        command.args(["--include-path-regex", regex]);
    }
    let status = command.status().context("while starting schemathesis")?;
    let stats: serde_json::Value = fs::read(&stats_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .context("schemathesis wrote no statistics (did the hooks load?)")?;
    let count = |key: &str| stats[key].as_u64().unwrap_or(0);
    let report = fs::read_to_string(&junit).unwrap_or_default();
    let violations = report
        .lines()
        .filter(|l| l.trim_start().starts_with("- ST") && !l.contains("ST101"))
        .count();
    let summary = format!(
        "schemathesis: {} operations, {} calls ({} 2xx), {} 5xx, {} schema violations",
        count("operations"),
        count("calls"),
        count("success"),
        count("server_errors"),
        violations,
    );
    if !status.success() || count("server_errors") > 0 || violations > 0 {
        println!("{summary}");
        bail!(
            "schemathesis found defects ({status}); the report is {}, the server log {}",
            junit.display(),
            server.log.display()
        );
    }
    ensure!(
        count("calls") > 0 && count("success") > 0,
        "schemathesis made no successful calls"
    );
    Ok(summary)
}

fn generated_client(venv: &Path, server: &Server, work: &Path) -> Result<()> {
    println!("==> generating a Python client from the document and calling each tag with it");
    let client_dir = work.join("client");
    if client_dir.exists() {
        fs::remove_dir_all(&client_dir)?;
    }
    let output = Command::new(venv.join("openapi-python-client"))
        .current_dir(work)
        .args([
            "generate",
            "--url",
            &format!("{}/openapi.json", server.base_url),
        ])
        .arg("--output-path")
        .arg(client_dir.join("coalition_client"))
        .arg("--config")
        .arg(script_dir().join("client-config.yaml"))
        .args(["--meta", "none"])
        .stdin(Stdio::null())
        .output()
        .context("while starting openapi-python-client")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "openapi-python-client failed:\n{text}"
    );
    let warnings = generator_warnings(&text);
    ensure!(
        warnings.is_empty(),
        "openapi-python-client could not read parts of the document:\n{}",
        warnings.join("\n")
    );
    run_quiet(
        Command::new(venv.join("python"))
            .arg(script_dir().join("client_calls.py"))
            .env("CONTRACT_CLIENT_DIR", &client_dir)
            .env("CONTRACT_BASE_URL", &server.base_url)
            .env("CONTRACT_KEYS_FILE", server.data_dir.join("demo-keys.json")),
        "the generated client's calls",
    )
}

/// The generator's warnings about the document, but the one it always gives: it has no text
/// request bodies, so it leaves out `POST /members/import` (a CSV or JSON lines body).
fn generator_warnings(output: &str) -> Vec<String> {
    output
        .split("WARNING ")
        .skip(1)
        .map(|block| {
            block
                .split("If you believe this was a mistake")
                .next()
                .unwrap_or(block)
                .trim()
                .to_owned()
        })
        .filter(|block| {
            let import_body = block.starts_with("parsing POST /members/import ")
                && block
                    .lines()
                    .skip(1)
                    .filter(|l| !l.trim().is_empty())
                    .all(|l| l.trim().starts_with("Unsupported content type "));
            !import_body
        })
        .collect()
}
