//! The allocator's arenas. glibc's malloc gives a thread that finds the existing arenas busy an
//! arena of its own, up to 8 per core, and an arena keeps much of what its threads freed: its
//! resident size is about the most its threads ever had allocated in it at once.
//!
//! - `ferryd`: its blocking threads (storage reads, hashing, zstd) come and go over a long
//!   transfer, 12 threads at the start of a 20 GiB pull and 19 by its end. Each could open another
//!   arena, so a serving node's resident memory crept up with the length of the transfer
//!   (`ferry-bench memory`: +2.4 MiB from 1 to 20 GiB, RSS climbing through the whole pull). With
//!   as many arenas as cores (one per runtime worker) it levels off early in the pull.
//! - `ferry`: a pull's received datagrams, up to the QUIC connection window (4 MiB on loopback)
//!   while the streams' writes wait on the disk, are allocated by whichever runtime thread drives
//!   the endpoint. With two arenas each kept its own high-water of them: a puller's peak was
//!   22.1–24.3 MiB from 1 to 20 GiB with two arenas and 20.0–20.6 MiB with one
//!   (`MALLOC_ARENA_MAX`, `ferry-bench memory --sizes-gib 1,20 --pulls 2`), at the same rate.
//!   The CLI runs one arena.
//!
//! Large blocks: glibc maps a block of at least its mmap threshold on its own and unmaps it when
//! freed, but the threshold starts at 128 KiB and rises to the size of each such block freed (up
//! to 32 MiB). After the first 10 MiB upload part was freed, later parts came from the arenas
//! and stayed resident: a node importing versions into S3 (Garage) peaked at 96.0 / 106.7 MiB for
//! 1 / 4 GiB, and at 74.9 / 76.9 MiB with the threshold fixed at 4 MiB
//! (`MALLOC_MMAP_THRESHOLD_=4194304 ferry-bench memory --sizes-gib 1,4 --receiver ferryd
//! --receiver-store garage`). `ferryd` fixes it at [`NODE_MMAP_THRESHOLD`]: above the 1 MiB
//! chunks it reuses, below the parts it uploads.
//!
//! An operator's `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` win. Other allocators and C
//! libraries are left alone.

/// The arenas a long-running node gets: one per CPU available to the process, at most 8.
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8)
}

/// Caps glibc's malloc arenas at `arenas` (at least 1), unless `MALLOC_ARENA_MAX` is set, in
/// which case glibc already follows the operator's choice. Call it first thing in `main`, before
/// any thread starts. Returns the cap it set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn cap_arenas(arenas: usize) -> Option<usize> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    let arenas = arenas.max(1);
    let value = libc::c_int::try_from(arenas).ok()?;
    // SAFETY: `mallopt` only sets a tuning parameter of the allocator, reads no memory of ours, and
    // takes the allocator's own lock; any value is accepted or refused with a return of 0.
    #[allow(unsafe_code)]
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, value) };
    (set == 1).then_some(arenas)
}

/// The node's fixed mmap threshold (see the module's notes).
pub const NODE_MMAP_THRESHOLD: usize = 4 << 20;

/// Has glibc's malloc map every block of at least `bytes` on its own, and unmap it when freed,
/// instead of raising the threshold as blocks are freed; unless `MALLOC_MMAP_THRESHOLD_` is set.
/// Call it first thing in `main`. Returns the threshold it set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn fix_mmap_threshold(bytes: usize) -> Option<usize> {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return None;
    }
    let value = libc::c_int::try_from(bytes).ok()?;
    // SAFETY: as in `cap_arenas`.
    #[allow(unsafe_code)]
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) };
    (set == 1).then_some(bytes)
}

/// Fixes glibc's mmap threshold; elsewhere there is nothing to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn fix_mmap_threshold(_bytes: usize) -> Option<usize> {
    None
}

/// Caps glibc's malloc arenas; elsewhere there is nothing to cap.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn cap_arenas(_arenas: usize) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn caps_as_asked_unless_the_operator_chose() {
        let cores = super::per_core();
        assert!((1..=8).contains(&cores));
        let chose = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        let expected = |n: usize| if chose { None } else { Some(n) };
        assert_eq!(super::cap_arenas(cores), expected(cores));
        assert_eq!(super::cap_arenas(0), expected(1), "at least one arena");
        assert_eq!(super::cap_arenas(1), expected(1));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn fixes_the_mmap_threshold_unless_the_operator_chose() {
        let threshold = super::NODE_MMAP_THRESHOLD;
        let chose = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
        assert_eq!(super::fix_mmap_threshold(threshold), (!chose).then_some(threshold));
        assert_eq!(super::fix_mmap_threshold(usize::MAX), None, "more than a C int cannot be set");
    }
}
