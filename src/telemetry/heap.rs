//! Gives the heap pages that bursts of reconciles freed back to the kernel.
//!
//! glibc keeps freed memory in its arenas for reuse and returns it only from the top of the
//! main heap: after a resync burst (every object reconciled at once, EC2 answers parsed, status
//! compared) the operator's resident memory stays at the burst's level although the live heap
//! is back to its floor (BENCHMARKS.md: ~14 MiB live against ~34 MiB anonymous RSS with 1000
//! objects). `malloc_trim(0)` walks every arena and releases whole free pages with
//! `madvise(MADV_DONTNEED)`; the pages come back on the next use. The walk takes well under a
//! millisecond for a heap of this size. Other C libraries (musl) have nothing to trim: no-op.

use std::time::Duration;

/// Releases free heap pages to the kernel; returns whether anything was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state, under its
    // own locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Trims every `every` for the life of the process.
pub fn spawn_trimmer(every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            trim();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident set size of this process, from /proc/self/statm (pages of 4 KiB).
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_freed_burst_goes_back_to_the_kernel_and_the_heap_stays_usable() {
        // A burst like a resync's: 48 MiB in small blocks, then freed, with one block after
        // them still alive so that glibc cannot give the memory back by shrinking the top.
        let burst: Vec<Vec<u8>> = (0..12_288).map(|i| vec![(i % 251) as u8; 4000]).collect();
        let keep = vec![1u8; 4000];
        drop(burst);
        let before = rss_bytes();
        assert!(trim(), "malloc_trim released nothing");
        let after = rss_bytes();
        assert!(
            before.saturating_sub(after) >= 16 << 20,
            "resident memory went from {before} to {after} bytes"
        );
        // The allocator still hands out intact memory after the trim.
        let again: Vec<Vec<u8>> = (0..1000).map(|i| vec![(i % 7) as u8; 512]).collect();
        assert!(
            again
                .iter()
                .enumerate()
                .all(|(i, v)| v.iter().all(|b| *b == (i % 7) as u8))
        );
        assert_eq!(keep[3999], 1);
    }
}
