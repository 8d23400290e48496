//! Allocator settings of the long-running transfer processes (`ferryd`, `ferry pull`).
//!
//! Both move data in 1 MiB chunk buffers that live for a round trip and are freed on another
//! thread than the one that allocated them. glibc's malloc starts by serving blocks above 128 KiB
//! with their own mappings, returned to the kernel on free; but each such free raises that
//! threshold to the freed size, so from the first chunk on every chunk buffer is carved from the
//! heaps of the runtime threads' arenas, and what those heaps once held stays resident. `ferryd`'s
//! peak RSS then grew with the size of what it served (48.0 MiB after 1 GiB; 34.6 MiB with the
//! threshold fixed, and flat from 1 to 4 GiB: `ferry-bench memory --sizes-gib 1,4`).
//!
//! [`tune`] fixes the threshold at [`MMAP_THRESHOLD`]: QUIC datagrams (at most 64 KiB) and
//! everything small stay in the arenas; chunk buffers are mapped and unmapped whole. An operator's
//! own `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` setting is left in force.

/// Blocks at least this large get their own mapping, returned to the kernel when freed.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// The mmap threshold is now [`MMAP_THRESHOLD`].
    Applied,
    /// The environment sets the allocator's thresholds; nothing was changed.
    LeftToEnvironment,
    /// Not glibc (or glibc refused): the platform's allocator behaviour applies.
    Unsupported,
}

/// Fixes glibc's mmap threshold (see the module documentation). Call once, at start-up, before
/// the runtime's threads exist.
pub fn tune() -> Tuning {
    if set_by_environment(|key| std::env::var_os(key)) {
        return Tuning::LeftToEnvironment;
    }
    set_mmap_threshold(MMAP_THRESHOLD)
}

fn set_by_environment(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("MALLOC_TRIM_THRESHOLD_").is_some()
        || var("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_mmap_threshold(bytes: usize) -> Tuning {
    let Ok(value) = nix::libc::c_int::try_from(bytes) else { return Tuning::Unsupported };
    // SAFETY: mallopt only updates malloc's parameters under its own lock; it takes plain integers
    // and has no memory-safety preconditions.
    let ok = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, value) };
    if ok == 1 { Tuning::Applied } else { Tuning::Unsupported }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> Tuning {
    Tuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn an_operators_malloc_settings_are_left_alone() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
        };
        assert!(!set_by_environment(env(&[])));
        assert!(!set_by_environment(env(&[("GLIBC_TUNABLES", "glibc.rtld.nns=2")])));
        assert!(set_by_environment(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])));
        assert!(set_by_environment(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
        assert!(set_by_environment(env(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")])));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_threshold() {
        assert_eq!(set_mmap_threshold(MMAP_THRESHOLD), Tuning::Applied);
    }
}
