//! The guest's global allocator (`wasm32-unknown-unknown` only): a bump pointer over the free
//! tail of the *initial* linear memory, then std's allocator (dlmalloc).
//!
//! Not on WASI targets (`wasm32-wasip1`/`wasip2`): there std's allocator is wasi-libc's malloc,
//! which itself claims the bytes between `__heap_base` and the end of the initial memory on its
//! first call. Serving them from here as well made two allocators hand out the same bytes: a
//! guest trapped on its first `println!` (stdout's buffer) or had its WASI handle table
//! overwritten under a stdout flood.
//!
//! The host runs every call in a fresh instance. std's dlmalloc owns no memory at start, so its
//! first allocation calls `memory.grow` (17 → 18 pages for a typical plugin), and the host's
//! pooling allocator has to shrink the slot back before the next instance: two `mprotect`
//! syscalls per call. The bytes between `__heap_base` (end of static data, above the stack) and
//! the end of the initial memory are already mapped but unused, about 58 KiB for the example
//! plugins, and are enough for a typical hook. Serving allocations from them first means most
//! calls never grow memory.
//!
//! Bump memory is never reused: freeing it is a no-op (the instance lives for one call), and
//! growing the most recent bump allocation extends it in place. When the region is exhausted,
//! every allocation goes to dlmalloc, which grows memory as usual, so the host's memory cap
//! behaves exactly as before.
//!
//! The guest is single-threaded (`wasm32-unknown-unknown` without the `atomics` feature), but the
//! pointer is still moved with compare-exchange so the allocator is sound if that ever changes.

// `unsafe` is denied crate-wide; a global allocator cannot be written without it
// (`GlobalAlloc` is an unsafe trait, and the heap base is a linker symbol read through an
// extern static). Every block below states its invariant.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::alloc::System;

/// Bytes in a wasm page.
const PAGE: usize = 65_536;

extern "C" {
    /// Set by the linker (wasm-ld): the first byte after static data and the stack.
    static __heap_base: u8;
}

/// Next free byte of the bump region; 0 until the first allocation sets up the region.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// One past the last byte of the bump region: the end of the initial memory.
static END: AtomicUsize = AtomicUsize::new(0);
/// Start of the bump region (`__heap_base`), kept to tell bump pointers from dlmalloc ones.
static START: AtomicUsize = AtomicUsize::new(0);

/// Serves allocations from the initial memory's free tail, then from std's allocator.
pub struct InitialMemoryFirst;

#[global_allocator]
static ALLOCATOR: InitialMemoryFirst = InitialMemoryFirst;

/// Sets up the region on first use: before anything (dlmalloc) can grow memory, the current
/// memory size is the initial one.
#[inline]
fn init() {
    if START.load(Ordering::Relaxed) == 0 {
        // Only the address of the linker symbol is taken; it is never read.
        let base = core::ptr::addr_of!(__heap_base) as usize;
        let end = core::arch::wasm32::memory_size(0) * PAGE;
        END.store(end.max(base), Ordering::Relaxed);
        NEXT.store(base, Ordering::Relaxed);
        START.store(base, Ordering::Relaxed);
    }
}

/// Whether `ptr` was handed out by the bump region.
#[inline]
fn in_bump(ptr: *mut u8) -> bool {
    let addr = ptr as usize;
    addr >= START.load(Ordering::Relaxed) && addr < END.load(Ordering::Relaxed)
}

/// Reserves `layout` in the bump region, or returns null if it does not fit.
#[inline]
fn bump(layout: Layout) -> *mut u8 {
    init();
    let end = END.load(Ordering::Relaxed);
    let mut next = NEXT.load(Ordering::Relaxed);
    loop {
        // `align` is a power of two; overflow means "does not fit".
        let Some(start) = next.checked_add(layout.align() - 1) else {
            return core::ptr::null_mut();
        };
        let start = start & !(layout.align() - 1);
        let new_next = match start.checked_add(layout.size()) {
            Some(n) if n <= end => n,
            _ => return core::ptr::null_mut(),
        };
        match NEXT.compare_exchange_weak(next, new_next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start as *mut u8,
            Err(current) => next = current,
        }
    }
}

// SAFETY: bump pointers are aligned, in bounds of the initial memory (which is mapped for the
// instance's whole life and used by nothing else: static data and the stack lie below
// `__heap_base`, dlmalloc only uses pages it grows) and never handed out twice; everything else
// is delegated to `System` with the pointers and layouts it handed out.
unsafe impl GlobalAlloc for InitialMemoryFirst {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = bump(layout);
        if ptr.is_null() {
            // SAFETY: forwarded caller contract.
            unsafe { System.alloc(layout) }
        } else {
            ptr
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = bump(layout);
        if ptr.is_null() {
            // SAFETY: forwarded caller contract.
            unsafe { System.alloc_zeroed(layout) }
        } else {
            // Bump memory is never reused, and memory above `__heap_base` starts zeroed.
            ptr
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !in_bump(ptr) {
            // SAFETY: not a bump pointer, so `System` handed it out with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_bump(ptr) {
            // SAFETY: not a bump pointer, so `System` handed it out with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let old_end = ptr as usize + layout.size();
        if new_size <= layout.size() {
            // Shrinking: keep the block. The tail is not given back, so every byte past `NEXT`
            // is still untouched (zero), which `alloc_zeroed` and in-place growth rely on.
            return ptr;
        }
        // Growing the most recent allocation: extend it in place if the region has room.
        if let Some(new_end) = (ptr as usize).checked_add(new_size) {
            if new_end <= END.load(Ordering::Relaxed)
                && NEXT
                    .compare_exchange(old_end, new_end, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return ptr;
            }
        }
        // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`, does not
        // overflow `isize`, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (it is larger than the old one).
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are valid for `layout.size()` bytes and distinct (bump memory
            // is never handed out twice).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size()) };
        }
        new_ptr
    }
}
