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
fn cgroup_cpu_quota() -> Option<usize> {
    let proc_self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let roots = CgroupRoots {
        v2: Path::new(CGROUP_V2_ROOT),
        v1_cpu: Path::new(CGROUP_V1_CPU_ROOT),
    };
    cgroup_cpu_quota_in(&roots, &proc_self_cgroup)
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Copy)]
struct CgroupRoots<'a> {
    /// The cgroup v2 (unified) hierarchy.
    v2: &'a Path,
    /// The cgroup v1 `cpu` controller's hierarchy.
    v1_cpu: &'a Path,
}

/// The tightest CPU quota, in whole CPUs, on the process that
/// `proc_self_cgroup` (the contents of its `/proc/self/cgroup`) places in
/// the hierarchies mounted at `roots`.
///
/// A quota on any ancestor cgroup limits this one too, so every level is
/// read. Directories that do not exist (a container that sees its own cgroup
/// as the root) are skipped, which leaves the root's file as the fallback.
fn cgroup_cpu_quota_in(roots: &CgroupRoots<'_>, proc_self_cgroup: &str) -> Option<usize> {
    let membership = parse_proc_self_cgroup(proc_self_cgroup);
    let v2 = cgroup_dirs(roots.v2, membership.unified.unwrap_or("/"))
        .into_iter()
        .filter_map(|dir| read_cgroup_v2_quota(&dir));
    let v1 = cgroup_dirs(roots.v1_cpu, membership.v1_cpu.unwrap_or("/"))
        .into_iter()
        .filter_map(|dir| read_cgroup_v1_quota(&dir));
    v2.chain(v1).min()
}

/// The quota of cgroup v2 directory `dir` (its `cpu.max`), if it has one.
fn read_cgroup_v2_quota(dir: &Path) -> Option<usize> {
    parse_cgroup_v2_cpu_max(&fs::read_to_string(dir.join("cpu.max")).ok()?)
}

/// The quota of cgroup v1 `cpu` directory `dir` (its `cpu.cfs_quota_us`
/// and `cpu.cfs_period_us`), if it has one.
fn read_cgroup_v1_quota(dir: &Path) -> Option<usize> {
    let quota = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
    let period = fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    parse_cgroup_v1_quota(&quota, &period)
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

    /// A directory tree under the system's temporary directory, removed
    /// when dropped.
    struct TempTree(PathBuf);

    impl TempTree {
        /// A fresh empty directory, named after `test` and this process.
        fn new(test: &str) -> Self {
            let root = env::temp_dir().join(format!("loky-cpu-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).expect("cannot create the temporary tree");
            TempTree(root)
        }

        /// Writes `contents` to the file at `relative`, creating its
        /// directories.
        fn write(&self, relative: &str, contents: &str) {
            let file = self.0.join(relative);
            fs::create_dir_all(file.parent().expect("a file has a parent"))
                .expect("cannot create a cgroup directory");
            fs::write(&file, contents).expect("cannot write a cgroup file");
        }

        /// The quota that `proc_self_cgroup` gives with the v2 hierarchy
        /// at `v2/` and the v1 `cpu` hierarchy at `v1/` of the tree.
        fn quota(&self, proc_self_cgroup: &str) -> Option<usize> {
            let (v2, v1_cpu) = (self.0.join("v2"), self.0.join("v1"));
            let roots = CgroupRoots {
                v2: &v2,
                v1_cpu: &v1_cpu,
            };
            cgroup_cpu_quota_in(&roots, proc_self_cgroup)
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cgroup_v2_the_tightest_level_of_the_nested_cgroups_wins() {
        let tree = TempTree::new("v2-nested");
        tree.write("v2/cpu.max", "max 100000\n");
        tree.write("v2/a/cpu.max", "400000 100000\n");
        tree.write("v2/a/b/cpu.max", "250000 100000\n");
        tree.write("v2/a/b/c/cpu.max", "800000 100000\n");
        // An ancestor tighter than the process's own cgroup limits it.
        assert_eq!(tree.quota("0::/a/b/c\n"), Some(3));
        // A process's own cgroup tighter than its ancestors.
        tree.write("v2/a/b/c/cpu.max", "150000 100000\n");
        assert_eq!(tree.quota("0::/a/b/c\n"), Some(2));
        // Levels below the process's cgroup do not count.
        assert_eq!(tree.quota("0::/a\n"), Some(4));
    }

    #[test]
    fn cgroup_v2_max_at_one_level_leaves_the_other_levels_in_force() {
        let tree = TempTree::new("v2-max");
        tree.write("v2/a/cpu.max", "300000 100000\n");
        tree.write("v2/a/b/cpu.max", "max 100000\n");
        assert_eq!(tree.quota("0::/a/b\n"), Some(3));
        tree.write("v2/a/cpu.max", "max 100000\n");
        assert_eq!(tree.quota("0::/a/b\n"), None);
    }

    #[test]
    fn cgroup_v2_levels_missing_from_the_namespace_leave_the_root_in_force() {
        let tree = TempTree::new("v2-namespace");
        tree.write("v2/cpu.max", "200000 100000\n");
        assert_eq!(tree.quota("0::/not/mounted/here\n"), Some(2));
        assert_eq!(tree.quota(""), Some(2));
    }

    #[test]
    fn cgroup_v1_quota_and_period_of_the_cpu_controller_give_the_quota() {
        let tree = TempTree::new("v1");
        let proc_self_cgroup = "4:memory:/other\n3:cpu,cpuacct:/docker/abc\n0::/\n";
        tree.write("v1/cpu.cfs_quota_us", "-1\n");
        tree.write("v1/cpu.cfs_period_us", "100000\n");
        assert_eq!(tree.quota(proc_self_cgroup), None);
        tree.write("v1/docker/abc/cpu.cfs_quota_us", "150000\n");
        tree.write("v1/docker/abc/cpu.cfs_period_us", "100000\n");
        assert_eq!(tree.quota(proc_self_cgroup), Some(2));
        // A quota without its period is no quota.
        tree.write("v1/other/cpu.cfs_quota_us", "100000\n");
        assert_eq!(tree.quota("3:cpu:/other\n"), None);
    }

    #[test]
    fn cgroup_v1_and_v2_quotas_together_the_smaller_wins() {
        let tree = TempTree::new("v1-and-v2");
        tree.write("v2/cpu.max", "300000 100000\n");
        tree.write("v1/cpu.cfs_quota_us", "100000\n");
        tree.write("v1/cpu.cfs_period_us", "100000\n");
        assert_eq!(tree.quota("3:cpu:/\n0::/\n"), Some(1));
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
