//! The one wasmtime `Engine`: settings, pooling allocator, epoch ticker, linkers, and the
//! instance-slot semaphore that keeps concurrent stores within the pool.

use std::num::NonZeroUsize;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use crate::bindings;
use crate::error::SetupError;
use crate::limits::{
    MAX_CORE_INSTANCES_PER_CALL, MAX_MEMORIES_PER_CALL, MAX_MEMORY_MIB, MAX_TABLES_PER_CALL,
    MAX_TABLE_ELEMENTS, MIB,
};
use crate::sandbox::CallState;

/// Epoch tick: the resolution of deadline checks (1 ms wakeups cost nothing measurable).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Wasm stack per call: deep recursion traps cleanly long before a host thread's 2 MiB stack.
pub const MAX_WASM_STACK_BYTES: usize = 512 * 1024;
/// Default bytes of each linear memory kept resident between calls: a Rust guest touches about
/// 1.1 MiB; resetting with memset beats madvise and page faults at this size (see BENCHMARKS).
pub const DEFAULT_MEMORY_KEEP_RESIDENT_BYTES: usize = 2 * MIB;
/// Default bytes of each table kept resident between calls: guest tables are a few KiB.
pub const DEFAULT_TABLE_KEEP_RESIDENT_BYTES: usize = 64 * 1024;
/// Backtrace depth at which an out-of-bounds access counts as a stack overflow. Rust and C
/// guests keep address-taken locals on a shadow stack in linear memory, below address 0 of
/// which runaway recursion faults as "out of bounds" before the wasm stack overflows; a fault
/// this deep is that, not a stray pointer (real plugin calls are a few dozen frames deep).
pub const SHADOW_STACK_OVERFLOW_FRAMES: usize = 256;
/// Most instance slots the pool may have: each reserves 4 GiB+ of address space per memory.
pub const MAX_POOL_SLOTS: u32 = 256;

/// Guest code tried to sleep (`wasi:clocks` subscribe); plugins are pure functions.
#[derive(Debug, thiserror::Error)]
#[error("plugins may not sleep or wait (wasi:clocks/monotonic-clock subscribe is refused)")]
pub(crate) struct SleepRefused;

/// Pool and engine sizing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineSizing {
    pub slots: u32,
    pub memory_keep_resident_bytes: usize,
    pub table_keep_resident_bytes: usize,
}

pub(crate) fn build_engine(sizing: EngineSizing) -> Result<Engine, SetupError> {
    let slots = sizing.slots.clamp(1, MAX_POOL_SLOTS);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * MAX_CORE_INSTANCES_PER_CALL)
        .total_memories(slots * MAX_MEMORIES_PER_CALL)
        .total_tables(slots * MAX_TABLES_PER_CALL)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_CALL)
        .max_memories_per_component(MAX_MEMORIES_PER_CALL)
        .max_tables_per_component(MAX_TABLES_PER_CALL)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(MAX_MEMORY_MIB as usize * MIB)
        .linear_memory_keep_resident(sizing.memory_keep_resident_bytes)
        .table_keep_resident(sizing.table_keep_resident_bytes)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .cranelift_opt_level(OptLevel::Speed)
        // Determinism: the same component and input give the same bits on every machine.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        // (Threads, the other source of nondeterminism, are not compiled into this wasmtime.)
        .parallel_compilation(true)
        .wasm_backtrace_details(WasmBacktraceDetails::Disable)
        // Deep enough to tell a shadow-stack overflow from a stray pointer (captured on traps only).
        .wasm_backtrace_max_frames(NonZeroUsize::new(SHADOW_STACK_OVERFLOW_FRAMES))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| SetupError(format!("engine: {e:#}")))
}

/// Ticks the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub(crate) fn spawn_epoch_ticker(engine: &Engine) -> Result<(), SetupError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("coalition-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })
        .map(drop)
        .map_err(|e| SetupError(format!("epoch ticker thread: {e}")))
}

/// Epoch ticks for a deadline: rounded up, plus one because the current tick may end at once.
pub(crate) fn deadline_ticks(deadline_ms: u32) -> u64 {
    let tick_ms = EPOCH_TICK.as_millis().max(1) as u64;
    u64::from(deadline_ms).div_ceil(tick_ms) + 1
}

/// Linkers for components without WASI (only `host`) and with WASI (deterministic p2).
pub(crate) fn build_linkers(
    engine: &Engine,
) -> Result<(Linker<CallState>, Linker<CallState>), SetupError> {
    let setup = |what: &str, e: wasmtime::Error| SetupError(format!("{what}: {e:#}"));
    let mut plain = Linker::new(engine);
    bindings::add_to_linker(&mut plain).map_err(|e| setup("host interface", e))?;

    let mut wasi = Linker::new(engine);
    bindings::add_to_linker(&mut wasi).map_err(|e| setup("host interface", e))?;
    wasmtime_wasi::p2::add_to_linker_sync(&mut wasi).map_err(|e| setup("wasi", e))?;
    // Sleeping would block a host thread for real time, beyond the epoch deadline's reach
    // (the frozen clock does not change how long tokio waits). Refuse it with a trap.
    wasi.allow_shadowing(true);
    let mut clock = wasi
        .instance(WASI_MONOTONIC_CLOCK)
        .map_err(|e| setup("wasi clock", e))?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock
            .func_new(name, |_, _, _, _| Err(wasmtime::Error::new(SleepRefused)))
            .map_err(|e| setup("wasi clock", e))?;
    }
    wasi.allow_shadowing(false);
    Ok((plain, wasi))
}

/// The monotonic-clock interface as wasmtime-wasi 48 defines it (imports of any 0.2.x match).
const WASI_MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// WASI 0.2 interfaces the deterministic WASI linker serves, as `package/interface`.
pub(crate) const WASI_P2_INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// A counting semaphore over pool slots: a call waits for a slot instead of failing to
/// instantiate when the pool is full.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

/// A held instance slot, or a place in a plugin's share of them; released on drop.
pub struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

impl Slots {
    pub fn new(count: u32) -> Slots {
        Slots {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot, waiting at most `wait`; on timeout returns how long it waited.
    pub fn acquire(&self, wait: Duration) -> Result<SlotGuard<'_>, Duration> {
        let started = Instant::now();
        // The counter is a plain integer: a panic elsewhere cannot corrupt it.
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            let waited = started.elapsed();
            let Some(left) = wait.checked_sub(waited).filter(|d| !d.is_zero()) else {
                return Err(waited);
            };
            free = self
                .freed
                .wait_timeout(free, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *free -= 1;
        Ok(SlotGuard(self))
    }
}

/// One plugin's share of the instance slots: at most `limit` of its calls run at once, all
/// versions together. A plugin that spins to its deadline on every call then queues its own
/// excess calls here, in front of its share, instead of in front of the slots every other
/// brand's calls need.
pub(crate) struct Share {
    places: Slots,
    limit: u32,
}

impl Share {
    pub fn new(limit: u32) -> Share {
        let limit = limit.max(1);
        Share {
            places: Slots::new(limit),
            limit,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A place, waiting at most `wait`; on timeout returns how long it waited.
    pub fn acquire(&self, wait: Duration) -> Result<SlotGuard<'_>, Duration> {
        self.places.acquire(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        assert_eq!(deadline_ticks(1), 2);
        assert_eq!(deadline_ticks(20), 21);
    }

    #[test]
    fn a_share_refuses_past_its_limit_and_frees_on_drop() {
        let share = Share::new(2);
        let a = share.acquire(Duration::ZERO).expect("first");
        let _b = share.acquire(Duration::ZERO).expect("second");
        assert!(share.acquire(Duration::ZERO).is_err());
        drop(a);
        assert!(share.acquire(Duration::ZERO).is_ok());
        assert_eq!(Share::new(0).limit(), 1);
    }

    #[test]
    fn slots_wait_then_time_out() {
        let slots = Slots::new(1);
        let held = slots.acquire(Duration::ZERO).expect("one slot free");
        assert!(slots.acquire(Duration::from_millis(5)).is_err());
        drop(held);
        assert!(slots.acquire(Duration::ZERO).is_ok());
    }
}
