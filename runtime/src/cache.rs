//! Compiled components: precompiled artifacts on disk and pre-linked components in memory,
//! both content-addressed by the component's sha256.
//!
//! Disk: `<dir>/<component sha256>-<engine key>.cwasm`, where the engine key hashes
//! `Engine::precompile_compatibility_hash` (wasmtime version, target, settings), so an upgrade
//! or a settings change never loads a stale artifact. Files are written to a temporary name and
//! renamed, so a reader never sees a partial artifact. Memory: a moka cache of pre-linked
//! components (`InstancePre`) by component hash and WIT version.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use crate::bindings::{PluginPre, WitVersion};
use crate::engine::WASI_P2_INTERFACES;
use crate::error::{LoadError, SetupError};
use crate::sandbox::CallState;

/// Pre-linked components kept in memory: every deployed version of every plugin, with room
/// for canaries (a JS component's artifact maps ~40 MB, so this is also a memory bound).
pub const MAX_CACHED_COMPONENTS: u64 = 256;

/// Where a loaded component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactSource {
    /// Already compiled and linked in this process.
    Memory,
    /// A precompiled artifact on disk.
    Disk,
    /// Compiled from the component bytes now.
    Compiled,
}

impl ArtifactSource {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactSource::Memory => "memory",
            ArtifactSource::Disk => "disk",
            ArtifactSource::Compiled => "compiled",
        }
    }
}

/// A component ready to instantiate.
pub(crate) struct Compiled {
    pub pre: PluginPre,
    /// True when it imports WASI and gets the deterministic WASI context.
    pub wasi: bool,
    /// The component's imports and exports by name, as a reviewer reads them.
    pub surface: Surface,
}

/// What a component asks of the host (its imports: the capabilities it may use) and what it
/// offers (its exports), by name, in the component's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surface {
    /// Imported interfaces, e.g. `coalition:plugin/host@0.1.0` or `wasi:random/random@0.2.3`.
    pub imports: Vec<String>,
    /// Exported interfaces, e.g. `coalition:plugin/hooks@0.1.0`.
    pub exports: Vec<String>,
}

/// Feeds a `Hash` into sha256, to turn wasmtime's compatibility hash into a stable file key.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex key of everything that decides whether an artifact fits this engine.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// The on-disk artifact store (absent when no directory is configured).
pub(crate) struct ArtifactStore {
    dir: Option<PathBuf>,
    engine_key: String,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ArtifactStore {
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> Result<ArtifactStore, SetupError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| SetupError(format!("artifact directory {}: {e}", dir.display())))?;
        }
        Ok(ArtifactStore {
            dir,
            engine_key: engine_key(engine),
        })
    }

    /// The artifact file of a component, when a directory is configured.
    pub fn path_for(&self, component_sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{component_sha256}-{}.cwasm", self.engine_key)))
    }

    /// Loads the precompiled artifact, or compiles and stores it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        component_sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, ArtifactSource), LoadError> {
        let Some(path) = self.path_for(component_sha256) else {
            let component = Component::new(engine, bytes).map_err(invalid)?;
            return Ok((component, ArtifactSource::Compiled));
        };
        if path.exists() {
            match deserialize_own_artifact(engine, &path) {
                Ok(component) => return Ok((component, ArtifactSource::Disk)),
                Err(e) => {
                    // Unreadable or from another build: recompile and replace it.
                    tracing::warn!(path = %path.display(), error = %e, "discarding precompiled artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let artifact = engine.precompile_component(bytes).map_err(invalid)?;
        write_atomically(&path, &artifact)
            .map_err(|e| LoadError::Artifact(format!("writing {}: {e}", path.display())))?;
        let component = deserialize_own_artifact(engine, &path)
            .map_err(|e| LoadError::Artifact(format!("loading {}: {e:#}", path.display())))?;
        Ok((component, ArtifactSource::Compiled))
    }
}

fn invalid(e: wasmtime::Error) -> LoadError {
    LoadError::Invalid(format!("{e:#}"))
}

/// Maps an artifact this process (or an earlier run of it) wrote.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. Only this module
    // writes into the artifact directory, by atomic rename, under a name keyed by the
    // component hash and the engine's compatibility hash; wasmtime still checks the header,
    // version and settings and fails cleanly on a mismatch. The directory must not be
    // writable by anyone else (documented in RuntimeConfig::artifact_dir).
    unsafe { Component::deserialize_file(engine, path) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What a component imports, sorted into what the host offers and what it does not.
pub(crate) struct ImportCheck {
    pub wasi: bool,
    pub surface: Surface,
}

/// What the host offers, for error messages.
pub(crate) fn offered(version: WitVersion) -> String {
    format!(
        "{} and, to guests built for WASI, a deterministic WASI 0.2 without files, network, \
         environment or sleeping ({})",
        version.host_imports()[0],
        "wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets"
    )
}

/// Checks the component's imports and exports against what `version` allows, by name, so a
/// forbidden import is named in the error instead of surfacing as a raw link failure.
pub(crate) fn check_component(
    engine: &Engine,
    component: &Component,
    version: WitVersion,
) -> Result<ImportCheck, LoadError> {
    let ty = component.component_type();
    let mut wasi = false;
    let mut forbidden = Vec::new();
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        imports.push(name.to_string());
        if version.host_imports().contains(&name) {
            continue;
        }
        if is_wasi_p2(name) {
            wasi = true;
            continue;
        }
        forbidden.push(name.to_string());
    }
    if !forbidden.is_empty() {
        return Err(LoadError::ForbiddenImports {
            imports: forbidden,
            offered: offered(version),
        });
    }
    let expected = version.hooks_export();
    let mut exports = Vec::new();
    let mut found = false;
    for (name, item) in ty.exports(engine) {
        found |= name == expected && matches!(item.ty, ComponentItem::ComponentInstance(_));
        exports.push(name.to_string());
    }
    if !found {
        return Err(LoadError::MissingExport {
            expected: expected.to_string(),
            found: if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            },
        });
    }
    Ok(ImportCheck {
        wasi,
        surface: Surface { imports, exports },
    })
}

fn is_wasi_p2(import: &str) -> bool {
    let Some((interface, version)) = import.split_once('@') else {
        return false;
    };
    version.starts_with("0.2.") && WASI_P2_INTERFACES.contains(&interface)
}

/// Links a checked component and wraps it for its WIT version.
pub(crate) fn link(
    linker: &Linker<CallState>,
    component: &Component,
    version: WitVersion,
) -> Result<PluginPre, LoadError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
    PluginPre::new(version, pre).map_err(|e| LoadError::Link(format!("{e:#}")))
}

/// In-memory cache of linked components.
pub(crate) type CompiledCache = moka::sync::Cache<(String, WitVersion), Arc<Compiled>>;

pub(crate) fn new_compiled_cache() -> CompiledCache {
    moka::sync::Cache::builder()
        .max_capacity(MAX_CACHED_COMPONENTS)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_import_names() {
        assert!(is_wasi_p2("wasi:clocks/wall-clock@0.2.6"));
        assert!(is_wasi_p2("wasi:io/streams@0.2.12"));
        assert!(!is_wasi_p2("wasi:http/types@0.2.0"), "http is not offered");
        assert!(!is_wasi_p2("wasi:clocks/wall-clock@0.3.0"));
        assert!(!is_wasi_p2("wasi:clocks/wall-clock"));
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.cwasm");
        write_atomically(&path, b"abc").expect("write");
        write_atomically(&path, b"defg").expect("overwrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"defg");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.cwasm")]);
    }
}
