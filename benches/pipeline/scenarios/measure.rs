//! Figures from `/proc`, and their presentation.

use std::path::Path;
use std::time::Duration;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU seconds, all threads, since the process started.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    /// The anonymous part of RSS (`RssAnon`: heap, stacks), as opposed to
    /// file pages mapped (`RssFile`, the binary) and shared memory.
    pub anon_kib: u64,
    /// Peak RSS so far (`VmHWM`).
    pub hwm_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>` (`self` for this process); `None` once it is gone.
    pub fn read(pid: &str) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which is in parentheses): `rest`
        // starts at field 3, so utime (14) and stime (15) are 11 and 12.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let cpu_ticks = ticks(11)? + ticks(12)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(ProcSample {
            cpu_seconds: cpu_ticks as f64 / clock_ticks_per_second(),
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        })
    }

    pub fn of(pid: u32) -> Option<ProcSample> {
        ProcSample::read(&pid.to_string())
    }

    /// This (the bench) process: the endpoint and the writers.
    pub fn this_process() -> ProcSample {
        ProcSample::read("self").unwrap_or_default()
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `/proc/loadavg`'s three averages.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU seconds as a percentage of one core over `wall`.
pub fn percent_of_core(cpu_seconds: f64, wall: Duration) -> f64 {
    100.0 * cpu_seconds / wall.as_secs_f64().max(1e-9)
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sum of file sizes under `dir` (recursively): the disk buffer's size.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The median of `values` (NaN when empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
