//! Percentiles, and what `/proc` says about a process (the server's and our own).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// From samples in microseconds (nearest-rank percentiles).
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let index = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[index] as f64 / 1000.0
        };
        let sum: u64 = samples.iter().sum();
        Self {
            count: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p95: rank(0.95),
            p99: rank(0.99),
            max: samples[n - 1] as f64 / 1000.0,
            mean: sum as f64 / n as f64 / 1000.0,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": round3(self.p50),
            "p90_ms": round3(self.p90),
            "p95_ms": round3(self.p95),
            "p99_ms": round3(self.p99),
            "max_ms": round3(self.max),
            "mean_ms": round3(self.mean),
        })
    }

    /// With p95 instead of p90.
    pub fn line95(&self) -> String {
        format!(
            "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            self.p50, self.p95, self.p99, self.max, self.count
        )
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            self.p50, self.p90, self.p99, self.max, self.count
        )
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median of some durations in milliseconds.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// Linux's USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on every mainstream
/// architecture).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in seconds (children not included).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the full line are 12 and 13 here (state is field 3 → index 0).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// A `kB` line of /proc/PID/status (VmRSS, VmHWM), in bytes.
pub fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].trim_start_matches(':').split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

pub fn rss(pid: &str) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// Number of open file descriptors (sockets included).
pub fn open_fds(pid: &str) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(Iterator::count)
}

/// Samples a process's RSS every 100 ms in the background and remembers the peak.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: String) -> Self {
        let peak = Arc::new(AtomicU64::new(rss(&pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(now) = rss(&pid) {
                    p.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { peak, stop }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU seconds of the server and of this generator over one phase, plus the server's peak RSS.
pub struct PhaseMeter {
    server_pid: Option<String>,
    server_cpu0: Option<f64>,
    own_cpu0: Option<f64>,
    sampler: Option<RssSampler>,
}

impl PhaseMeter {
    pub fn start(server_pid: Option<&str>) -> Self {
        Self {
            server_pid: server_pid.map(str::to_owned),
            server_cpu0: server_pid.and_then(cpu_seconds),
            own_cpu0: cpu_seconds("self"),
            sampler: server_pid.map(|pid| RssSampler::start(pid.to_owned())),
        }
    }

    pub fn finish(self) -> Value {
        let server_cpu = match (&self.server_pid, self.server_cpu0) {
            (Some(pid), Some(c0)) => cpu_seconds(pid).map(|c1| round3(c1 - c0)),
            _ => None,
        };
        let own_cpu = self.own_cpu0.and_then(|c0| cpu_seconds("self").map(|c1| round3(c1 - c0)));
        let (peak_rss, hwm, rss_end) = match &self.server_pid {
            Some(pid) => (self.sampler.as_ref().map(RssSampler::peak), status_kb(pid, "VmHWM"), rss(pid)),
            None => (None, None, None),
        };
        json!({
            "server_cpu_s": server_cpu,
            "generator_cpu_s": own_cpu,
            "server_peak_rss_bytes": peak_rss,
            "server_rss_end_bytes": rss_end,
            "server_vmhwm_bytes": hwm,
        })
    }
}

pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1_048_576.0))
}
