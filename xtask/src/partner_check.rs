//! `cargo xtask partner-check`: a partner outside this repository can depend on the SDK by
//! version and build a working plugin.
//!
//! 1. `cargo package -p coalition-sdk` (which also builds the packaged crate on its own, so the
//!    WIT and everything else it needs travel inside it);
//! 2. copies `examples/partner-bookstore` (which depends on `coalition-sdk = "0.1"`) to a fresh
//!    directory under the system's temp dir, outside the repository, and points its
//!    `[patch.crates-io]` at the packaged crate, as a partner would at a registry;
//! 3. runs its native tests and builds it with plain `cargo build --release --target
//!    wasm32-wasip2`, which links a component by itself (no repository tooling involved);
//! 4. checks the component with `coalition plugin check` — the same runtime and checks as the
//!    server's upload;
//! 5. as three new partners would, one per language, in that temporary directory: `coalition
//!    plugin new` (Rust against the packaged SDK, JavaScript, Python), `build`, `test` (the
//!    fixtures, costs printed), `keygen` for the brand and its partner brand, `register-key`,
//!    then against a real server (`coalition serve --demo` on a fresh SQLite file): the admin
//!    approves the keys, the brand `upload`s (signed), the partner brand `cosign`s after
//!    checking the hash, the admin `dry-run`s on recorded inputs and the brand on its own
//!    fixtures, the admin `approve`s and `deploy`s, and a purchase at the
//!    brand's counter shows the plugin's bonus. Every `coalition` command reads the server and
//!    key from `COALITION_SERVER` and `COALITION_API_KEY`, as the partner guide says.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::{paths, test::cargo};

/// Runs the check; prints one summary line.
pub fn run() -> Result<()> {
    let root = paths::repo_root();
    let version = sdk_version(&root)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run_step(
        "cargo package -p coalition-sdk",
        Command::new(cargo()).current_dir(&root).args([
            "package",
            "-p",
            "coalition-sdk",
            "--allow-dirty",
        ]),
    )?;
    let packaged = target_dir
        .join("package")
        .join(format!("coalition-sdk-{version}"));
    ensure!(
        packaged.join("Cargo.toml").exists(),
        "no unpacked crate at {}",
        packaged.display()
    );

    let outside = std::env::temp_dir().join(format!("coalition-partner-{}", std::process::id()));
    if outside.exists() {
        fs::remove_dir_all(&outside)?;
    }
    copy_dir(&root.join("examples/partner-bookstore"), &outside)?;
    let manifest_path = outside.join("Cargo.toml");
    let mut cargo_toml = fs::read_to_string(&manifest_path)?;
    cargo_toml.push_str(&format!(
        "\n# Added by the check: the SDK as packaged for crates.io.\n[patch.crates-io]\n\
         coalition-sdk = {{ path = {:?} }}\n",
        packaged.display().to_string()
    ));
    fs::write(&manifest_path, cargo_toml)?;

    let result = build_and_check(&root, &outside).and_then(|(bytes, report)| {
        println!(
            "partner-check: coalition-sdk {version} packaged; bookstore-weekend built outside \
             the repository against it ({bytes} bytes), native tests passed, `coalition plugin \
             check`: {report}"
        );
        three_languages(&outside.join("partners"), &packaged)
    });
    let _ = fs::remove_dir_all(&outside);
    result
}

/// One new partner of the three-language walk.
struct NewPartner {
    lang: &'static str,
    name: &'static str,
    /// The plugin's brand: it uploads and its counter records the purchase.
    brand: &'static str,
    /// The other brand the manifest names: it must co-sign.
    partner: &'static str,
}

/// The three partners, each naming another demo brand (which must co-sign). Their brands are
/// ones where the demo's own plugins have recorded `points-bonus` calls, which a first
/// version's dry run replays.
const NEW_PARTNERS: [NewPartner; 3] = [
    NewPartner {
        lang: "rust",
        name: "coffee-double",
        brand: "coffee",
        partner: "mall",
    },
    NewPartner {
        lang: "js",
        name: "restaurant-double",
        brand: "restaurant",
        partner: "cinema",
    },
    NewPartner {
        lang: "python",
        name: "coffee-treat",
        brand: "coffee",
        partner: "parking",
    },
];

/// The hooks each new partner implements: all of them.
const ALL_HOOKS: &str = "points-bonus,list-perks,redeem-perk,apply-coupon,settle";

/// Step 5 of the module doc.
fn three_languages(outside: &Path, packaged_sdk: &Path) -> Result<()> {
    fs::create_dir_all(outside)?;
    let binary = crate::contract::build_server()?;
    paths::use_repo_tools();
    let server = crate::contract::Server::start(&binary, &outside.join("server"))?;
    let keys: Value = serde_json::from_slice(&fs::read(server.data_dir.join("demo-keys.json"))?)?;
    let result = (|| {
        let cli = Cli {
            binary: &binary,
            server: &server.base_url,
        };
        let mut signing_keys = BTreeMap::new();
        for partner in &NEW_PARTNERS {
            walk(
                &cli,
                outside,
                packaged_sdk,
                partner,
                &keys,
                &mut signing_keys,
            )
            .with_context(|| format!("the {} partner ({})", partner.lang, partner.name))?;
        }
        Ok(())
    })();
    if result.is_err() {
        eprintln!("server log (tail):\n{}", server.log_tail());
    }
    server.stop();
    result
}

/// The `coalition` binary, talking to one server.
struct Cli<'a> {
    binary: &'a Path,
    server: &'a str,
}

impl Cli<'_> {
    /// Runs `coalition <args>` in `dir` as `key` (through `COALITION_API_KEY`), and returns
    /// its JSON answer; fails with its output when it fails.
    fn run(&self, dir: &Path, key: &str, args: &[&str]) -> Result<Value> {
        let output = Command::new(self.binary)
            .current_dir(dir)
            .env("COALITION_SERVER", self.server)
            .env("COALITION_API_KEY", key)
            .env_remove("COALITION_CONFIG")
            .args(args)
            .output()
            .with_context(|| format!("while starting coalition {}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "`coalition {}` failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout)
            .with_context(|| format!("`coalition {}` printed no JSON: {stdout}", args.join(" ")))
    }
}

/// An approved signing key of `brand`: `(key id, secret key file)`, made once per brand.
fn signing_key(
    cli: &Cli,
    outside: &Path,
    keys: &Value,
    brand: &str,
    made: &mut BTreeMap<String, (String, PathBuf)>,
) -> Result<(String, PathBuf)> {
    if let Some(found) = made.get(brand) {
        return Ok(found.clone());
    }
    let secret = outside.join(format!("{brand}.key"));
    let secret_arg = secret.display().to_string();
    cli.run(outside, "", &["plugin", "keygen", "--out", &secret_arg])?;
    let public = format!("{secret_arg}.pub");
    let registered = cli.run(
        outside,
        brand_key(keys, brand, "brand")?,
        &[
            "plugin",
            "register-key",
            "--brand",
            brand,
            "--public-key",
            &public,
        ],
    )?;
    let key_id = registered["id"]
        .as_str()
        .with_context(|| format!("register-key answered {registered}"))?
        .to_owned();
    cli.run(
        outside,
        admin_key(keys)?,
        &[
            "plugin",
            "approve-key",
            &key_id,
            "--reason",
            "partner check",
        ],
    )?;
    made.insert(brand.to_owned(), (key_id.clone(), secret.clone()));
    Ok((key_id, secret))
}

fn admin_key(keys: &Value) -> Result<&str> {
    keys["admin"].as_str().context("no admin key")
}

fn brand_key<'k>(keys: &'k Value, brand: &str, which: &str) -> Result<&'k str> {
    keys["brands"][brand][which]
        .as_str()
        .with_context(|| format!("no {which} key for {brand}"))
}

/// One partner from an empty folder to a deployed plugin whose bonus a purchase shows.
fn walk(
    cli: &Cli,
    outside: &Path,
    packaged_sdk: &Path,
    p: &NewPartner,
    keys: &Value,
    signing_keys: &mut BTreeMap<String, (String, PathBuf)>,
) -> Result<()> {
    println!("==> partner {} in {}: {}", p.brand, p.lang, p.name);
    let dir = outside.join(p.name);
    let dir_arg = dir.display().to_string();
    let sdk_arg = packaged_sdk.display().to_string();
    // Every hook, so that every template of every language is built, tested and dry-run.
    let mut new = vec![
        "plugin",
        "new",
        p.name,
        "--lang",
        p.lang,
        "--brand",
        p.brand,
        "--partner",
        p.partner,
        "--hooks",
        ALL_HOOKS,
        "--dir",
        &dir_arg,
    ];
    if p.lang == "rust" {
        new.extend(["--sdk", &sdk_arg]);
    }
    cli.run(outside, "", &new)?;
    let built = cli.run(&dir, "", &["plugin", "build"])?;
    println!(
        "    built {} bytes: {}",
        built["bytes"],
        built["component"].as_str().unwrap_or("?")
    );
    let tested = cli.run(&dir, "", &["plugin", "test"])?;
    for result in tested["results"].as_array().into_iter().flatten() {
        let cost = &result["cost"];
        println!(
            "    fixture {}: ok, fuel {} of {}, peak memory {} bytes, {} µs in the guest",
            result["fixture"].as_str().unwrap_or("?"),
            cost["fuel_used"],
            cost["budget"]["fuel"],
            cost["peak_memory_bytes"],
            cost["duration_us"]
        );
    }

    let (key_id, secret) = signing_key(cli, outside, keys, p.brand, signing_keys)?;
    let (partner_key_id, partner_secret) =
        signing_key(cli, outside, keys, p.partner, signing_keys)?;
    let secret_arg = secret.display().to_string();
    let uploaded = cli.run(
        &dir,
        brand_key(keys, p.brand, "brand")?,
        &[
            "plugin",
            "upload",
            "--key-id",
            &key_id,
            "--secret-key",
            &secret_arg,
        ],
    )?;
    let version = uploaded["id"]
        .as_str()
        .with_context(|| format!("upload answered {uploaded}"))?
        .to_owned();
    ensure!(
        uploaded["status"] == "awaiting_cosign",
        "after upload: {uploaded}"
    );
    let component = coalition_kit::component_path(&dir, p.name)
        .display()
        .to_string();
    let manifest = dir.join("plugin.toml").display().to_string();
    let partner_secret_arg = partner_secret.display().to_string();
    let cosigned = cli.run(
        &dir,
        brand_key(keys, p.partner, "brand")?,
        &[
            "plugin",
            "cosign",
            &version,
            "--manifest",
            &manifest,
            "--component",
            &component,
            "--key-id",
            &partner_key_id,
            "--secret-key",
            &partner_secret_arg,
        ],
    )?;
    ensure!(
        cosigned["status"] == "validated",
        "after co-signing: {cosigned}"
    );
    let admin = admin_key(keys)?;
    let dry_run = cli.run(&dir, admin, &["plugin", "dry-run", &version])?;
    println!(
        "    dry run ({}): {} recorded inputs, {} decisions differ",
        dry_run["baseline"], dry_run["inputs"], dry_run["differing"]
    );
    ensure!(
        dry_run["inputs"].as_u64().unwrap_or(0) > 0
            && dry_run["items"][0]["candidate_error"].is_null(),
        "the dry run replayed nothing, or failed: {dry_run}"
    );
    // The brand's own dry run, on its fixtures: the same decisions as `plugin test` expects.
    let own = cli.run(
        &dir,
        brand_key(keys, p.brand, "brand")?,
        &["plugin", "dry-run", &version, "--fixtures", "fixtures"],
    )?;
    println!(
        "    dry run on its own fixtures ({}): {} fixtures, {} decisions differ",
        own["baseline"], own["inputs"], own["differing"]
    );
    ensure!(
        own["baseline"] == "fixtures" && own["inputs"].as_u64() > Some(0) && own["differing"] == 0,
        "the fixtures dry run disagrees with the fixtures: {own}"
    );
    cli.run(
        &dir,
        admin,
        &["plugin", "approve", &version, "--reason", "partner check"],
    )?;
    let deployed = cli.run(
        &dir,
        admin,
        &["plugin", "deploy", &version, "--reason", "partner check"],
    )?;
    println!("    deployed: {}", compact(&deployed));

    let member = keys["members"][0]["member_id"]
        .as_str()
        .context("no demo member")?;
    let order = format!("partner-check-{}", p.name);
    let purchase: Value = ureq::post(&format!("{}/brands/{}/purchases", cli.server, p.brand))
        .set(
            "Authorization",
            &format!("Bearer {}", brand_key(keys, p.brand, "counter")?),
        )
        .set("Idempotency-Key", &order)
        .send_json(json!({
            "order_id": order,
            "member_id": member,
            "lines": [{"line_id": "1", "sku": "sku-1", "category": "general", "quantity": 2,
                       "unit_price_cents": 2_500}],
        }))
        .context("the purchase at the counter")?
        .into_json()?;
    let bonus = purchase["bonuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| {
            b["code"] == "double-points" && b["source"].as_str().is_some_and(|s| s.contains(p.name))
        })
        .with_context(|| format!("no double-points bonus in {purchase}"))?;
    ensure!(
        bonus["points"] == purchase["base_points"],
        "the bonus is not the base points: {purchase}"
    );
    println!(
        "    a purchase at {}: {} base points + {} from {}",
        p.brand, purchase["base_points"], bonus["points"], bonus["source"]
    );
    Ok(())
}

/// A JSON value on one line, cut to 300 characters.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn build_and_check(root: &Path, outside: &Path) -> Result<(usize, String)> {
    let target = outside.join("target");
    run_step(
        "native tests of the partner plugin",
        Command::new(cargo())
            .current_dir(outside)
            .env_remove("CARGO_TARGET_DIR")
            .args(["test", "--quiet"]),
    )?;
    run_step(
        "wasm build of the partner plugin",
        Command::new(cargo())
            .current_dir(outside)
            .env_remove("CARGO_TARGET_DIR")
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]),
    )?;
    let component_path = target.join("wasm32-wasip2/release/bookstore_weekend.wasm");
    let component = fs::read(&component_path).context("the built component")?;
    let output = Command::new(cargo())
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "coalition",
            "--",
            "plugin",
            "check",
            "--manifest",
        ])
        .arg(outside.join("plugin.toml"))
        .arg("--component")
        .arg(&component_path)
        .output()
        .context("running coalition plugin check")?;
    ensure!(
        output.status.success(),
        "coalition plugin check failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    ensure!(
        report.contains("\"ok\": true") && report.contains("\"name\": \"bookstore-weekend\""),
        "unexpected report: {report}"
    );
    Ok((component.len(), "ok".to_owned()))
}

fn sdk_version(root: &Path) -> Result<String> {
    let text = fs::read_to_string(root.join("sdk/Cargo.toml"))?;
    let value: toml::Value = toml::from_str(&text)?;
    value["package"]["version"]
        .as_str()
        .map(str::to_owned)
        .context("sdk/Cargo.toml has no package.version")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &dest)?;
            }
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

fn run_step(title: &str, command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("while starting: {title}"))?;
    ensure!(status.success(), "failed: {title} ({status})");
    Ok(())
}
