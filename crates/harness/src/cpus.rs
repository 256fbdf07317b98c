//! Which CPUs a pinned measurement uses, and pinning a thread to one of them.
//!
//! Two threads on SMT siblings (hyperthreads of one physical core) share the core's execution
//! units and first-level caches, so each runs slower than on a core of its own, by an amount
//! that depends on what the other does. The measurement's threads therefore take one CPU per
//! physical core first, in CPU order, and siblings only once every core has one thread. The
//! physical core of a CPU is read from `/sys/devices/system/cpu/cpuN/topology/
//! thread_siblings_list` (the lowest CPU of the list names the core); a CPU whose list cannot be
//! read counts as a core of its own.

use std::io;

/// Pins the calling thread to one CPU. The harness uses [`pin_current_thread`]; tests inject
/// failures.
pub type CpuPinner = fn(usize) -> io::Result<()>;

/// Pins the calling thread to `cpu` alone (`sched_setaffinity`).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// CPUs this process may run on, in CPU order (`sched_getaffinity`); empty if unknown.
pub fn allowed_cpus() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// The physical core of `cpu` as the lowest CPU of its `thread_siblings_list`; `None` where
/// the file cannot be read or parsed.
pub fn core_of(cpu: usize) -> Option<usize> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    let list = std::fs::read_to_string(path).ok()?;
    parse_cpu_list(&list)?.into_iter().min()
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let list = list.trim();
    if list.is_empty() {
        return Some(Vec::new());
    }
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (usize, usize) = (from.parse().ok()?, to.parse().ok()?);
                if from > to {
                    return None;
                }
                cpus.extend(from..=to);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// `allowed` reordered so that every physical core's first CPU comes before any second
/// sibling: one CPU per core in CPU order, then the second CPU of each core, and so on.
/// `core_of` names each CPU's core (`None`: a core of its own).
pub fn spread_over_cores(
    allowed: &[usize],
    core_of: impl Fn(usize) -> Option<usize>,
) -> Vec<usize> {
    let mut rank_in_core: Vec<(usize, usize)> = Vec::with_capacity(allowed.len());
    let mut seen: Vec<(usize, usize)> = Vec::new();
    for &cpu in allowed {
        let core = core_of(cpu).unwrap_or(cpu);
        let rank = match seen.iter_mut().find(|(c, _)| *c == core) {
            Some((_, count)) => {
                *count += 1;
                *count - 1
            }
            None => {
                seen.push((core, 1));
                0
            }
        };
        rank_in_core.push((rank, cpu));
    }
    // Stable: within a rank, CPU order.
    rank_in_core.sort_by_key(|&(rank, _)| rank);
    rank_in_core.into_iter().map(|(_, cpu)| cpu).collect()
}

/// The CPUs for `n` pinned threads on this machine: [`spread_over_cores`] of the allowed
/// CPUs, the first `n`; `None` when fewer than `n` are allowed.
pub fn measurement_cpus(n: usize) -> Option<Vec<usize>> {
    let mut cpus = spread_over_cores(&allowed_cpus(), core_of);
    if cpus.len() < n {
        return None;
    }
    cpus.truncate(n);
    Some(cpus)
}

/// Tries `pin` for each of `cpus` on the calling thread, then gives the thread its affinity
/// back: the first CPU that cannot be pinned to, with the error.
pub fn probe_pinning(cpus: &[usize], pin: CpuPinner) -> Result<(), (usize, io::Error)> {
    let saved = rustix::thread::sched_getaffinity(None).ok();
    let outcome = cpus
        .iter()
        .try_for_each(|&cpu| pin(cpu).map_err(|e| (cpu, e)));
    if let Some(saved) = saved {
        let _ = rustix::thread::sched_setaffinity(None, &saved);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn one_cpu_per_physical_core_comes_before_any_sibling() {
        // Intel numbering: CPU n and n+4 are the two threads of core n.
        let intel = |cpu: usize| Some(cpu % 4);
        assert_eq!(
            spread_over_cores(&[0, 1, 2, 3, 4, 5, 6, 7], intel),
            vec![0, 1, 2, 3, 4, 5, 6, 7]
        );
        // AMD numbering: CPUs 2k and 2k+1 are the two threads of core k.
        let amd = |cpu: usize| Some(cpu / 2 * 2);
        assert_eq!(
            spread_over_cores(&[0, 1, 2, 3, 4, 5, 6, 7], amd),
            vec![0, 2, 4, 6, 1, 3, 5, 7]
        );
        // Only part of the machine allowed: one sibling of core 0, both of core 2.
        assert_eq!(spread_over_cores(&[1, 4, 5, 6], amd), vec![1, 4, 6, 5]);
        // No topology: CPU order.
        assert_eq!(spread_over_cores(&[3, 5, 9], |_| None), vec![3, 5, 9]);
    }

    #[test]
    fn this_machine_gives_as_many_cpus_as_asked_or_none() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        let cpus = measurement_cpus(allowed.len()).unwrap();
        let mut sorted = cpus.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, allowed);
        assert_eq!(measurement_cpus(allowed.len() + 1), None);
    }

    #[test]
    fn a_probe_reports_the_cpu_that_refused_and_restores_the_affinity() {
        fn refuse_odd(cpu: usize) -> io::Result<()> {
            if cpu % 2 == 1 {
                Err(io::Error::from_raw_os_error(22))
            } else {
                Ok(())
            }
        }
        let before = rustix::thread::sched_getaffinity(None).unwrap();
        let (cpu, e) = probe_pinning(&[0, 2, 3], refuse_odd).unwrap_err();
        assert_eq!(cpu, 3);
        assert_eq!(e.raw_os_error(), Some(22));
        assert!(probe_pinning(&allowed_cpus(), pin_current_thread).is_ok());
        assert_eq!(rustix::thread::sched_getaffinity(None).unwrap(), before);
    }
}
