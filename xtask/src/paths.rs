//! Stable locations shared by the build tool, the host's and the runtime's tests.

use std::path::{Path, PathBuf};

/// Environment variable that overrides where built components are written and read.
pub const PLUGINS_DIR_ENV: &str = "COALITION_PLUGINS_DIR";

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The guest workspace: `plugins/`.
pub fn guest_workspace() -> PathBuf {
    repo_root().join("plugins")
}

/// Where built components go: `$COALITION_PLUGINS_DIR`, else `target/plugins/` under the root.
pub fn plugins_out_dir() -> PathBuf {
    match std::env::var_os(PLUGINS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("target").join("plugins"),
    }
}

/// Points the partner kit's pinned tools (componentize-js, componentize-py) at `target/tools/`
/// under the root, beside everything else a clean clone builds, unless `COALITION_TOOLS_DIR`
/// says otherwise (a partner's go to `~/.cache/coalition/tools`).
pub fn use_repo_tools() {
    if std::env::var_os(coalition_kit::tools::TOOLS_DIR_ENV).is_none() {
        std::env::set_var(
            coalition_kit::tools::TOOLS_DIR_ENV,
            repo_root().join("target/tools"),
        );
    }
}
