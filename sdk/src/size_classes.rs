//! A detector's heap in wasm: blocks of 16 bytes to 64 KiB in power-of-two
//! size classes, each class a free list, and larger blocks (or ones aligned
//! past 16) from the allocator below (wasi-libc's dlmalloc).
//!
//! Every `analyze` call allocates and frees tens of blocks: each list of the
//! batch, which the host lowers through `cabi_realloc`, the analysis' metric
//! names, a detector's scratch vectors. dlmalloc's bins, splits and merges
//! cost about a fifth of a simple detector's call; here an allocation pops a
//! free list and a free pushes one (Rust hands the size back on free, so
//! blocks carry no header). A freed block serves only its own class, never
//! merged with its neighbours or given back: a plugin's memory can reach
//! each class's own peak added up (the host running the 8 bundled detectors
//! over 2M orders peaked at 52 MiB with them, 49-53 MiB without).
//!
//! wasi-libc frees what the host hands its own imports (the environment, a
//! read's bytes, a directory's entries) with `free`, and the host lowers
//! those through the same `cabi_realloc` as the batch: a block from here
//! freed there would corrupt dlmalloc's heap. Plugins get none of those
//! (no environment, arguments, directories or stdin: the sandbox test's
//! snoop plugin checks), so every such list is empty and nothing is freed.
//!
//! On by default (the SDK's feature `size-classes`): a plugin with a
//! `#[global_allocator]` of its own turns the SDK's default features off.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// The smallest block, and the most alignment a class's block is sure of.
const SMALLEST: usize = 16;
/// Classes: 16 bytes, 32, ... 64 KiB.
const CLASSES: usize = 13;
const LARGEST: usize = SMALLEST << (CLASSES - 1);
/// Taken from below at a time, and cut into blocks as they are asked for:
/// the first chunk this large, each next one twice the one before, up to
/// [`LAST_CHUNK`], so a plugin that needs little takes little.
const FIRST_CHUNK: usize = 16 << 10;
const LAST_CHUNK: usize = 4 * LARGEST;

/// Size classes over `below`, which serves what they do not. Not `Sync`
/// (it keeps its lists unlocked) but where wasm has one thread.
pub struct SizeClasses<A> {
    below: A,
    free: UnsafeCell<FreeLists>,
}

struct FreeLists {
    /// Per class, its first free block, whose first word points to the next.
    heads: [Option<NonNull<u8>>; CLASSES],
    /// What is left of the chunk being cut: where, and how many bytes.
    rest: Option<NonNull<u8>>,
    rest_len: usize,
    /// Bytes of the next chunk.
    next_chunk: usize,
}

/// A wasm32 component has one thread (no `atomics` feature): nothing else
/// can touch the lists during a call into them.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static HEAP: SizeClasses<std::alloc::System> = SizeClasses::new(std::alloc::System);

/// The class of blocks `layout` is served from; `None` for the allocator below.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST || layout.align() > SMALLEST {
        return None;
    }
    Some((layout.size().max(SMALLEST).next_power_of_two().trailing_zeros() - SMALLEST.trailing_zeros()) as usize)
}

fn block_size(class: usize) -> usize {
    SMALLEST << class
}

impl<A> SizeClasses<A> {
    pub const fn new(below: A) -> Self {
        SizeClasses { below, free: UnsafeCell::new(FreeLists { heads: [None; CLASSES], rest: None, rest_len: 0, next_chunk: FIRST_CHUNK }) }
    }
}

impl FreeLists {
    /// # Safety
    /// `block` is `block_size(class)` bytes, 16-aligned, and used by no one.
    unsafe fn push(&mut self, class: usize, block: NonNull<u8>) {
        block.cast::<Option<NonNull<u8>>>().write(self.heads[class]);
        self.heads[class] = Some(block);
    }

    fn pop(&mut self, class: usize) -> Option<NonNull<u8>> {
        let block = self.heads[class]?;
        // SAFETY: a pushed block's first word is the next one.
        self.heads[class] = unsafe { block.cast::<Option<NonNull<u8>>>().read() };
        Some(block)
    }

    /// A block of `size` cut from the chunk's rest, if it has that many bytes.
    fn cut(&mut self, size: usize) -> Option<NonNull<u8>> {
        let rest = self.rest.filter(|_| self.rest_len >= size)?;
        self.rest_len -= size;
        // SAFETY: within the chunk, `size` bytes from where its rest starts.
        self.rest = Some(unsafe { rest.add(size) });
        Some(rest)
    }

    /// The chunk's rest into the free lists, as blocks as large as fit
    /// (it is a multiple of 16 bytes): no byte of a chunk is lost.
    fn shelve_rest(&mut self) {
        while self.rest_len >= SMALLEST {
            let class = ((usize::BITS - 1 - self.rest_len.leading_zeros()) as usize - SMALLEST.trailing_zeros() as usize).min(CLASSES - 1);
            let block = self.cut(block_size(class)).expect("the rest holds it");
            // SAFETY: just cut, a block of its class used by no one.
            unsafe { self.push(class, block) };
        }
        self.rest = None;
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return self.below.alloc(layout);
        };
        let (free, size) = (&mut *self.free.get(), block_size(class));
        if let Some(block) = free.pop(class).or_else(|| free.cut(size)) {
            return block.as_ptr();
        }
        let chunk_len = free.next_chunk;
        // A block above a quarter of the next chunk (while chunks are
        // small), or when no chunk can be had: a block of its own.
        let alone = || self.below.alloc(Layout::from_size_align_unchecked(size, SMALLEST));
        if size > chunk_len / 4 {
            return alone();
        }
        free.shelve_rest();
        let Some(chunk) = NonNull::new(self.below.alloc(Layout::from_size_align_unchecked(chunk_len, SMALLEST))) else {
            return alone();
        };
        (free.rest, free.rest_len, free.next_chunk) = (Some(chunk), chunk_len, (2 * chunk_len).min(LAST_CHUNK));
        free.cut(size).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Below, fresh memory is known to be zero already (calloc).
        if class_of(layout).is_none() {
            return self.below.alloc_zeroed(layout);
        }
        let block = self.alloc(layout);
        if !block.is_null() {
            ptr::write_bytes(block, 0, layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match (class_of(layout), NonNull::new(block)) {
            (Some(class), Some(block)) => (*self.free.get()).push(class, block),
            _ => self.below.dealloc(block, layout),
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            (None, None) => self.below.realloc(block, layout, new_size),
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// System's allocator, counting what is asked of it.
    #[derive(Default)]
    struct Counted {
        allocs: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counted {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            System.dealloc(block, layout)
        }
    }

    fn fill(block: *mut u8, len: usize, seed: u8) {
        (0..len).for_each(|i| unsafe { block.add(i).write(seed.wrapping_add(i as u8)) });
    }

    fn holds(block: *mut u8, len: usize, seed: u8) -> bool {
        (0..len).all(|i| unsafe { block.add(i).read() } == seed.wrapping_add(i as u8))
    }

    /// Blocks of every size and alignment, allocated, grown, shrunk and freed
    /// at random: each aligned, and none written over by another.
    #[test]
    fn blocks_keep_their_bytes_through_churn() {
        let heap = SizeClasses::new(System);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut x = 3u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        for step in 0..30_000 {
            let r = next();
            // Sizes spread over the classes and past them (0 to 256 KiB).
            let size = ((r as usize >> 4) % (1 << (r % 19))).max(1);
            let align = 1 << (r % 7);
            match r % 5 {
                0..=2 if live.len() < 400 => unsafe {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let block = if step % 3 == 0 { heap.alloc_zeroed(layout) } else { heap.alloc(layout) };
                    assert!(!block.is_null() && (block as usize).is_multiple_of(align), "step {step}");
                    assert!(step % 3 != 0 || (0..size).all(|i| block.add(i).read() == 0), "step {step}: not zeroed");
                    fill(block, size, step as u8);
                    live.push((block, layout, step as u8));
                },
                3 if !live.is_empty() => unsafe {
                    let (block, layout, seed) = live.swap_remove(next() as usize % live.len());
                    let moved = heap.realloc(block, layout, size);
                    assert!(!moved.is_null() && (moved as usize).is_multiple_of(layout.align()));
                    assert!(holds(moved, layout.size().min(size), seed), "step {step}: realloc lost bytes");
                    fill(moved, size, seed);
                    live.push((moved, Layout::from_size_align(size, layout.align()).unwrap(), seed));
                },
                _ if !live.is_empty() => unsafe {
                    let (block, layout, seed) = live.swap_remove(next() as usize % live.len());
                    assert!(holds(block, layout.size(), seed), "step {step}: a block was written over");
                    heap.dealloc(block, layout);
                },
                _ => {}
            }
        }
        for (block, layout, seed) in live {
            assert!(holds(block, layout.size(), seed));
            unsafe { heap.dealloc(block, layout) };
        }
    }

    /// A freed block serves the next ask of its class; a block grown within
    /// its class stays; large or over-aligned blocks come from below.
    #[test]
    fn freed_blocks_are_reused_and_large_ones_go_below() {
        let heap = SizeClasses::new(Counted::default());
        let small = Layout::from_size_align(100, 8).unwrap();
        unsafe {
            let a = heap.alloc(small);
            assert_eq!(heap.below.allocs.get(), 1, "a chunk");
            heap.dealloc(a, small);
            assert_eq!(heap.alloc(Layout::from_size_align(120, 16).unwrap()), a, "the same class: the same block");
            assert_eq!(heap.realloc(a, Layout::from_size_align(120, 16).unwrap(), 128), a);
            assert_ne!(heap.realloc(a, Layout::from_size_align(128, 16).unwrap(), 129), a, "past its class: moved");
            for layout in [Layout::from_size_align(LARGEST + 1, 8).unwrap(), Layout::from_size_align(64, 32).unwrap()] {
                let before = heap.below.allocs.get();
                let block = heap.alloc(layout);
                assert_eq!(heap.below.allocs.get(), before + 1, "{layout:?}");
                heap.dealloc(block, layout);
            }
            // 1 MiB of small blocks: chunks of 16, 32, ... 256, 256 KiB.
            let before = heap.below.allocs.get();
            let blocks: Vec<*mut u8> = (0..(1 << 20) / 128).map(|_| heap.alloc(Layout::from_size_align(128, 8).unwrap())).collect();
            assert!(heap.below.allocs.get() - before <= 8, "{} chunks", heap.below.allocs.get() - before);
            let mut sorted = blocks.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), blocks.len(), "every block its own");
        }
    }

    /// The rest of a chunk too small for a block goes to the smaller
    /// classes; a block above a quarter of the next chunk is taken alone.
    #[test]
    fn a_chunks_rest_is_shelved_not_lost() {
        let heap = SizeClasses::new(Counted::default());
        let page = Layout::from_size_align(4096, 16).unwrap();
        unsafe {
            heap.alloc(Layout::from_size_align(48, 8).unwrap());
            for _ in 0..4 {
                heap.alloc(page);
            }
            assert_eq!(heap.below.allocs.get(), 2, "the fourth 4 KiB block needed the next chunk");
            let free = &*heap.free.get();
            let shelved: usize = (0..CLASSES)
                .map(|class| {
                    let mut n = 0;
                    let mut at = free.heads[class];
                    while let Some(block) = at {
                        n += block_size(class);
                        at = block.cast::<Option<NonNull<u8>>>().read();
                    }
                    n
                })
                .sum();
            assert_eq!(shelved, FIRST_CHUNK - 64 - 3 * 4096, "every byte of the first chunk's rest");
            heap.alloc(Layout::from_size_align(LARGEST, 16).unwrap());
            assert_eq!(heap.below.allocs.get(), 3, "64 KiB, above a quarter of the next chunk (64 KiB): alone");
        }
    }
}
