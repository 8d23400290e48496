//! The allocator's arenas. glibc's malloc gives a thread that finds the existing arenas busy an
//! arena of its own, up to 8 per core, and an arena keeps much of what its threads freed.
//! ferryd's blocking threads (storage reads, hashing, zstd) come and go over a long transfer: 12
//! threads at the start of a 20 GiB pull, 19 by its end. Each could open another arena, so the
//! resident memory of a node serving crept up with the length of the transfer (`ferry-bench
//! memory`: +2.4 MiB from 1 to 20 GiB, RSS climbing through the whole pull). With as many arenas
//! as cores (one per runtime worker) it levels off early in the pull.
//!
//! Other allocators and C libraries are left alone.

/// Caps glibc's malloc arenas at the number of CPUs available to the process (at most 8), unless
/// `MALLOC_ARENA_MAX` is set, in which case glibc already follows the operator's choice. Call it
/// first thing in `main`, before any thread starts. Returns the cap it set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn cap_arenas() -> Option<usize> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    let arenas = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8);
    let value = libc::c_int::try_from(arenas).ok()?;
    // SAFETY: `mallopt` only sets a tuning parameter of the allocator, reads no memory of ours, and
    // takes the allocator's own lock; any value is accepted or refused with a return of 0.
    #[allow(unsafe_code)]
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, value) };
    (set == 1).then_some(arenas)
}

/// Caps glibc's malloc arenas; elsewhere there is nothing to cap.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn cap_arenas() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn caps_at_the_cores_unless_the_operator_chose() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8);
        let expected = if std::env::var_os("MALLOC_ARENA_MAX").is_some() { None } else { Some(cores) };
        assert_eq!(super::cap_arenas(), expected);
    }
}
