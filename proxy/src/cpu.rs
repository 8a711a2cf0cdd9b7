//! Whether the CPUs this process may run on have time to spare, for work that must never
//! take CPU from client traffic: shadow copies.
//!
//! A copy costs the proxy and the host tens of microseconds of CPU. While the CPUs have idle
//! time that costs the clients nothing; once they have none, every copy is CPU taken from
//! the requests being served, and their latency grows with it. So a sampler reads the
//! kernel's counters (`/proc/stat`, for the CPUs in `Cpus_allowed_list`) every
//! [`SAMPLE_EVERY`], and copies are skipped (dropped, reason `no_spare_cpu`) while the share
//! of time the CPUs spent idle in the last period is below `--shadow-spare-cpu`.
//!
//! Time spent on `nice`d processes counts as spare: they give way to the proxy. Where the
//! counters cannot be read (not Linux), the CPUs always count as having time to spare.
//!
//! In a container held to a CPU quota (cgroup `cpu.max`, or v1 `cpu.cfs_quota_us`), the
//! host's CPUs may be idle while the container is at its limit; so the share of the quota
//! the cgroup left unused counts too (see [`quota`]), and a period in which the kernel
//! throttled it counts as having none. The smaller of the two shares decides.

mod quota;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quota::{Quota, Usage};

/// How often the CPUs' counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Every how many samples the sampler looks again at which CPUs the process may run on and
/// at its cgroup's quota (every 5 s): both can change under a running process (`taskset`,
/// a Kubernetes in-place pod resize).
const REFRESH_EVERY: u64 = 50;

/// Whether the CPUs had time to spare in the last sampling period.
#[derive(Debug)]
pub struct SpareCpu {
    /// The idle share below which the CPUs count as busy; 0 never counts them busy.
    threshold: f64,
    busy: AtomicBool,
}

impl SpareCpu {
    /// CPUs that count as busy while less than `threshold` (a fraction, e.g. 0.05) of their
    /// time was idle; 0 turns the check off.
    pub fn new(threshold: f64) -> Arc<Self> {
        Arc::new(Self {
            threshold,
            busy: AtomicBool::new(false),
        })
    }

    /// Whether the CPUs had less idle time than the threshold in the last period.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Read the counters every [`SAMPLE_EVERY`] until the task is aborted; nothing when
    /// the check is off or the counters cannot be read.
    pub fn spawn_sampler(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.threshold <= 0.0 {
            return None;
        }
        let mut sources = Sources::of_this_process();
        let mut last = sources.sample();
        if last.times.is_none() && last.usage.is_none() {
            return None;
        }
        if let Some(quota) = &sources.quota {
            tracing::info!(
                cpus = quota.cpus(),
                "shadow copies also wait while the cgroup's CPU quota has no time to spare"
            );
        }
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for tick in 1_u64.. {
                every.tick().await;
                if tick % REFRESH_EVERY == 0 {
                    let fresh = Sources::of_this_process();
                    if fresh != sources {
                        fresh.log_change(&sources);
                        sources = fresh;
                        // Counters of other CPUs or another cgroup are no baseline.
                        last = sources.sample();
                        continue;
                    }
                }
                let now = sources.sample();
                if let Some(share) = sources.spare_share(&now, &last) {
                    this.busy.store(share < this.threshold, Ordering::Relaxed);
                }
                last = now;
            }
        }))
    }
}

/// Where the sampler reads how busy the CPUs are: the allowed CPUs' counters, and the
/// cgroup's quota if it has one.
#[derive(PartialEq)]
struct Sources {
    cpus: Option<Vec<usize>>,
    quota: Option<Quota>,
}

/// One reading of every source that could be read.
struct Sample {
    times: Option<Times>,
    usage: Option<Usage>,
}

impl Sources {
    /// The sources of this process as they are now.
    fn of_this_process() -> Sources {
        Sources {
            cpus: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| allowed_cpus(&status)),
            quota: Quota::of_this_process(),
        }
    }

    /// Says what changed since `before`.
    fn log_change(&self, before: &Sources) {
        if self.cpus != before.cpus {
            tracing::info!(cpus = ?self.cpus, "the CPUs this process may run on changed");
        }
        if self.quota != before.quota {
            match &self.quota {
                Some(quota) => tracing::info!(
                    cpus = quota.cpus(),
                    "the cgroup's CPU quota changed; shadow copies wait while it has no time to spare"
                ),
                None => tracing::info!("the cgroup no longer has a CPU quota"),
            }
        }
    }

    /// Read the counters now. (procfs and cgroupfs are served from memory in microseconds,
    /// ten times a second: not worth a blocking-pool thread.)
    fn sample(&self) -> Sample {
        Sample {
            times: self.cpus.as_ref().and_then(|cpus| {
                let stat = std::fs::read_to_string("/proc/stat").ok()?;
                Times::of(&stat, cpus)
            }),
            usage: self.quota.as_ref().and_then(Quota::usage),
        }
    }

    /// The smaller spare share of the two sources between `earlier` and `now`.
    fn spare_share(&self, now: &Sample, earlier: &Sample) -> Option<f64> {
        let cpus = match (&now.times, &earlier.times) {
            (Some(now), Some(earlier)) => now.spare_share_since(earlier),
            _ => None,
        };
        let quota = match (&self.quota, &now.usage, &earlier.usage) {
            (Some(quota), Some(now), Some(earlier)) => now.spare_share_since(earlier, quota.cpus()),
            _ => None,
        };
        match (cpus, quota) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Time the CPUs spent, in the kernel's ticks since boot: in all, and with nothing (or only
/// `nice`d work) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    total: u64,
    spare: u64,
}

impl Times {
    /// The sums over `cpus` of `/proc/stat`'s `cpuN` lines (`stat` is the file's text).
    fn of(stat: &str, cpus: &[usize]) -> Option<Times> {
        let mut times = Times { total: 0, spare: 0 };
        let mut found = false;
        for line in stat.lines() {
            let mut words = line.split_ascii_whitespace();
            let Some(cpu) = words
                .next()
                .and_then(|name| name.strip_prefix("cpu"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if !cpus.contains(&cpu) {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let fields: Vec<u64> = words.take(8).filter_map(|w| w.parse().ok()).collect();
            let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
                return None;
            };
            times.total += user + nice + system + idle + iowait + irq + softirq + steal;
            times.spare += nice + idle + iowait;
            found = true;
        }
        found.then_some(times)
    }

    /// The share of the time since `earlier` that was spare; `None` when no time passed.
    fn spare_share_since(&self, earlier: &Times) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let spare = self.spare.checked_sub(earlier.spare)?;
        (total > 0).then(|| spare as f64 / total as f64)
    }
}

/// The CPUs of `Cpus_allowed_list` in `/proc/self/status` (`status` is the file's text),
/// e.g. `0-3,8`.
fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                cpus.extend(from.trim().parse::<usize>().ok()?..=to.trim().parse().ok()?)
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  300 20 100 1000 10 0 5 0 0 0\n\
                        cpu0 100 0 50 900 10 0 0 0 0 0\n\
                        cpu1 200 20 50 100 0 0 5 0 0 0\n\
                        intr 12345\nctxt 999\n";

    #[test]
    fn the_allowed_list_is_read_with_ranges() {
        let status = "Name:\tstrangler\nCpus_allowed:\tf\nCpus_allowed_list:\t0-2,5\n";
        assert_eq!(allowed_cpus(status), Some(vec![0, 1, 2, 5]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t1\n"), Some(vec![1]));
        assert_eq!(allowed_cpus("Name:\tx\n"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\tx-1\n"), None);
    }

    #[test]
    fn only_the_allowed_cpus_count_and_nice_time_is_spare() {
        let cpu1 = Times::of(STAT, &[1]).unwrap();
        assert_eq!(
            cpu1,
            Times {
                total: 375,
                spare: 120
            }
        );
        let both = Times::of(STAT, &[0, 1]).unwrap();
        assert_eq!(
            both,
            Times {
                total: 1435,
                spare: 1030
            }
        );
        assert_eq!(Times::of(STAT, &[7]), None, "a CPU the file does not list");
        assert_eq!(Times::of("cpu0 1 2\n", &[0]), None, "a truncated line");
    }

    #[test]
    fn the_share_is_taken_over_the_period_between_two_samples() {
        let earlier = Times {
            total: 1000,
            spare: 500,
        };
        let busy = Times {
            total: 1100,
            spare: 502,
        };
        let idle = Times {
            total: 1100,
            spare: 560,
        };
        assert_eq!(busy.spare_share_since(&earlier), Some(0.02));
        assert_eq!(idle.spare_share_since(&earlier), Some(0.6));
        assert_eq!(earlier.spare_share_since(&earlier), None, "no time passed");
        assert_eq!(earlier.spare_share_since(&busy), None, "counters went back");
    }

    #[test]
    fn a_zero_threshold_turns_the_check_off() {
        let off = SpareCpu::new(0.0);
        assert!(off.spawn_sampler().is_none());
        assert!(!off.busy());
    }
}
