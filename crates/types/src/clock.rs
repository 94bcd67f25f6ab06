//! The wall clock, read in one place: milliseconds (and seconds) since the Unix epoch,
//! as records and reports carry them.
//!
//! Only proposers, reporters and the CLI's "ago" columns read it. Pure code (`apply`,
//! the scheduler, the reconcilers) never calls it; they take a time as a parameter.
//! Measuring elapsed time belongs to `Instant`, not here (the mesh's ejection clock is
//! one such monotonic clock, see `mesh/src/table.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch; 0 if the clock reads before 1970
/// (a broken clock must not stop a node).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock seconds since the Unix epoch, as certificates' `not_after` counts them;
/// 0 if the clock reads before 1970.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let ms = now_ms();
        let secs = now_secs();
        assert!(ms > 1_600_000_000_000, "{ms}");
        assert!((secs - (ms / 1000) as i64).abs() <= 1, "{secs} {ms}");
    }
}
