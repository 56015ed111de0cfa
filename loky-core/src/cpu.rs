//! How many CPUs this process may really use: loky's `cpu_count`.
//!
//! [`std::thread::available_parallelism`] already honours the affinity mask
//! and the cgroup CPU quota (v1 and v2, every level of the hierarchy). What
//! loky adds on top, and this module keeps, is the user's cap
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
/// This is loky's `cpu_count()`: [`std::thread::available_parallelism`]
/// (the online CPUs, the calling thread's affinity mask and the cgroup CPU
/// quota), capped by the `LOKY_MAX_CPU_COUNT` environment variable. As in
/// loky, the result is never less than 1: `LOKY_MAX_CPU_COUNT=0` or a
/// negative value gives 1. A value that is not an integer (surrounding
/// whitespace is allowed) is ignored, where loky raises `ValueError`.
///
/// One difference with loky: a fractional cgroup quota is rounded down by
/// the standard library (a quota of 1.5 CPUs gives 1) where loky rounds it
/// up.
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
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let user = env::var(MAX_CPU_COUNT_ENV).ok();
    usable(available, parse_max_cpu_count(user.as_deref()))
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
