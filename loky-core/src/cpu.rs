//! How many CPUs this process may really use: loky's `cpu_count`.
//!
//! The machine's CPU count overstates what a pool can use inside a container
//! or under `taskset`, so the usable count is the smallest of:
//!
//! - the online logical CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`, or
//!   [`std::thread::available_parallelism`] where `sysconf` is unavailable);
//! - the CPUs in the calling thread's affinity mask (`sched_getaffinity`, Linux);
//! - the cgroup CPU bandwidth quota rounded up: cgroup v2 `cpu.max` of this
//!   process's cgroup and its ancestors, cgroup v1 `cpu.cfs_quota_us` /
//!   `cpu.cfs_period_us`; `max`, negative, zero or malformed values mean no limit;
//! - `LOKY_MAX_CPU_COUNT`, when it holds a positive integer.
//!
//! and never less than 1. Parsing is done by pure functions over file
//! contents, so every format is unit-tested from fixtures; the readers of
//! the real files are thin.

use std::collections::HashSet;
use std::ffi::c_ulong;
use std::path::{Component, Path, PathBuf};
use std::{env, fs};

/// Environment variable that caps [`cpu_count`], as in loky.
const MAX_CPU_COUNT_ENV: &str = "LOKY_MAX_CPU_COUNT";
/// Mount point of the cgroup v2 (unified) hierarchy.
const CGROUP_V2_ROOT: &str = "/sys/fs/cgroup";
/// Mount point of the cgroup v1 `cpu` controller.
const CGROUP_V1_CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

/// Returns the number of CPUs this process can use, at least 1.
///
/// This is loky's `cpu_count()`: the smallest of the online logical CPUs, the
/// CPUs in the calling thread's affinity mask, the cgroup CPU quota rounded
/// up (a quota of 1.5 CPUs gives 2) and the `LOKY_MAX_CPU_COUNT` environment
/// variable. `LOKY_MAX_CPU_COUNT` only counts when it is a positive integer
/// (surrounding whitespace allowed); zero, negative or malformed values are
/// ignored, where loky would raise. Limits that cannot be read (no cgroup,
/// non-Linux platform) impose nothing.
///
/// The value is computed afresh on each call, so it follows changes to the
/// affinity mask, the cgroup or the environment.
///
/// # Examples
///
/// ```
/// let workers = loky_core::cpu_count();
/// assert!(workers >= 1);
/// ```
pub fn cpu_count() -> usize {
    CpuLimits::current().usable()
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
/// let cores = loky_core::cpu_count_physical();
/// assert!(cores >= 1);
/// assert!(cores <= loky_core::cpu_count());
/// ```
pub fn cpu_count_physical() -> usize {
    let usable = cpu_count();
    let affinity = affinity();
    let allowed = |cpu: usize| affinity.as_ref().is_none_or(|set| set.contains(cpu));
    let cores = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|contents| parse_cpuinfo_physical_cores(&contents, &allowed));
    cores.map_or(usable, |cores| cores.min(usable)).max(1)
}

/// The limits that together decide [`cpu_count`]; `None` is "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuLimits {
    /// Online logical CPUs of the machine.
    logical: usize,
    /// CPUs in the affinity mask.
    affinity: Option<usize>,
    /// cgroup CPU quota, rounded up to whole CPUs.
    cgroup_quota: Option<usize>,
    /// The user's cap from `LOKY_MAX_CPU_COUNT`.
    user: Option<usize>,
}

impl CpuLimits {
    /// Reads every limit from the running system.
    fn current() -> Self {
        let user = env::var(MAX_CPU_COUNT_ENV).ok();
        CpuLimits {
            logical: logical_cpus(),
            affinity: affinity().map(|set| set.count()),
            cgroup_quota: cgroup_cpu_quota(),
            user: parse_max_cpu_count(user.as_deref()),
        }
    }

    /// The smallest limit, at least 1.
    fn usable(self) -> usize {
        [self.affinity, self.cgroup_quota, self.user]
            .into_iter()
            .flatten()
            .fold(self.logical, usize::min)
            .max(1)
    }
}

/// Parses `LOKY_MAX_CPU_COUNT`: a positive integer, otherwise no limit.
fn parse_max_cpu_count(value: Option<&str>) -> Option<usize> {
    value?.trim().parse().ok().filter(|&n: &usize| n > 0)
}

/// Parses a cgroup v2 `cpu.max` file (`"$QUOTA $PERIOD"`, quota may be `max`)
/// into whole CPUs, rounded up; `None` when unlimited or malformed.
fn parse_cgroup_v2_cpu_max(contents: &str) -> Option<usize> {
    let mut fields = contents.split_whitespace();
    let (quota, period) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    quota_to_cpus(quota, period)
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` contents into
/// whole CPUs, rounded up; `None` when unlimited (quota `-1`) or malformed.
fn parse_cgroup_v1_quota(quota: &str, period: &str) -> Option<usize> {
    quota_to_cpus(quota.trim(), period.trim())
}

/// `ceil(quota / period)` for positive integers; anything else (`max`,
/// negative, zero, garbage) means no limit.
fn quota_to_cpus(quota: &str, period: &str) -> Option<usize> {
    let quota: u64 = quota.parse().ok().filter(|&q| q > 0)?;
    let period: u64 = period.parse().ok().filter(|&p| p > 0)?;
    Some(usize::try_from(quota.div_ceil(period)).unwrap_or(usize::MAX))
}

/// Where `/proc/self/cgroup` places this process.
#[derive(Debug, Default, PartialEq, Eq)]
struct CgroupMembership<'a> {
    /// Path in the cgroup v2 hierarchy (the `0::` line).
    unified: Option<&'a str>,
    /// Path in the cgroup v1 hierarchy that holds the `cpu` controller.
    v1_cpu: Option<&'a str>,
}

/// Parses `/proc/self/cgroup` (`hierarchy-id:controllers:path` lines).
fn parse_proc_self_cgroup(contents: &str) -> CgroupMembership<'_> {
    let mut membership = CgroupMembership::default();
    for line in contents.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            membership.unified = Some(path);
        } else if controllers.split(',').any(|c| c == "cpu") {
            membership.v1_cpu = Some(path);
        }
    }
    membership
}

/// The directories of `cgroup` and all its ancestors under the hierarchy
/// mounted at `root`, root first. A path that leaves the hierarchy (`..`,
/// seen from inside a cgroup namespace) yields only `root`.
fn cgroup_dirs(root: &Path, cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut dir = root.to_path_buf();
    for component in Path::new(cgroup).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                dir.push(name);
                dirs.push(dir.clone());
            }
            Component::ParentDir | Component::Prefix(_) => return vec![root.to_path_buf()],
        }
    }
    dirs
}

/// The tightest cgroup CPU quota on this process, v2 and v1, in whole CPUs.
///
/// A quota on any ancestor cgroup limits this one too, so every level is
/// read. Directories that do not exist (a container that sees its own cgroup
/// as the root) are skipped, which leaves the root's file as the fallback.
fn cgroup_cpu_quota() -> Option<usize> {
    let contents = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let membership = parse_proc_self_cgroup(&contents);
    let v2 = cgroup_dirs(Path::new(CGROUP_V2_ROOT), membership.unified.unwrap_or("/"))
        .into_iter()
        .filter_map(|dir| parse_cgroup_v2_cpu_max(&fs::read_to_string(dir.join("cpu.max")).ok()?));
    let v1 = cgroup_dirs(
        Path::new(CGROUP_V1_CPU_ROOT),
        membership.v1_cpu.unwrap_or("/"),
    )
    .into_iter()
    .filter_map(|dir| {
        let quota = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
        let period = fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
        parse_cgroup_v1_quota(&quota, &period)
    });
    v2.chain(v1).min()
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

/// A CPU affinity mask as the kernel writes it: bit `n` of the mask is bit
/// `n % BITS` of word `n / BITS`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpuSet {
    /// The mask, in the kernel's `unsigned long` units.
    words: Vec<c_ulong>,
}

impl CpuSet {
    /// Bits per word of the mask.
    const BITS: usize = c_ulong::BITS as usize;

    /// Whether CPU number `cpu` is in the set.
    fn contains(&self, cpu: usize) -> bool {
        self.words
            .get(cpu / Self::BITS)
            .is_some_and(|word| (word >> (cpu % Self::BITS)) & 1 == 1)
    }

    /// Number of CPUs in the set.
    fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }
}

/// Online logical CPUs of the machine, at least 1.
fn logical_cpus() -> usize {
    online_cpus()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`, which (unlike `available_parallelism`)
/// ignores affinity and cgroups: those are separate limits here.
#[cfg(unix)]
fn online_cpus() -> Option<usize> {
    // SAFETY: sysconf takes a plain integer name, touches no memory of ours
    // and reports an unsupported name as -1, which try_from rejects.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(count).ok().filter(|&n| n > 0)
}

/// No `sysconf`: the caller falls back to `available_parallelism`.
#[cfg(not(unix))]
fn online_cpus() -> Option<usize> {
    None
}

/// The calling thread's affinity mask, or `None` when it cannot be read.
///
/// Starts with room for 1024 CPUs (glibc's `cpu_set_t`) and doubles on
/// `EINVAL`, which the kernel returns when the buffer is smaller than its
/// own CPU mask, so machines with more CPUs are counted right too.
#[cfg(target_os = "linux")]
fn affinity() -> Option<CpuSet> {
    /// Give up beyond 2^20 CPUs: a larger mask is not a real machine.
    const MAX_WORDS: usize = (1 << 20) / CpuSet::BITS;
    let mut words: Vec<c_ulong> = vec![0; 1024 / CpuSet::BITS];
    loop {
        let size = std::mem::size_of_val(words.as_slice());
        // SAFETY: `words` is a live, writable, `c_ulong`-aligned buffer of
        // exactly `size` bytes, and the kernel's mask is an array of
        // `unsigned long`, so it is a valid destination for `size` bytes of
        // mask; sched_getaffinity writes no more than `size` bytes and keeps
        // no pointer. pid 0 is the calling thread.
        let rc = unsafe {
            libc::sched_getaffinity(0, size, words.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if rc == 0 {
            return Some(CpuSet { words });
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINVAL) || words.len() >= MAX_WORDS {
            return None;
        }
        words.resize(words.len() * 2, 0);
    }
}

/// No affinity API here: no limit.
#[cfg(not(target_os = "linux"))]
fn affinity() -> Option<CpuSet> {
    None
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

    fn limits(logical: usize) -> CpuLimits {
        CpuLimits {
            logical,
            affinity: None,
            cgroup_quota: None,
            user: None,
        }
    }

    #[test]
    fn cgroup_v2_max_is_unlimited() {
        assert_eq!(parse_cgroup_v2_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cgroup_v2_cpu_max("max"), None);
    }

    #[test]
    fn cgroup_v2_quota_rounds_up() {
        assert_eq!(parse_cgroup_v2_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("50000 100000\n"), Some(1));
        assert_eq!(parse_cgroup_v2_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("1000 100000"), Some(1));
    }

    #[test]
    fn cgroup_v2_malformed_is_unlimited() {
        for contents in [
            "",
            "\n",
            "garbage",
            "lots of garbage here",
            "150000",
            "-1 100000",
            "150000 -100000",
            "0 100000",
            "150000 0",
            "1.5 1",
            "150000 100000 7",
        ] {
            assert_eq!(parse_cgroup_v2_cpu_max(contents), None, "{contents:?}");
        }
    }

    #[test]
    fn cgroup_v1_quota() {
        assert_eq!(parse_cgroup_v1_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cgroup_v1_quota("150000\n", "100000\n"), Some(2));
        assert_eq!(parse_cgroup_v1_quota("50000\n", "100000\n"), Some(1));
        assert_eq!(parse_cgroup_v1_quota("400000\n", "100000\n"), Some(4));
        assert_eq!(parse_cgroup_v1_quota("", "100000"), None);
        assert_eq!(parse_cgroup_v1_quota("150000", "garbage"), None);
        assert_eq!(parse_cgroup_v1_quota("150000", "0"), None);
    }

    #[test]
    fn proc_self_cgroup_v2_only() {
        let membership = parse_proc_self_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n");
        assert_eq!(
            membership.unified,
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(membership.v1_cpu, None);
    }

    #[test]
    fn proc_self_cgroup_hybrid() {
        let contents =
            "12:pids:/\n4:memory:/a\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n0::/\n";
        let membership = parse_proc_self_cgroup(contents);
        assert_eq!(membership.unified, Some("/"));
        assert_eq!(membership.v1_cpu, Some("/docker/abc"));
        assert_eq!(
            parse_proc_self_cgroup("3:cpuacct:/x\n"),
            CgroupMembership::default()
        );
        assert_eq!(
            parse_proc_self_cgroup("garbage\n\n"),
            CgroupMembership::default()
        );
    }

    #[test]
    fn cgroup_dirs_walk_up_to_root() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_dirs(root, "/"), [root]);
        assert_eq!(
            cgroup_dirs(root, "/a/b"),
            [root.to_path_buf(), root.join("a"), root.join("a/b")]
        );
        assert_eq!(cgroup_dirs(root, "/../../outside"), [root]);
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
    fn max_cpu_count_env() {
        assert_eq!(parse_max_cpu_count(None), None);
        assert_eq!(parse_max_cpu_count(Some("3")), Some(3));
        assert_eq!(parse_max_cpu_count(Some(" 3\n")), Some(3));
        for ignored in ["", "0", "-2", "two", "1.5", "99999999999999999999999"] {
            assert_eq!(parse_max_cpu_count(Some(ignored)), None, "{ignored:?}");
        }
    }

    #[test]
    fn usable_is_the_smallest_limit() {
        assert_eq!(limits(8).usable(), 8);
        assert_eq!(
            CpuLimits {
                affinity: Some(6),
                ..limits(8)
            }
            .usable(),
            6
        );
        assert_eq!(
            CpuLimits {
                affinity: Some(6),
                cgroup_quota: Some(2),
                ..limits(8)
            }
            .usable(),
            2
        );
        let capped = CpuLimits {
            affinity: Some(6),
            cgroup_quota: Some(4),
            ..limits(8)
        };
        assert_eq!(
            CpuLimits {
                user: parse_max_cpu_count(Some("3")),
                ..capped
            }
            .usable(),
            3
        );
        // A cap above the other limits changes nothing; an ignored one neither.
        assert_eq!(
            CpuLimits {
                user: parse_max_cpu_count(Some("64")),
                ..capped
            }
            .usable(),
            4
        );
        assert_eq!(
            CpuLimits {
                user: parse_max_cpu_count(Some("0")),
                ..capped
            }
            .usable(),
            4
        );
    }

    #[test]
    fn usable_is_at_least_one() {
        assert_eq!(limits(0).usable(), 1);
        assert_eq!(
            CpuLimits {
                affinity: Some(0),
                ..limits(4)
            }
            .usable(),
            1
        );
    }

    #[test]
    fn cpu_set_bits() {
        let bits = CpuSet::BITS;
        let set = CpuSet {
            words: vec![0b1010, 1],
        };
        assert!(set.contains(1) && set.contains(3) && set.contains(bits));
        assert!(!set.contains(0) && !set.contains(2) && !set.contains(bits + 1));
        assert!(!set.contains(10 * bits));
        assert_eq!(set.count(), 3);
    }

    #[test]
    fn live_counts_are_consistent() {
        let usable = cpu_count();
        assert!(usable >= 1);
        assert!(usable <= logical_cpus());
        let cores = cpu_count_physical();
        assert!((1..=usable).contains(&cores));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn live_affinity_is_readable() {
        let set = affinity().expect("sched_getaffinity works on Linux");
        assert!(set.count() >= 1);
    }
}
