//! Keeping the password checks' memory from piling up.
//!
//! Each argon2 check allocates 19 MiB. glibc's allocator raises its mmap
//! threshold to the size of the first such block freed, so later ones come
//! from the arena of whichever thread runs the check and stay there: during
//! a burst the agent grew by 19 MiB per thread that had run one, and stayed
//! at hundreds of MB. [`tune`] fixes the threshold at start, so every large
//! block is mapped on allocation and unmapped on free; [`release`] trims
//! what small allocations left after a burst. musl's allocator already maps
//! large blocks, so on musl both do nothing.

/// Blocks of this size and more are mapped and unmapped on their own.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Fixes glibc's mmap threshold (see the module docs); call once at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only sets an allocator parameter under its own lock;
    // it takes no pointer and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Fixes the allocator's mmap threshold: nothing to do on this target.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Returns free heap pages to the system (glibc), after the last password
/// check of a burst ends.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() {
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own
    // free lists under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns free heap pages to the system: nothing to do on this target.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
