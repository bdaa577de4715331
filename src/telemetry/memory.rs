//! Resident memory of a long-running process on glibc: its allocator gives each thread that contends
//! an arena of its own (fragmenting a heap of many small objects across them), and keeps freed memory
//! mapped, so the resident size after a large transient (listing every SecretSync at start, a relist
//! after `410 Gone`) would stay at that peak. [`limit_arenas`] and [`release_free_memory`] counter both
//! (measured in docs/benchmarks.md); elsewhere they do nothing.

/// Returns free heap memory to the operating system (glibc's `malloc_trim`; nothing elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and only unmaps memory the allocator holds free.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Limits glibc's allocator to one arena (unless `MALLOC_ARENA_MAX` says otherwise); call before
/// threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        /// glibc's `M_ARENA_MAX`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt sets an allocator parameter; called before other threads exist.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
