//! Percentiles over exact samples, and what `/proc` says about processes.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

/// Latency samples in nanoseconds, sorted once for percentiles.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub(crate) fn with_capacity(n: usize) -> Samples {
        Samples {
            nanos: Vec::with_capacity(n),
            sorted: true,
        }
    }

    pub(crate) fn push(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    pub(crate) fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
        self.sorted = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.nanos.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=100); 0 when empty.
    pub(crate) fn percentile_ms(&mut self, p: f64) -> f64 {
        self.sort();
        if self.nanos.is_empty() {
            return 0.0;
        }
        let n = self.nanos.len();
        // Nearest rank: the smallest sample with at least p% at or below it.
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        let i = rank.min(n) - 1;
        self.nanos.get(i).copied().unwrap_or(0) as f64 / 1e6
    }

    pub(crate) fn max_ms(&mut self) -> f64 {
        self.percentile_ms(100.0)
    }

    pub(crate) fn mean_ms(&self) -> f64 {
        if self.nanos.is_empty() {
            return 0.0;
        }
        self.nanos.iter().map(|&n| n as f64).sum::<f64>() / self.nanos.len() as f64 / 1e6
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(pid: &str, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .ok_or_else(|| anyhow!("{path} has no {field} line"))
}

/// The soft and hard limits on open files of this process.
pub(crate) fn open_files_limit() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| anyhow!("/proc/self/limits has no \"Max open files\" line"))?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|w| {
            if w == "unlimited" {
                Some(u64::MAX)
            } else {
                w.parse::<u64>().ok()
            }
        });
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(soft), Some(hard)) => Ok((soft, hard)),
        _ => Err(anyhow!("cannot read the open-files limit from {line:?}")),
    }
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time at one moment: the whole machine's (from `/proc/stat`) and
/// some processes' (user + system, every thread).
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    /// Ticks the machine's CPUs were busy (everything but idle and iowait).
    busy: u64,
    /// Ticks stolen by the hypervisor.
    steal: u64,
    processes: Vec<Option<u64>>,
}

/// Who used the CPUs between two samples, in cores (1.0 = one core busy).
#[derive(Debug, Clone)]
pub(crate) struct CpuUse {
    pub(crate) machine: f64,
    pub(crate) steal: f64,
    /// Per process given to [`CpuSample::take`], in order.
    pub(crate) processes: Vec<Option<f64>>,
}

impl CpuUse {
    /// What the machine did besides the given processes.
    pub(crate) fn others(&self) -> f64 {
        let ours: f64 = self.processes.iter().flatten().sum();
        (self.machine - ours).max(0.0)
    }
}

fn process_ticks(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may hold spaces: fields are
    // counted after its closing one (state is field 3, utime 14, stime 15).
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("{path} is not a stat line"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("{path}: no field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

impl CpuSample {
    /// Samples the machine and the processes (`"self"` or a pid); a process
    /// that cannot be read is `None`.
    pub(crate) fn take(pids: &[String]) -> Result<CpuSample> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest is in user).
        let busy = get(0) + get(1) + get(2) + get(5) + get(6);
        Ok(CpuSample {
            busy,
            steal: get(7),
            processes: pids.iter().map(|p| process_ticks(p).ok()).collect(),
        })
    }

    /// CPU used from `self` to `later`, over `seconds` of wall time.
    pub(crate) fn until(&self, later: &CpuSample, seconds: f64) -> CpuUse {
        let cores = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND / seconds;
        CpuUse {
            machine: cores(self.busy, later.busy),
            steal: cores(self.steal, later.steal),
            processes: self
                .processes
                .iter()
                .zip(&later.processes)
                .map(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => Some(cores(*a, *b)),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// CPU time a process's live threads have run, in nanoseconds (the sum of
/// `/proc/PID/task/*/schedstat`, finer than the ticks of `/proc/PID/stat`).
pub(crate) fn cpu_nanos(pid: &str) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry
            .with_context(|| format!("reading {dir}"))?
            .path()
            .join("schedstat");
        // A thread may have ended since the directory was read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert!((s.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((s.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((s.max_ms() - 100.0).abs() < 1e-9);
        assert!((s.percentile_ms(0.0) - 1.0).abs() < 1e-9);
        assert!((Samples::default().percentile_ms(99.0)).abs() < 1e-9);
    }

    #[test]
    fn proc_reads() -> Result<()> {
        let (soft, hard) = open_files_limit()?;
        assert!(soft <= hard);
        assert!(status_kib("self", "VmRSS")? > 0);
        let a = CpuSample::take(&["self".to_owned(), "0".to_owned()])?;
        let mut x = 0_u64;
        for i in 0..20_000_000_u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = CpuSample::take(&["self".to_owned(), "0".to_owned()])?;
        let used = a.until(&b, 1.0);
        assert!(used.processes[0].is_some());
        assert!(used.processes[1].is_none());
        assert!(cpu_nanos("self")? > 0);
        Ok(())
    }
}
