//! `cargo xtask setup-browser` (also a step of `cargo xtask test`): the headless browser of the
//! console's browser tests.
//!
//! The web console is tested in a real browser: `host/tests/console` starts
//! `/usr/bin/chromedriver` and drives `/usr/bin/chromium` through it. Both come from the
//! Debian packages `chromium` and `chromium-driver`, installed at one pinned version so every
//! machine renders and scripts the console with the same engine, and chromedriver always
//! matches the browser it drives.
//!
//! If both packages are already at the pin, nothing happens; otherwise they are installed with
//! apt-get (as root, or through `sudo -n`).

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The pinned version of `chromium` and `chromium-driver`: the bookworm-security version.
/// Bump it when the mirror moves on (the security archive keeps only the newest build).
pub const CHROMIUM_VERSION: &str = "156.0.8078.129-1~deb12u1";

/// The Debian packages of the browser and of its WebDriver server.
const PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// Makes sure `chromium` and `chromium-driver` are installed at [`CHROMIUM_VERSION`].
pub fn ensure_chromium() -> Result<()> {
    if installed_at_pin() {
        println!("chromium and chromium-driver {CHROMIUM_VERSION} already installed");
        return Ok(());
    }
    let privilege = privilege()?;
    // First without refreshing the package lists (fast when they are recent), then once more
    // after `apt-get update` if the pinned version was not known yet.
    if !apt_get(privilege, &install_args())? {
        println!("apt-get install failed; refreshing the package lists and retrying");
        if !apt_get(privilege, &["update"])? {
            bail!(
                "apt-get update failed while installing chromium and chromium-driver \
                 {CHROMIUM_VERSION}"
            );
        }
        if !apt_get(privilege, &install_args())? {
            bail!(
                "could not install chromium and chromium-driver at the pinned version \
                 {CHROMIUM_VERSION} (xtask/src/browser.rs): is it still on the Debian mirror \
                 (`apt-cache policy chromium`)? If the mirror moved on, bump CHROMIUM_VERSION"
            );
        }
    }
    if !installed_at_pin() {
        bail!("apt-get succeeded but chromium and chromium-driver are not at {CHROMIUM_VERSION}");
    }
    println!("chromium and chromium-driver {CHROMIUM_VERSION} installed");
    Ok(())
}

/// Whether `dpkg-query` reports both packages installed at the pin.
fn installed_at_pin() -> bool {
    PACKAGES.iter().all(|package| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", package])
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).trim() == CHROMIUM_VERSION
            })
    })
}

/// `install -y --no-install-recommends chromium=<pin> chromium-driver=<pin>`.
fn install_args() -> Vec<String> {
    let mut args = vec![
        "install".to_owned(),
        "-y".to_owned(),
        "--no-install-recommends".to_owned(),
    ];
    args.extend(PACKAGES.iter().map(|p| format!("{p}={CHROMIUM_VERSION}")));
    args
}

/// How apt-get gets the rights it needs.
#[derive(Clone, Copy)]
enum Privilege {
    /// We are root.
    Root,
    /// Through `sudo -n` (never prompting for a password).
    Sudo,
}

/// Root, else `sudo -n` if it works without a password, else a clear error.
fn privilege() -> Result<Privilege> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("while running `id -u`")?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Ok(Privilege::Root);
    }
    let sudo_works = Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if sudo_works {
        return Ok(Privilege::Sudo);
    }
    bail!(
        "installing chromium and chromium-driver {CHROMIUM_VERSION} needs root: run as root, \
         allow `sudo -n`, or install them yourself: apt-get install chromium={CHROMIUM_VERSION} \
         chromium-driver={CHROMIUM_VERSION}"
    )
}

/// Runs `apt-get <args>` non-interactively; whether it succeeded.
fn apt_get<S: AsRef<std::ffi::OsStr>>(privilege: Privilege, args: &[S]) -> Result<bool> {
    let mut command = match privilege {
        Privilege::Root => Command::new("apt-get"),
        Privilege::Sudo => {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            sudo
        }
    };
    command.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    let status = command.status().context("while starting apt-get")?;
    Ok(status.success())
}
