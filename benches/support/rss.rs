//! A process's memory as `/proc` reports it, for the benchmarks that run the bridge as a child.

/// A `/proc/PID/status` field in KiB (`VmHWM:` peak RSS, `VmRSS:` current), 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
