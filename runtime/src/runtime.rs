//! The [`Runtime`]: one engine, its caches and breakers; loads plugins into [`LoadedPlugin`]s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::Engine;

use crate::breaker::{Breaker, BreakerConfig, BreakerState, Clock, SystemClock};
use crate::cache::{self, ArtifactSource, ArtifactStore, Compiled, CompiledCache};
use crate::engine::{self, EngineSizing, Share, Slots};
use crate::error::{ErrorKind, LoadError, Operation, PluginError, SetupError};
use crate::limits::{Limits, MAX_COMPONENT_BYTES, MAX_DEADLINE_MS};
use crate::manifest::Manifest;
use crate::metrics;
use crate::model::{Hook, Invocation, PluginInfo};
use crate::plugin::{self, LoadedPlugin};
use crate::receipt::sha256_hex;
use crate::sandbox::CallState;

/// How long a call waits for a free instance slot: twice the longest deadline, so a queue
/// behind slow calls drains before callers give up.
pub const DEFAULT_SLOT_WAIT: Duration = Duration::from_millis(2 * MAX_DEADLINE_MS as u64);

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory for precompiled artifacts; `None` compiles on every process start. It must be
    /// writable only by the host: artifacts there are mapped as trusted machine code.
    pub artifact_dir: Option<PathBuf>,
    /// Calls that may run at once (pool slots). Size to the threads that call plugins, for
    /// example tokio's blocking pool limit; excess calls wait up to `slot_wait`.
    pub max_concurrent_calls: u32,
    /// How long a call waits for a slot before failing with `Overloaded`.
    pub slot_wait: Duration,
    /// Calls of one plugin (all its versions) that may run at once; more are refused at once
    /// with `Saturated`. Below `max_concurrent_calls`, so a plugin spinning to its deadline
    /// on every call leaves slots for the others. `None`: half of `max_concurrent_calls`.
    pub max_concurrent_calls_per_plugin: Option<u32>,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
    /// Clock for the breaker (inject a `ManualClock` in tests).
    pub clock: Arc<dyn Clock>,
    /// Bytes of each linear memory kept resident between calls (pool tuning).
    pub memory_keep_resident_bytes: usize,
    /// Bytes of each table kept resident between calls (pool tuning).
    pub table_keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        RuntimeConfig {
            artifact_dir: None,
            // Calls are CPU-bound and short: twice the cores keeps them busy while some wait.
            max_concurrent_calls: (cores * 2).clamp(4, 64),
            slot_wait: DEFAULT_SLOT_WAIT,
            max_concurrent_calls_per_plugin: None,
            breaker: BreakerConfig::default(),
            clock: Arc::new(SystemClock),
            memory_keep_resident_bytes: engine::DEFAULT_MEMORY_KEEP_RESIDENT_BYTES,
            table_keep_resident_bytes: engine::DEFAULT_TABLE_KEEP_RESIDENT_BYTES,
        }
    }
}

/// The per-plugin bound for `slots` instance slots: `configured`, or half of them (at least
/// one), never more than all of them.
pub fn plugin_share(slots: u32, configured: Option<u32>) -> u32 {
    configured.unwrap_or(slots / 2).clamp(1, slots.max(1))
}

/// Runs plugins. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    plain_linker: Linker<CallState>,
    wasi_linker: Linker<CallState>,
    artifacts: ArtifactStore,
    compiled: CompiledCache,
    breakers: Mutex<HashMap<(String, String), Arc<Breaker>>>,
    shares: Mutex<HashMap<String, Arc<Share>>>,
    pub slots: Slots,
    pub config: RuntimeConfig,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine, linkers and caches, and starts the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, SetupError> {
        let engine = engine::build_engine(EngineSizing {
            slots: config.max_concurrent_calls,
            memory_keep_resident_bytes: config.memory_keep_resident_bytes,
            table_keep_resident_bytes: config.table_keep_resident_bytes,
        })?;
        let (plain_linker, wasi_linker) = engine::build_linkers(&engine)?;
        let artifacts = ArtifactStore::new(config.artifact_dir.clone(), &engine)?;
        engine::spawn_epoch_ticker(&engine)?;
        let slots = config.max_concurrent_calls.clamp(1, engine::MAX_POOL_SLOTS);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                plain_linker,
                wasi_linker,
                artifacts,
                compiled: cache::new_compiled_cache(),
                breakers: Mutex::new(HashMap::new()),
                shares: Mutex::new(HashMap::new()),
                slots: Slots::new(slots),
                config,
            }),
        })
    }

    /// The engine (for tools that measure compilation).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The precompiled artifact file a component would use, when a directory is configured.
    pub fn artifact_path(&self, component_sha256: &str) -> Option<PathBuf> {
        self.inner.artifacts.path_for(component_sha256)
    }

    /// The breaker state of a plugin version (closed if it never ran).
    pub fn breaker_state(&self, plugin: &str, version: &str) -> BreakerState {
        let breakers = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        breakers
            .get(&(plugin.to_string(), version.to_string()))
            .map_or(BreakerState::Closed, |b| b.state())
    }

    /// Loads a plugin: checks the hash, compiles or loads the cached artifact, checks imports
    /// and exports, instantiates once to call `describe`, and cross-checks the manifest.
    ///
    /// `expected_sha256` is the hash the registry recorded at upload (hex); pass `None` only
    /// for bytes that never left the process. Blocking (compiling may take seconds for
    /// JavaScript or Python guests): call from a blocking thread.
    pub fn load(
        &self,
        manifest: &Manifest,
        component: &[u8],
        expected_sha256: Option<&str>,
    ) -> Result<LoadedPlugin, PluginError> {
        let fail = |operation, kind| PluginError {
            plugin: manifest.name.clone(),
            version: manifest.version.clone(),
            operation,
            kind,
            fuel_used: None,
        };
        let load_error = |e: LoadError| fail(Operation::Load, ErrorKind::Load(e));

        if component.len() > MAX_COMPONENT_BYTES {
            return Err(load_error(LoadError::TooLarge {
                bytes: component.len(),
                max: MAX_COMPONENT_BYTES,
            }));
        }
        let sha256 = sha256_hex(component);
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&sha256) {
                return Err(load_error(LoadError::HashMismatch {
                    expected: expected.to_string(),
                    actual: sha256,
                }));
            }
        }

        let (compiled, source) = self
            .compiled(&sha256, component, manifest)
            .map_err(load_error)?;

        let info = self
            .describe(&compiled, manifest)
            .map_err(|kind| fail(Operation::Describe, kind))?;
        check_describe(manifest, &info).map_err(load_error)?;

        let breaker = {
            let mut breakers = self
                .inner
                .breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            breakers
                .entry((manifest.name.clone(), manifest.version.clone()))
                .or_insert_with(|| {
                    Arc::new(Breaker::new(
                        self.inner.config.breaker,
                        self.inner.config.clock.clone(),
                    ))
                })
                .clone()
        };
        let share = {
            let mut shares = self
                .inner
                .shares
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shares
                .entry(manifest.name.clone())
                .or_insert_with(|| {
                    Arc::new(Share::new(plugin_share(
                        self.inner
                            .config
                            .max_concurrent_calls
                            .clamp(1, engine::MAX_POOL_SLOTS),
                        self.inner.config.max_concurrent_calls_per_plugin,
                    )))
                })
                .clone()
        };
        metrics::breaker_state(&manifest.name, &manifest.version, breaker.state());
        tracing::info!(
            plugin = %manifest.name,
            version = %manifest.version,
            component_sha256 = %sha256,
            artifact = source.as_str(),
            wasi = compiled.wasi,
            "plugin loaded"
        );
        Ok(plugin::LoadedPlugin::new(
            self.inner.clone(),
            manifest.clone(),
            info,
            compiled,
            sha256,
            source,
            (breaker, share),
        ))
    }

    fn compiled(
        &self,
        sha256: &str,
        component: &[u8],
        manifest: &Manifest,
    ) -> Result<(Arc<Compiled>, ArtifactSource), LoadError> {
        let inner = &self.inner;
        let mut source = ArtifactSource::Memory;
        let started = Instant::now();
        // `try_get_with` runs the closure once per key even under concurrent loads, so a
        // JavaScript component is never compiled twice at the same time.
        let compiled = inner
            .compiled
            .try_get_with((sha256.to_string(), manifest.wit), || {
                let (component, from) =
                    inner
                        .artifacts
                        .load_or_compile(&inner.engine, sha256, component)?;
                source = from;
                let check = cache::check_component(&inner.engine, &component, manifest.wit)?;
                let linker = if check.wasi {
                    &inner.wasi_linker
                } else {
                    &inner.plain_linker
                };
                let pre = cache::link(linker, &component, manifest.wit)?;
                Ok::<_, LoadError>(Arc::new(Compiled {
                    pre,
                    wasi: check.wasi,
                    surface: check.surface,
                }))
            })
            .map_err(|e: Arc<LoadError>| (*e).clone())?;
        metrics::artifact_load(source.as_str(), started.elapsed().as_secs_f64());
        Ok((compiled, source))
    }

    fn describe(&self, compiled: &Compiled, manifest: &Manifest) -> Result<PluginInfo, ErrorKind> {
        // The manifest's fuel (deterministic) but the platform's longest deadline: describe runs
        // once, at load, and a busy host must not reject a plugin for waiting on a core.
        let limits = Limits {
            deadline_ms: MAX_DEADLINE_MS,
            ..manifest.limits
        };
        let invocation = Invocation {
            now_ms: 0,
            utc_offset_minutes: 0,
            seed: 0,
            brand: String::new(),
            budgets: Vec::new(),
        };
        let _slot = self
            .inner
            .slots
            .acquire(self.inner.config.slot_wait)
            .map_err(|waited| ErrorKind::Overloaded {
                waited_ms: waited.as_millis() as u64,
            })?;
        let mut store = plugin::new_store(
            &self.inner,
            compiled,
            plugin::call_site(&manifest.name, &manifest.version, "describe"),
            Default::default(),
            limits,
            &invocation,
        )?;
        match compiled.pre.describe(&mut store) {
            Ok(info) => Ok(info),
            Err(e) => Err(plugin::classify(&e, store.data(), &limits)),
        }
    }
}

/// `describe` must agree with the manifest on name, version, hooks and brands.
fn check_describe(manifest: &Manifest, info: &PluginInfo) -> Result<(), LoadError> {
    if info.name != manifest.name {
        return Err(LoadError::DescribeMismatch(format!(
            "name `{}`, manifest `{}`",
            info.name, manifest.name
        )));
    }
    if info.version != manifest.version {
        return Err(LoadError::DescribeMismatch(format!(
            "version `{}`, manifest `{}`",
            info.version, manifest.version
        )));
    }
    let mut hooks: Vec<Hook> = info.hooks.clone();
    hooks.sort();
    let listed = hooks.len();
    hooks.dedup();
    if hooks.len() != listed || hooks != manifest.hooks {
        let names = |h: &[Hook]| h.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ");
        return Err(LoadError::DescribeMismatch(format!(
            "hooks [{}], manifest [{}]",
            names(&info.hooks),
            names(&manifest.hooks)
        )));
    }
    let sorted = |brands: &[String]| {
        let mut brands = brands.to_vec();
        brands.sort();
        brands.dedup();
        brands
    };
    let (described, signed) = (sorted(&info.brands), sorted(&manifest.brands));
    if described != signed || info.brands.len() != described.len() {
        return Err(LoadError::DescribeBrandsMismatch {
            describe: described.join(", "),
            manifest: signed.join(", "),
        });
    }
    Ok(())
}
