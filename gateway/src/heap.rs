//! Giving memory back after a crowd has gone. Each idle TLS connection costs the
//! gateway about 32 KB of heap (bench/results); when thousands close, glibc's malloc
//! keeps their freed pages, so a gateway that once held 10,000 connections stays ~300
//! MiB larger for good, which a container's memory limit or the next surge pays for.
//! Each time a few hundred connections have closed, the housekeeping loop asks malloc
//! to return its free pages (`malloc_trim`, which calls `madvise(MADV_DONTNEED)`:
//! already in the gateway's seccomp allow-list).

/// How many connections must have closed since the last trim (or since the most were
/// open) for a trim: about 8 MiB of heap, enough to be worth the walk over malloc's
/// arenas (a few milliseconds at most, on the housekeeping task).
pub const TRIM_STEP: i64 = 256;

/// Remembers the most connections open since the last trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    high: i64,
}

impl Trimmer {
    /// Called on each housekeeping tick with the connections open now and the most that
    /// were open at once since the last tick (counted at accept, so a crowd that came
    /// and went between two ticks is seen too); returns whether the heap should be
    /// trimmed now. A crowd that leaves over several ticks is trimmed as it goes, and
    /// what its last [`TRIM_STEP`] left behind at the latest when they have gone.
    pub fn due(&mut self, open: i64, most_since_last_tick: i64) -> bool {
        self.high = self.high.max(open).max(most_since_last_tick);
        if self.high - open >= TRIM_STEP {
            self.high = open;
            return true;
        }
        false
    }
}

/// Returns the heap's free pages to the kernel.
pub fn trim() {
    warden_sandbox::sys::trim_heap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_as_a_crowd_leaves() {
        let mut t = Trimmer::default();
        for open in [10, 600, 2000] {
            assert!(
                !t.due(open, open),
                "no trim while connections rise ({open})"
            );
        }
        assert!(
            !t.due(2000 - TRIM_STEP + 1, 2000 - TRIM_STEP + 1),
            "fewer than a step have gone"
        );
        assert!(t.due(2000 - TRIM_STEP, 2000 - TRIM_STEP), "a step has gone");
        // Counted from the last trim: the same closed connections do not trim twice.
        assert!(!t.due(2000 - TRIM_STEP - 1, 2000 - TRIM_STEP - 1));
        // A crowd leaving over several ticks: trimmed at each step, and the rest too.
        assert!(t.due(1000, 1000));
        assert!(t.due(300, 300));
        assert!(t.due(0, 0), "the last {} connections of the crowd", 300);
        assert!(!t.due(0, 0));
    }

    /// A crowd that opened and closed between two ticks is seen by the most counted
    /// at accept, not missed because no tick saw it open.
    #[test]
    fn a_crowd_gone_between_two_ticks_is_trimmed() {
        let mut t = Trimmer::default();
        assert!(!t.due(3, 3));
        assert!(t.due(3, 1500), "1500 came and went since the last tick");
        assert!(!t.due(3, 3), "and not twice");
        assert!(
            !t.due(3, 3 + TRIM_STEP - 1),
            "a swing under a step since the last tick"
        );
    }

    #[test]
    fn small_swings_never_trim() {
        let mut t = Trimmer::default();
        for open in [0, TRIM_STEP - 1, 0, TRIM_STEP - 1, 1] {
            assert!(!t.due(open, open), "{open}");
        }
        // A new high counts from where it is.
        assert!(!t.due(5000, 5000));
        assert!(!t.due(5000 - TRIM_STEP + 1, 5000 - TRIM_STEP + 1));
        assert!(t.due(0, 0));
    }
}
