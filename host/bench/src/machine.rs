//! What the numbers were measured on, read from `/proc`: CPU model, cores,
//! memory, kernel, load; the process's resident-set high-water mark; the
//! date; and a monotonic clock that two processes on this machine share.

use std::fmt::Write;

/// The machine, as the report's header states it.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_kb: u64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb = kb_field(&meminfo, "MemTotal:").unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            cores,
            memory_kb,
            kernel,
        }
    }

    /// `AMD EPYC, 2 cores, 23.5 GiB, Linux 6.1.0`
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{}, {} core{}, {:.1} GiB memory, Linux {}",
            self.cpu,
            self.cores,
            if self.cores == 1 { "" } else { "s" },
            self.memory_kb as f64 / (1024.0 * 1024.0),
            self.kernel
        );
        if let Some(load) = load_average() {
            let _ = write!(out, " (load average {load} at the start)");
        }
        out
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// The value in kB of a `Name:   1234 kB` line of a `/proc` status file.
pub fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// This process's peak resident set (`VmHWM`) and current one (`VmRSS`), in kB.
pub fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        kb_field(&status, "VmHWM:").unwrap_or(0),
        kb_field(&status, "VmRSS:").unwrap_or(0),
    )
}

/// Where the machine's CPU time went, at one moment: to calculate how much
/// of it other processes took while an item ran (the others' share makes
/// that item's numbers worse, and the report says so).
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    /// Seconds of CPU the whole machine spent busy (all cores, guest
    /// included, steal excluded).
    busy: f64,
    /// Seconds the hypervisor gave to other guests.
    steal: f64,
    /// Seconds this process and its reaped children used.
    own: f64,
    at: std::time::Instant,
}

impl CpuSnapshot {
    pub fn take() -> CpuSnapshot {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let (busy, steal) = parse_proc_stat(&stat).unwrap_or((0.0, 0.0));
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        CpuSnapshot {
            busy: busy / tick,
            steal: steal / tick,
            own: own_cpu_secs(),
            at: std::time::Instant::now(),
        }
    }

    /// Since `earlier`: the share of the machine's CPU (all cores) that
    /// other processes used, and the share stolen by the hypervisor.
    pub fn others_since(&self, earlier: &CpuSnapshot, cores: usize) -> (f64, f64) {
        let capacity = self.at.duration_since(earlier.at).as_secs_f64() * cores.max(1) as f64;
        let others = (self.busy - earlier.busy) - (self.own - earlier.own);
        (
            (others / capacity.max(1e-9)).clamp(0.0, 1.0),
            ((self.steal - earlier.steal) / capacity.max(1e-9)).clamp(0.0, 1.0),
        )
    }
}

/// Busy and steal ticks from the `cpu` line of `/proc/stat`.
fn parse_proc_stat(stat: &str) -> Option<(f64, f64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    if v.len() < 8 {
        return None;
    }
    Some((v[0] + v[1] + v[2] + v[5] + v[6], v[7]))
}

/// CPU seconds of this process and of the children it has waited for.
fn own_cpu_secs() -> f64 {
    let secs = |who| {
        // SAFETY: a zeroed rusage is valid for getrusage to fill.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and pointer.
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// The median time of a 4 KiB write and `fdatasync` in `dir`: what one
/// durable SQLite commit (WAL, `synchronous = FULL`) costs at least, to
/// explain the store-bound numbers.
pub fn fsync_latency(dir: &std::path::Path) -> Option<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).ok()?;
    let block = [0u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..50 {
        let started = std::time::Instant::now();
        file.write_all(&block).ok()?;
        file.sync_data().ok()?;
        samples.push(started.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(&path);
    crate::stats::Summary::of(&samples).map(|s| s.median)
}

/// Nanoseconds of `CLOCK_MONOTONIC`. Unlike `Instant`, it can be sent to
/// another process on the same machine and compared there: the engine host
/// stamps an outcome, the benchmark's SSE client stamps its arrival.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The date and time in UTC, `2026-03-21 14:05 UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_from_unix(secs)
}

fn utc_from_unix(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_are_read_in_kb() {
        let status = "Name:\tbench\nVmHWM:\t  123456 kB\nVmRSS:\t   654 kB\n";
        assert_eq!(kb_field(status, "VmHWM:"), Some(123_456));
        assert_eq!(kb_field(status, "VmRSS:"), Some(654));
        assert_eq!(kb_field(status, "VmSwap:"), None);
    }

    #[test]
    fn proc_stat_busy_time_leaves_out_idle_iowait_and_steal() {
        let stat = "cpu  100 5 50 9000 40 3 2 7 0 0\ncpu0 50 2 25 4500 20 1 1 3 0 0\n";
        assert_eq!(parse_proc_stat(stat), Some((160.0, 7.0)));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn unix_seconds_become_a_utc_date() {
        assert_eq!(utc_from_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_from_unix(1_774_101_900), "2026-03-21 14:05 UTC");
    }
}
