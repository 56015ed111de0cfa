//! How many CPUs this process may really use: loky's `cpu_count`.
//!
//! [`std::thread::available_parallelism`] honours the affinity mask and the
//! cgroup CPU quota (v1 and v2, every level of the hierarchy), but rounds a
//! fractional quota down where loky rounds it up; this module reads the
//! quota itself to round it as loky does, and adds the user's cap
//! `LOKY_MAX_CPU_COUNT` and the count of physical cores within the affinity
//! mask. Parsing is done by pure functions over file contents, so every
//! format is unit-tested from fixtures; the readers of the real files are
//! thin.

use std::collections::HashSet;
use std::{env, fs};

/// Environment variable that caps [`cpu_count`], as in loky.
const MAX_CPU_COUNT_ENV: &str = "LOKY_MAX_CPU_COUNT";

/// Returns the number of CPUs this process can use, at least 1.
///
/// This is loky's `cpu_count()`: the CPUs of the calling thread's affinity
/// mask, at most the cgroup CPU quota rounded up (a quota of 1.5 CPUs gives
/// 2; v1 or v2, the smallest along the process's cgroup hierarchy), capped
/// by the `LOKY_MAX_CPU_COUNT` environment variable. As in loky, the result
/// is never less than one: `LOKY_MAX_CPU_COUNT=0` or a negative value gives
/// one CPU. A value that is not an integer (surrounding whitespace is
/// allowed) is ignored, where loky raises `ValueError`. Where the quota
/// cannot be read, [`std::thread::available_parallelism`] stands for the
/// mask and the quota (it rounds a fractional quota down).
///
/// The value is computed afresh on each call, so it follows changes to the
/// affinity mask, the cgroup or the environment.
///
/// # Examples
///
/// ```
/// let workers = loky::cpu_count();
/// assert!(workers >= 1);
/// ```
pub fn cpu_count() -> usize {
    let std_count = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available = match (affinity_count(), cgroup_quota()) {
        (Some(allowed), Some(quota)) => within_quota(allowed, quota),
        _ => std_count,
    };
    let user = env::var(MAX_CPU_COUNT_ENV).ok();
    usable(available, parse_max_cpu_count(user.as_deref()))
}

/// [`cpu_count`] as first counted in this process: for the executor's
/// own decisions on the way of a call, where counting again (several
/// files read, some 200 µs) would cost more than the decision is worth.
pub(crate) fn process_cpu_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(cpu_count)
}

/// loky's `min(CPUs allowed, ceil(quota))`, `quota` in CPUs.
fn within_quota(allowed: usize, quota: f64) -> usize {
    // A quota is at most a few thousand CPUs: the conversion is exact.
    let ceiling = quota.ceil() as usize;
    allowed.min(ceiling.max(1))
}

/// How many CPUs the calling thread's affinity mask holds.
#[cfg(target_os = "linux")]
fn affinity_count() -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set, and the call
    // writes at most its size into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return None;
        }
        set
    };
    // SAFETY: `set` was filled by sched_getaffinity above.
    let count = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(count).ok().filter(|&n| n > 0)
}

#[cfg(not(target_os = "linux"))]
fn affinity_count() -> Option<usize> {
    None
}

/// The smallest CPU quota along this process's cgroup hierarchy, in CPUs
/// (`quota / period`); `None` where there is none, or it cannot be read.
fn cgroup_quota() -> Option<f64> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    quota_dirs(&cgroups, &mountinfo)
        .into_iter()
        .filter_map(|(version, dir)| {
            let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
            match version {
                Cgroup::V2 => parse_cpu_max(&read("cpu.max")?),
                Cgroup::V1 => {
                    parse_cfs_quota(&read("cpu.cfs_quota_us")?, &read("cpu.cfs_period_us")?)
                }
            }
        })
        .reduce(f64::min)
}

/// Which cgroup hierarchy a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cgroup {
    /// Unified: `cpu.max`.
    V2,
    /// The v1 `cpu` controller: `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1,
}

/// The directories that may hold this process's CPU quota: its cgroup and
/// each parent up to the root of the mount, for the unified hierarchy and
/// for a v1 `cpu` controller, from `/proc/self/cgroup` (`cgroups`) and
/// `/proc/self/mountinfo` (`mountinfo`).
fn quota_dirs(cgroups: &str, mountinfo: &str) -> Vec<(Cgroup, std::path::PathBuf)> {
    let mut dirs = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let version = if controllers.is_empty() {
            Cgroup::V2
        } else if controllers.split(',').any(|c| c == "cpu") {
            Cgroup::V1
        } else {
            continue;
        };
        let Some((root, mount)) = mount_of(mountinfo, version) else {
            continue;
        };
        // The path is the cgroup's within the whole hierarchy; the mount
        // shows the hierarchy from `root` on.
        let Ok(within) = std::path::Path::new(path).strip_prefix(root) else {
            continue;
        };
        let mut dir = std::path::Path::new(mount).join(within);
        loop {
            dirs.push((version, dir.clone()));
            if dir == std::path::Path::new(mount) || !dir.pop() {
                break;
            }
        }
    }
    dirs
}

/// The root and mount point of the cgroup hierarchy of `version` in
/// `/proc/self/mountinfo`'s `contents`.
fn mount_of(contents: &str, version: Cgroup) -> Option<(&str, &str)> {
    contents.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut mount = mount.split(' ');
        let (root, point) = (mount.nth(3)?, mount.next()?);
        let mut fs = fs.split(' ');
        let (fstype, options) = (fs.next()?, fs.nth(1)?);
        let matches = match version {
            Cgroup::V2 => fstype == "cgroup2",
            Cgroup::V1 => fstype == "cgroup" && options.split(',').any(|o| o == "cpu"),
        };
        matches.then_some((root, point))
    })
}

/// A cgroup v2 `cpu.max` ("quota period", or "max period"), in CPUs.
fn parse_cpu_max(contents: &str) -> Option<f64> {
    let (quota, period) = contents.trim().split_once(' ')?;
    quota_in_cpus(quota.parse().ok()?, period.trim().parse().ok()?)
}

/// A cgroup v1 quota (`-1`: none) and period, in CPUs.
fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    quota_in_cpus(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

fn quota_in_cpus(quota: i64, period: i64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Returns the number of physical cores this process can use, at least 1.
///
/// Counts the distinct (`physical id`, `core id`) pairs in `/proc/cpuinfo`
/// among the CPUs of the calling thread's affinity mask, so SMT siblings
/// count once. The result never exceeds [`cpu_count`], so cgroup quotas and
/// `LOKY_MAX_CPU_COUNT` apply too. Where the topology is unknown (not Linux,
/// or a `/proc/cpuinfo` without `physical id`/`core id`, as on many ARM
/// machines and some VMs) it returns [`cpu_count`].
///
/// # Examples
///
/// ```
/// let cores = loky::cpu_count_physical();
/// assert!(cores >= 1);
/// assert!(cores <= loky::cpu_count());
/// ```
pub fn cpu_count_physical() -> usize {
    let usable = cpu_count();
    let affinity = fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| parse_cpus_allowed(&status));
    let allowed = |cpu: usize| affinity.as_ref().is_none_or(|set| set.contains(&cpu));
    let cores = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|contents| parse_cpuinfo_physical_cores(&contents, &allowed));
    cores.map_or(usable, |cores| cores.min(usable)).max(1)
}

/// `LOKY_MAX_CPU_COUNT` as loky reads it: an integer, possibly zero or
/// negative; `None` when unset or not an integer.
fn parse_max_cpu_count(value: Option<&str>) -> Option<i64> {
    value?.trim().parse().ok()
}

/// loky's `max(1, min(available, user cap))`.
fn usable(available: usize, user: Option<i64>) -> usize {
    let capped = match user {
        Some(cap) => usize::try_from(cap).map_or(0, |cap| available.min(cap)),
        None => available,
    };
    capped.max(1)
}

/// The CPUs of the `Cpus_allowed_list` line of a `/proc/<pid>/status` file
/// (the affinity mask, as ranges such as `0-3,8-11`); `None` when the line
/// is missing or malformed.
fn parse_cpus_allowed(status: &str) -> Option<HashSet<usize>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = HashSet::new();
    for range in list.split(',').filter(|r| !r.is_empty()) {
        let (first, last): (usize, usize) = match range.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = range.parse().ok()?;
                (cpu, cpu)
            }
        };
        if first > last {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus).filter(|cpus| !cpus.is_empty())
}

/// Counts the distinct (`physical id`, `core id`) pairs in `/proc/cpuinfo`
/// `contents` among the processors for which `allowed` holds.
///
/// `None` when the topology is unknown: an allowed processor without both
/// ids, an unreadable processor number, or no allowed processor at all.
/// Blocks without a `processor` line (ARM's trailing `Hardware` block) are
/// not CPUs and are skipped.
fn parse_cpuinfo_physical_cores(contents: &str, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut cores = HashSet::new();
    for block in contents.split("\n\n") {
        let mut processor = None;
        let mut physical_id = None;
        let mut core_id = None;
        for (key, value) in block.lines().filter_map(|line| line.split_once(':')) {
            match key.trim() {
                "processor" => processor = Some(value.trim()),
                "physical id" => physical_id = Some(value.trim()),
                "core id" => core_id = Some(value.trim()),
                _ => {}
            }
        }
        let Some(processor) = processor else { continue };
        if allowed(processor.parse().ok()?) {
            cores.insert((physical_id?, core_id?));
        }
    }
    Some(cores.len()).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_1SOCKET_4CORE_SMT: &str =
        include_str!("cpu/fixtures/cpuinfo-1socket-4core-smt.txt");
    const CPUINFO_2SOCKET_2CORE_SMT: &str =
        include_str!("cpu/fixtures/cpuinfo-2socket-2core-smt.txt");
    const CPUINFO_ARM_NO_TOPOLOGY: &str = include_str!("cpu/fixtures/cpuinfo-arm-no-topology.txt");

    fn any_cpu(_: usize) -> bool {
        true
    }

    #[test]
    fn physical_cores_one_socket_with_smt() {
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_1SOCKET_4CORE_SMT, &any_cpu),
            Some(4)
        );
    }

    #[test]
    fn physical_cores_two_sockets_with_smt() {
        // Core ids repeat on each socket: only the pair identifies a core.
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_2SOCKET_2CORE_SMT, &any_cpu),
            Some(4)
        );
    }

    #[test]
    fn physical_cores_affinity_on_smt_siblings_of_one_core() {
        let siblings = |cpu: usize| cpu == 1 || cpu == 5;
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_1SOCKET_4CORE_SMT, &siblings),
            Some(1)
        );
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_2SOCKET_2CORE_SMT, &siblings),
            Some(1)
        );
        let one_per_socket = |cpu: usize| cpu == 0 || cpu == 6;
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_2SOCKET_2CORE_SMT, &one_per_socket),
            Some(2)
        );
    }

    #[test]
    fn physical_cores_unknown_topology() {
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_ARM_NO_TOPOLOGY, &any_cpu),
            None
        );
        assert_eq!(parse_cpuinfo_physical_cores("", &any_cpu), None);
        assert_eq!(
            parse_cpuinfo_physical_cores(CPUINFO_1SOCKET_4CORE_SMT, &|cpu| cpu > 64),
            None
        );
        let partial = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\n";
        assert_eq!(parse_cpuinfo_physical_cores(partial, &any_cpu), None);
        assert_eq!(
            parse_cpuinfo_physical_cores(partial, &|cpu| cpu == 0),
            Some(1)
        );
    }

    #[test]
    fn cpus_allowed_list() {
        let status =
            "Name:\tx\nCpus_allowed:\tff\nCpus_allowed_list:\t0-2,5,7-8\nMems_allowed:\t1\n";
        let cpus = parse_cpus_allowed(status).unwrap();
        let mut cpus: Vec<_> = cpus.into_iter().collect();
        cpus.sort_unstable();
        assert_eq!(cpus, [0, 1, 2, 5, 7, 8]);
        for bad in ["", "Cpus_allowed_list:\t\n", "Cpus_allowed_list:\t3-1\n"] {
            assert_eq!(parse_cpus_allowed(bad), None, "{bad:?}");
        }
        assert_eq!(parse_cpus_allowed("Cpus_allowed_list:\tx-2\n"), None);
    }

    #[test]
    fn a_fractional_quota_is_rounded_up_as_loky_does() {
        assert_eq!(within_quota(8, 1.5), 2);
        assert_eq!(within_quota(8, 2.0), 2);
        assert_eq!(within_quota(8, 0.25), 1);
        assert_eq!(within_quota(2, 3.5), 2);
    }

    #[test]
    fn cpu_max_and_cfs_quota() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("-1 100000"), None);
        assert_eq!(parse_cfs_quota("250000\n", "100000\n"), Some(2.5));
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("50000", "0"), None);
        assert_eq!(parse_cfs_quota("x", "100000"), None);
    }

    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn quota_dirs_of_a_v1_cpu_controller_go_up_to_the_mount() {
        let cgroups = "4:memory:/job\n2:cpu,cpuacct:/batch/job7\n0::/\n";
        let dirs = quota_dirs(cgroups, MOUNTINFO_V1);
        let expected = [
            (Cgroup::V1, "/sys/fs/cgroup/cpu,cpuacct/batch/job7"),
            (Cgroup::V1, "/sys/fs/cgroup/cpu,cpuacct/batch"),
            (Cgroup::V1, "/sys/fs/cgroup/cpu,cpuacct"),
            (Cgroup::V2, "/sys/fs/cgroup/unified"),
        ];
        let expected: Vec<_> = expected.iter().map(|(v, d)| (*v, d.into())).collect();
        assert_eq!(dirs, expected);
    }

    #[test]
    fn quota_dirs_in_a_container_start_at_the_mount_root() {
        // A container's cgroup namespace: its cgroup is the root it sees.
        let mountinfo = "1290 1279 0:27 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            quota_dirs("0::/\n", mountinfo),
            [(Cgroup::V2, "/sys/fs/cgroup".into())]
        );
        // Without a namespace: the mount shows the hierarchy from its root.
        let mountinfo = "25 20 0:22 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            quota_dirs("0::/docker/abc/inner\n", mountinfo),
            [
                (Cgroup::V2, "/sys/fs/cgroup/inner".into()),
                (Cgroup::V2, "/sys/fs/cgroup".into())
            ]
        );
        // A cgroup outside the mounted part, or no mount: nothing to read.
        assert_eq!(quota_dirs("0::/elsewhere\n", mountinfo), []);
        assert_eq!(quota_dirs("0::/\n", ""), []);
    }

    #[test]
    fn max_cpu_count_env() {
        assert_eq!(parse_max_cpu_count(None), None);
        assert_eq!(parse_max_cpu_count(Some("3")), Some(3));
        assert_eq!(parse_max_cpu_count(Some(" 3\n")), Some(3));
        assert_eq!(parse_max_cpu_count(Some("0")), Some(0));
        assert_eq!(parse_max_cpu_count(Some("-2")), Some(-2));
        for ignored in ["", "two", "1.5", "99999999999999999999999"] {
            assert_eq!(parse_max_cpu_count(Some(ignored)), None, "{ignored:?}");
        }
    }

    #[test]
    fn the_user_cap_applies_and_the_count_is_at_least_one() {
        assert_eq!(usable(8, None), 8);
        assert_eq!(usable(8, Some(3)), 3);
        assert_eq!(usable(8, Some(64)), 8);
        // loky's max(1, ...): zero and negative caps give one CPU.
        assert_eq!(usable(8, Some(0)), 1);
        assert_eq!(usable(8, Some(-2)), 1);
        assert_eq!(usable(8, Some(i64::MIN)), 1);
        assert_eq!(usable(0, None), 1);
    }

    #[test]
    fn live_counts_are_consistent() {
        let usable = cpu_count();
        assert!(usable >= 1);
        let cores = cpu_count_physical();
        assert!((1..=usable).contains(&cores));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn live_affinity_is_readable() {
        let status = fs::read_to_string("/proc/thread-self/status").unwrap();
        let cpus = parse_cpus_allowed(&status).expect("Linux lists the allowed CPUs");
        assert!(cpus.len() >= std::thread::available_parallelism().unwrap().get());
    }
}
