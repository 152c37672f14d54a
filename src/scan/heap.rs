//! Handing the heap's free pages back to the system while a scan runs.
//!
//! A scan frees most of what it allocates (each file's text, its syntax tree, the walkers'
//! buffers) between the blocks the index keeps, and glibc's allocator keeps such free pages
//! resident inside its heaps: on a kernel tree about 50 MiB by the scan's end, a tenth of
//! the process. `malloc_trim` returns the free pages inside every heap (not only at a heap's
//! top) to the system; it is glibc's own, so other targets do nothing.

/// Source read between two trims: often enough to keep the free pages from piling up,
/// rarely enough that the trims (a walk of the allocator's free lists, milliseconds each)
/// cost nothing measurable.
pub const TRIM_EVERY_BYTES: usize = 32 * 1024 * 1024;

/// Returns the allocator's free pages to the system.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own heaps, under their locks, and
    // may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
