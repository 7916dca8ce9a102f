//! Per-call store state: the `host` imports (bounded logging, read-only config), the resource
//! limiter, and the deterministic WASI context for guests built for WASI.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::{
    MAX_CORE_INSTANCES_PER_CALL, MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINES_PER_CALL,
    MAX_MEMORIES_PER_CALL, MAX_TABLES_PER_CALL, MAX_TABLE_ELEMENTS,
};
use crate::model::{Config, Invocation, LogLevel, LogLine};

/// Largest single `get-random-bytes` request a WASI guest may make: hash seeds need 16 bytes.
const MAX_WASI_RANDOM_BYTES: u64 = 64 * 1024;

/// Who is running, for log attribution.
#[derive(Debug, Clone)]
pub(crate) struct CallSite {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    pub operation: &'static str,
}

/// What the `host` interface serves during one call.
pub(crate) struct HostCtx {
    site: CallSite,
    config: Config,
    pub logs: Vec<LogLine>,
    log_bytes: usize,
    pub logs_dropped: u32,
}

impl HostCtx {
    pub fn new(site: CallSite, config: Config) -> Self {
        HostCtx {
            site,
            config,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
        }
    }

    /// Keeps the line if the per-call budget allows; otherwise drops and counts it, so a
    /// chatty plugin cannot flood the host's logs.
    pub fn log(&mut self, level: LogLevel, message: String) {
        let over_lines = self.logs.len() as u32 >= MAX_LOG_LINES_PER_CALL;
        let over_bytes = self.log_bytes.saturating_add(message.len()) > MAX_LOG_BYTES_PER_CALL;
        if over_lines || over_bytes {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        self.log_bytes += message.len();
        let CallSite {
            plugin,
            version,
            operation,
        } = &self.site;
        let (plugin, version) = (&**plugin, &**version);
        match level {
            LogLevel::Debug => {
                tracing::debug!(target: "coalition::plugin", plugin, version, hook = operation, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "coalition::plugin", plugin, version, hook = operation, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "coalition::plugin", plugin, version, hook = operation, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "coalition::plugin", plugin, version, hook = operation, "{message}")
            }
        }
        self.logs.push(LogLine { level, message });
    }

    pub fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

/// Memory, table and instance caps of one store. Unlike `wasmtime::StoreLimits` it remembers
/// that it refused memory, so a refused growth is reported as `MemoryLimit`, not a bare trap.
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    pub memory_denied: bool,
    /// The largest linear memory the call asked for and got, bytes.
    pub peak_memory_bytes: usize,
}

impl CallLimiter {
    pub fn new(memory_bytes: usize) -> Self {
        CallLimiter {
            memory_bytes,
            memory_denied: false,
            peak_memory_bytes: 0,
        }
    }
}

/// The error a refused memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory growth to {desired} bytes refused (cap {cap} bytes)")]
pub(crate) struct MemoryRefused {
    desired: usize,
    cap: usize,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            // Trap rather than return -1: a guest that ignores a failed grow would otherwise
            // fail later with a confusing trap, and the report would not say "memory".
            self.memory_denied = true;
            return Err(wasmtime::Error::new(MemoryRefused {
                desired,
                cap: self.memory_bytes,
            }));
        }
        let granted = maximum.is_none_or(|max| desired <= max);
        if granted {
            self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_denied = true;
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.memory_denied = true;
            return Err(wasmtime::Error::msg(format!(
                "table growth to {desired} elements refused (cap {MAX_TABLE_ELEMENTS})"
            )));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_CALL as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_CALL as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_CALL as usize
    }
}

/// Everything a store of one call holds.
pub(crate) struct CallState {
    pub host: HostCtx,
    pub limiter: CallLimiter,
    /// Present only for components that import WASI.
    pub wasi: Option<WasiCtx>,
    pub table: ResourceTable,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Only components linked with WASI reach this, and their stores are created with a
        // context; the fallback keeps the host alive (and deterministic) if that ever changes.
        let ctx = self.wasi.get_or_insert_with(|| {
            deterministic_wasi(&Invocation {
                now_ms: 0,
                utc_offset_minutes: 0,
                seed: 0,
                brand: String::new(),
                budgets: Vec::new(),
            })
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// A WASI 0.2 context with nothing in it: the invocation's time on both clocks, randomness
/// from the invocation seed, no environment, arguments, files or network, stdio discarded.
pub(crate) fn deterministic_wasi(invocation: &Invocation) -> WasiCtx {
    let now_ms = u64::try_from(invocation.now_ms).unwrap_or(0);
    let seed = invocation.seed;
    let mut builder = WasiCtxBuilder::new();
    builder
        .wall_clock(FrozenWallClock(Duration::from_millis(now_ms)))
        .monotonic_clock(FrozenMonotonicClock(now_ms.saturating_mul(1_000_000)))
        .secure_random(SeededRng::new(seed, 1))
        .insecure_random(SeededRng::new(seed, 2))
        .insecure_random_seed({
            let mut rng = SeededRng::new(seed, 3);
            (u128::from(rng.next()) << 64) | u128::from(rng.next())
        })
        .max_random_size(MAX_WASI_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FrozenMonotonicClock(u64);

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0
    }
}

/// SplitMix64: tiny, fast and fully determined by (seed, stream). Not cryptographic; plugins
/// must not need secrets, and determinism is the point.
pub(crate) struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64, stream: u64) -> Self {
        SeededRng {
            state: seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F),
        }
    }

    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HostCtx {
        HostCtx::new(
            CallSite {
                plugin: "p".into(),
                version: "1.0.0".into(),
                operation: "settle",
            },
            Config::from([("k".to_string(), "v".to_string())]),
        )
    }

    #[test]
    fn log_lines_beyond_the_line_budget_are_dropped_and_counted() {
        let mut host = ctx();
        for i in 0..MAX_LOG_LINES_PER_CALL + 5 {
            host.log(LogLevel::Info, format!("line {i}"));
        }
        assert_eq!(host.logs.len() as u32, MAX_LOG_LINES_PER_CALL);
        assert_eq!(host.logs_dropped, 5);
    }

    #[test]
    fn log_bytes_beyond_the_byte_budget_are_dropped_and_counted() {
        let mut host = ctx();
        host.log(LogLevel::Warn, "x".repeat(MAX_LOG_BYTES_PER_CALL - 10));
        host.log(LogLevel::Warn, "y".repeat(11));
        host.log(LogLevel::Warn, "z".repeat(10));
        assert_eq!(host.logs.len(), 2, "the line that fits exactly is kept");
        assert_eq!(host.logs_dropped, 1);
    }

    #[test]
    fn config_is_read_only_lookup() {
        let host = ctx();
        assert_eq!(host.config("k").as_deref(), Some("v"));
        assert_eq!(host.config("missing"), None);
    }

    #[test]
    fn limiter_refuses_growth_past_the_cap_and_remembers() {
        let mut limiter = CallLimiter::new(2 * 65536);
        assert!(matches!(limiter.memory_growing(0, 65536, None), Ok(true)));
        assert!(!limiter.memory_denied);
        assert!(limiter.memory_growing(65536, 3 * 65536, None).is_err());
        assert!(limiter.memory_denied);
        // The guest's own declared maximum is a normal failed grow, not a cap violation.
        let mut limiter = CallLimiter::new(4 * 65536);
        assert!(matches!(
            limiter.memory_growing(0, 2 * 65536, Some(65536)),
            Ok(false)
        ));
        assert!(!limiter.memory_denied);
    }

    #[test]
    fn limiter_remembers_the_peak_it_granted() {
        let mut limiter = CallLimiter::new(4 * 65536);
        assert!(matches!(limiter.memory_growing(0, 65536, None), Ok(true)));
        assert!(matches!(
            limiter.memory_growing(65536, 3 * 65536, None),
            Ok(true)
        ));
        assert_eq!(limiter.peak_memory_bytes, 3 * 65536);
        // Refused or beyond the guest's own maximum: not held, so not the peak.
        assert!(limiter.memory_growing(3 * 65536, 8 * 65536, None).is_err());
        assert!(matches!(
            limiter.memory_growing(3 * 65536, 4 * 65536, Some(3 * 65536)),
            Ok(false)
        ));
        assert_eq!(limiter.peak_memory_bytes, 3 * 65536);
    }

    #[test]
    fn seeded_rng_follows_the_seed() {
        let take = |seed, stream| {
            let mut rng = SeededRng::new(seed, stream);
            [rng.next(), rng.next()]
        };
        assert_eq!(take(7, 1), take(7, 1));
        assert_ne!(take(7, 1), take(8, 1));
        assert_ne!(take(7, 1), take(7, 2));
    }
}
