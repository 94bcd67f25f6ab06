//! What this node has to offer tasks, read from its kernel: CPUs (those this process
//! may run on, within any CPU quota of its cgroup, as the standard library counts
//! them) and memory (`MemTotal` of `/proc/meminfo`). Reported in every heartbeat, so
//! the scheduler can hold reservations against it; read once per daemon, since neither
//! changes while it runs. Reads only; decides nothing.

use hoist_types::node::Resources;

/// This node's CPUs and memory; a figure that cannot be read is 0 (unknown, which the
/// scheduler treats as unlimited).
pub fn resources() -> Resources {
    static READ: std::sync::OnceLock<Resources> = std::sync::OnceLock::new();
    *READ.get_or_init(read_resources)
}

fn read_resources() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total_bytes(&text))
        .unwrap_or(0);
    Resources {
        nano_cpus: cpus.saturating_mul(1_000_000_000),
        memory_bytes,
    }
}

/// `MemTotal:  16318756 kB` in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       16318756 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(16_318_756 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn this_node_reports_some_cpus_and_memory() {
        let found = resources();
        assert!(found.nano_cpus >= 1_000_000_000, "{found:?}");
        assert!(found.memory_bytes > 0, "{found:?}");
    }
}
