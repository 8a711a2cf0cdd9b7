//! The CPU limit of this process's cgroup (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` in
//! v1), and how much of it is used.
//!
//! A container limited by a quota (Kubernetes' `resources.limits.cpu`, Docker's `--cpus`)
//! usually runs on a host whose CPUs have idle time to spare, so `/proc/stat` alone says
//! "spare" while the container is at its limit and the kernel throttles it. The limit that
//! binds is the tightest one from this process's cgroup up to the root of the cgroup mount;
//! that cgroup's counters say how much CPU its subtree used (v2 `cpu.stat` `usage_usec`, v1
//! `cpuacct.usage`) and how often it was throttled (`nr_throttled` in `cpu.stat`).

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The quota that binds this process: how many CPUs it amounts to, and where its counters
/// are.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Quota {
    /// Its quota over its period, in CPUs (e.g. 0.5).
    cpus: f64,
    /// The `cpu.stat` of the cgroup that sets it (`nr_throttled`; in v2 also `usage_usec`).
    stat: PathBuf,
    /// v1 only: that cgroup's `cpuacct.usage` (nanoseconds), if the cpuacct controller is
    /// mounted.
    cpuacct: Option<PathBuf>,
}

/// A reading of a quota's counters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    at: Instant,
    /// CPU time used by the cgroup's subtree, in microseconds, where it can be read.
    used_us: Option<u64>,
    /// How many periods the subtree was throttled in.
    throttled: u64,
}

/// A cgroup hierarchy this process is in: where it is mounted, and the process's cgroup
/// directory in it.
struct Hierarchy {
    mount: PathBuf,
    own: PathBuf,
}

impl Quota {
    /// The quota of this process's cgroup, if any (`None` when unlimited or unreadable).
    pub(super) fn of_this_process() -> Option<Quota> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        Quota::find(&mountinfo, &cgroup, |file| {
            std::fs::read_to_string(file).ok()
        })
    }

    /// The tightest quota on the way up from this process's cgroups, as `mountinfo` (the
    /// text of `/proc/self/mountinfo`) and `cgroup` (of `/proc/self/cgroup`) place them;
    /// `read` reads a file. cgroup v2 is looked at first.
    fn find(
        mountinfo: &str,
        cgroup: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Option<Quota> {
        if let Some(v2) = Hierarchy::of(mountinfo, cgroup, None)
            && let Some((cpus, dir)) = v2.tightest(|dir| cpus_of_max(&read(&dir.join("cpu.max"))?))
        {
            return Some(Quota {
                cpus,
                stat: dir.join("cpu.stat"),
                cpuacct: None,
            });
        }
        let v1 = Hierarchy::of(mountinfo, cgroup, Some("cpu"))?;
        let (cpus, dir) = v1.tightest(|dir| {
            let quota: i64 = read(&dir.join("cpu.cfs_quota_us"))?.trim().parse().ok()?;
            let period: i64 = read(&dir.join("cpu.cfs_period_us"))?.trim().parse().ok()?;
            (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
        })?;
        // The same cgroup in the cpuacct hierarchy, which may be mounted apart.
        let relative = dir.strip_prefix(&v1.mount).ok()?;
        let cpuacct = Hierarchy::of(mountinfo, cgroup, Some("cpuacct"))
            .map(|acct| acct.mount.join(relative).join("cpuacct.usage"));
        Some(Quota {
            cpus,
            stat: dir.join("cpu.stat"),
            cpuacct,
        })
    }

    /// How many CPUs the quota amounts to.
    pub(super) fn cpus(&self) -> f64 {
        self.cpus
    }

    /// The subtree's use of CPU so far.
    pub(super) fn usage(&self) -> Option<Usage> {
        let stat = std::fs::read_to_string(&self.stat).ok()?;
        let mut usage = Usage::of(&stat, Instant::now());
        if let Some(file) = &self.cpuacct {
            usage.used_us = std::fs::read_to_string(file)
                .ok()
                .and_then(|ns| ns.trim().parse::<u64>().ok())
                .map(|ns| ns / 1000);
        }
        Some(usage)
    }
}

impl Hierarchy {
    /// The v2 hierarchy (`controller` `None`) or the v1 hierarchy of `controller`.
    fn of(mountinfo: &str, cgroup: &str, controller: Option<&str>) -> Option<Hierarchy> {
        let (root, mount) = mountinfo
            .lines()
            .find_map(|line| cgroup_mount(line, controller))?;
        let path = cgroup.lines().find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            let wanted = match controller {
                None => controllers.is_empty(),
                Some(name) => controllers.split(',').any(|c| c == name),
            };
            wanted.then_some(path)
        })?;
        // Inside a cgroup namespace the mount's root and the process's path are both
        // relative to the namespace; elsewhere the mount may show a subtree only, and a
        // process outside that subtree cannot see its cgroup there.
        let relative = Path::new(path).strip_prefix(root).ok()?;
        Some(Hierarchy {
            own: mount.join(relative),
            mount,
        })
    }

    /// Of the cgroups from this process's up to the mount's root, the one whose limit
    /// (`limit` of its directory, in CPUs) is the smallest (the innermost of equals), and
    /// that limit.
    fn tightest(&self, limit: impl Fn(&Path) -> Option<f64>) -> Option<(f64, &Path)> {
        self.own
            .ancestors()
            .take_while(|dir| dir.starts_with(&self.mount))
            .filter_map(|dir| Some((limit(dir)?, dir)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }
}

impl Usage {
    /// `usage_usec` (v2) and `nr_throttled` of a `cpu.stat` text, read at `at`.
    fn of(stat: &str, at: Instant) -> Usage {
        let field = |name: &str| {
            stat.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        Usage {
            at,
            used_us: field("usage_usec"),
            // Kernels without CFS bandwidth control do not count it.
            throttled: field("nr_throttled").unwrap_or(0),
        }
    }

    /// The share of a quota of `cpus` CPUs left unused since `earlier`: 0 when the cgroup
    /// was throttled in between; `None` when no time passed, or when it was not throttled
    /// and its use cannot be read.
    pub(super) fn spare_share_since(&self, earlier: &Usage, cpus: f64) -> Option<f64> {
        let elapsed = self.at.checked_duration_since(earlier.at)?.as_micros() as f64;
        if elapsed <= 0.0 || cpus <= 0.0 {
            return None;
        }
        if self.throttled > earlier.throttled {
            return Some(0.0);
        }
        let used = self.used_us?.checked_sub(earlier.used_us?)? as f64;
        Some((1.0 - used / (elapsed * cpus)).max(0.0))
    }
}

/// The root and mount point of a `/proc/self/mountinfo` line that mounts the cgroup v2
/// hierarchy (`controller` `None`) or the v1 hierarchy with `controller`.
fn cgroup_mount<'a>(line: &'a str, controller: Option<&str>) -> Option<(&'a str, PathBuf)> {
    let (fields, filesystem) = line.split_once(" - ")?;
    let mut filesystem = filesystem.split_ascii_whitespace();
    let kind = filesystem.next()?;
    let options = filesystem.nth(1).unwrap_or("");
    let wanted = match controller {
        None => kind == "cgroup2",
        Some(name) => kind == "cgroup" && options.split(',').any(|o| o == name),
    };
    if !wanted {
        return None;
    }
    let mut fields = fields.split_ascii_whitespace().skip(3);
    let root = fields.next()?;
    let mount = fields.next()?;
    Some((root, PathBuf::from(mount)))
}

/// The CPUs a `cpu.max` text (`$MAX $PERIOD`) allows; `None` for `max` (no limit).
fn cpus_of_max(max: &str) -> Option<f64> {
    let mut words = max.split_ascii_whitespace();
    let quota: u64 = words.next()?.parse().ok()?;
    let period: u64 = words.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";

    /// A hybrid host: v1 controllers, and an empty v2 hierarchy beside them.
    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_string()))
            .collect();
        move |path| map.get(path).cloned()
    }

    #[test]
    fn the_tightest_limit_on_the_way_up_binds() {
        let cgroup = "0::/kubepods/pod1/container\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/kubepods/pod1/container/cpu.max",
                "max 100000\n",
            ),
            ("/sys/fs/cgroup/kubepods/pod1/cpu.max", "50000 100000\n"),
            ("/sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n"),
        ]);
        assert_eq!(
            Quota::find(MOUNTINFO, cgroup, read),
            Some(Quota {
                cpus: 0.5,
                stat: PathBuf::from("/sys/fs/cgroup/kubepods/pod1/cpu.stat"),
                cpuacct: None,
            })
        );
    }

    #[test]
    fn a_v1_quota_is_read_with_its_cpuacct_usage() {
        let cgroup = "3:cpuset:/\n2:cpuacct:/jobs/proxy\n1:cpu:/jobs/proxy\n0::/\n";
        let read = files(&[
            ("/sys/fs/cgroup/cpu/jobs/proxy/cpu.cfs_quota_us", "-1\n"),
            (
                "/sys/fs/cgroup/cpu/jobs/proxy/cpu.cfs_period_us",
                "100000\n",
            ),
            ("/sys/fs/cgroup/cpu/jobs/cpu.cfs_quota_us", "20000\n"),
            ("/sys/fs/cgroup/cpu/jobs/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(
            Quota::find(HYBRID, cgroup, read),
            Some(Quota {
                cpus: 0.2,
                stat: PathBuf::from("/sys/fs/cgroup/cpu/jobs/cpu.stat"),
                cpuacct: Some(PathBuf::from("/sys/fs/cgroup/cpuacct/jobs/cpuacct.usage")),
            })
        );
        // Comounted controllers (`cpu,cpuacct`) are one directory.
        let comounted =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let read = files(&[
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n"),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
        ]);
        let quota = Quota::find(comounted, "1:cpu,cpuacct:/\n", read).unwrap();
        assert_eq!(
            quota.cpuacct,
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage"))
        );
    }

    #[test]
    fn no_limit_is_no_quota() {
        let cgroup = "0::/user.slice\n";
        let unlimited = files(&[
            ("/sys/fs/cgroup/user.slice/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/cpu.max", "max\n"),
        ]);
        assert_eq!(Quota::find(MOUNTINFO, cgroup, unlimited), None);
        let read = files(&[
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(Quota::find(HYBRID, "1:cpu:/\n0::/\n", read), None);
        assert_eq!(
            Quota::find("", "0::/\n", files(&[])),
            None,
            "no cgroup mounts"
        );
    }

    #[test]
    fn inside_a_cgroup_namespace_the_mount_is_the_process_cgroup() {
        // A container's view: its own cgroup is the root of its mount.
        let read = files(&[("/sys/fs/cgroup/cpu.max", "150000 100000\n")]);
        let quota = Quota::find(MOUNTINFO, "0::/\n", read).unwrap();
        assert_eq!(quota.stat, PathBuf::from("/sys/fs/cgroup/cpu.stat"));
        assert!((quota.cpus() - 1.5).abs() < 1e-9);
        // A mount that shows a subtree: the process's path is relative to its root.
        let mountinfo = "35 22 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = files(&[("/sys/fs/cgroup/container/cpu.max", "20000 100000\n")]);
        let quota = Quota::find(mountinfo, "0::/kubepods/pod1/container\n", read).unwrap();
        assert_eq!(
            quota.stat,
            PathBuf::from("/sys/fs/cgroup/container/cpu.stat")
        );
        // A process outside the mounted subtree (a root that is only a prefix of its
        // path's first name is no parent) cannot see its cgroup.
        let mountinfo = "35 22 0:30 /kube /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = files(&[
            ("/sys/fs/cgroup/pods/cpu.max", "20000 100000\n"),
            ("/sys/fs/cgroup/kubepods/cpu.max", "20000 100000\n"),
        ]);
        assert_eq!(Quota::find(mountinfo, "0::/kubepods\n", read), None);
    }

    #[test]
    fn the_spare_share_is_what_the_quota_left_over_the_period() {
        let start = Instant::now();
        let stat = |used: u64, throttled: u64, after_ms: u64| {
            let text = format!(
                "usage_usec {used}\nuser_usec 1\nsystem_usec 1\nnr_periods 9\nnr_throttled {throttled}\nthrottled_usec 0\n"
            );
            Usage::of(&text, start + Duration::from_millis(after_ms))
        };
        let earlier = stat(1_000_000, 3, 0);
        // 100 ms at half a CPU allows 50 ms; 40 ms were used.
        let share = stat(1_040_000, 3, 100).spare_share_since(&earlier, 0.5);
        assert!((share.unwrap() - 0.2).abs() < 1e-9, "{share:?}");
        assert_eq!(
            stat(1_010_000, 4, 100).spare_share_since(&earlier, 0.5),
            Some(0.0),
            "throttled in between"
        );
        assert_eq!(
            stat(1_090_000, 3, 100).spare_share_since(&earlier, 0.5),
            Some(0.0)
        );
        assert_eq!(
            earlier.spare_share_since(&stat(1_040_000, 3, 100), 0.5),
            None
        );
        // v1's cpu.stat has no usage: only throttling is seen.
        let v1 = |throttled: u64, after_ms: u64| {
            let text = format!("nr_periods 9\nnr_throttled {throttled}\nthrottled_time 0\n");
            Usage::of(&text, start + Duration::from_millis(after_ms))
        };
        assert_eq!(v1(5, 100).spare_share_since(&v1(5, 0), 0.5), None);
        assert_eq!(v1(6, 100).spare_share_since(&v1(5, 0), 0.5), Some(0.0));
    }
}
