//! Handing memory the process has freed back to the system, at the moments a lot of it is
//! free at once: after the first route table, and after each config file (re)load.
//!
//! Loading a large config and compiling its table leave tens of megabytes of freed
//! temporaries (the parsed file, the merged snapshot). mimalloc, berth's allocator (`main.rs`),
//! returns free pages to the system only a while after they are freed and only when some
//! thread allocates again, so a berth that starts and then idles would keep them resident.

/// Returns the pages freed so far to the system, now. Takes a few milliseconds at 10,000
/// services; not for the data path.
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointer; it only walks mimalloc's own free lists, and is
    // safe to call from any thread at any time. Where mimalloc is not the global allocator
    // (tests) it has nothing to release.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
