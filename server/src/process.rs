//! The process's own metrics, read from `/proc/self` when `/metrics` is
//! scraped: resident memory, CPU time, open and allowed file descriptors,
//! start time, and the build. Read by hand: the crates that do this
//! (`metrics-process`, `procfs`) bring more than these few lines of
//! parsing, and the bench already reads the same files.

use std::sync::OnceLock;

/// Sets the process gauges and counters from `/proc/self`; a file that
/// cannot be read (another OS) leaves its metric out.
pub fn publish() {
    static BUILD: OnceLock<()> = OnceLock::new();
    BUILD.get_or_init(|| {
        metrics::gauge!("tollgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    });
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("tollgate_process_resident_memory_bytes").set(rss as f64);
    }
    if let Some(cpu) = cpu_seconds() {
        // A gauge set to the kernel's count (the `metrics` counters hold
        // whole numbers); `rate()` reads it as the counter it is.
        metrics::gauge!("tollgate_process_cpu_seconds_total").set(cpu);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("tollgate_process_open_fds").set(fds.count() as f64);
    }
    if let Some(max) = max_fds() {
        metrics::gauge!("tollgate_process_max_fds").set(max as f64);
    }
    if let Some(start) = start_time() {
        metrics::gauge!("tollgate_process_start_time_seconds").set(start);
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// User and system CPU time so far: `/proc/self/schedstat`'s nanoseconds
/// on a CPU (no clock-tick rate to guess).
fn cpu_seconds() -> Option<f64> {
    let schedstat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

/// The soft limit on open files.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// When the process started, in seconds since the epoch: the first call,
/// which `run` makes at start-up.
fn start_time() -> Option<f64> {
    static START: OnceLock<f64> = OnceLock::new();
    Some(*START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(resident_bytes().is_some_and(|b| b > 1024 * 1024));
        assert!(cpu_seconds().is_some_and(|s| s > 0.0));
        assert!(max_fds().is_some_and(|m| m > 0));
    }
}
