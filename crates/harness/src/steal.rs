//! Steal time: how long the hypervisor ran something else on the CPUs a measurement used.
//!
//! On a virtual machine the host may deschedule a guest's virtual CPU to run other guests.
//! Inside the guest that time passes on the clock while no instruction of it runs: every
//! figure taken then is slower by an amount that changes from run to run, and nothing inside
//! the guest (context switches, migrations) shows it. The kernel accounts it as `steal` in
//! `/proc/stat`, per CPU, in clock ticks; the harness reads it around each measured run.

/// Ticks a set of CPUs spent in total and stolen, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Ticks stolen by the hypervisor.
    pub steal: u64,
    /// Every tick accounted (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total: u64,
}

impl CpuTicks {
    /// The ticks from `earlier` to `self`.
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: CpuTicks) {
        self.steal += other.steal;
        self.total += other.total;
    }

    /// Stolen share of the time, in percent; `None` without any tick.
    pub fn steal_percent(self) -> Option<f64> {
        (self.total > 0).then(|| 100.0 * self.steal as f64 / self.total as f64)
    }
}

/// The ticks of CPUs `cpus` (all CPUs with `None`) now; `None` where `/proc/stat` cannot be
/// read or has no steal column (not Linux, or a kernel before 2.6.11).
pub fn read(cpus: Option<&[usize]>) -> Option<CpuTicks> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?, cpus)
}

/// Sums the `cpu` line (with `None`) or the `cpuN` lines of `cpus` of a `/proc/stat` text.
pub fn parse(stat: &str, cpus: Option<&[usize]>) -> Option<CpuTicks> {
    let mut ticks = CpuTicks::default();
    let mut found = 0;
    for line in stat.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(id) = name.strip_prefix("cpu") else {
            continue;
        };
        let wanted = match cpus {
            None => id.is_empty(),
            Some(cpus) => id.parse::<usize>().is_ok_and(|n| cpus.contains(&n)),
        };
        if !wanted {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let values: Vec<u64> = fields.take(8).map_while(|v| v.parse().ok()).collect();
        if values.len() < 8 {
            return None;
        }
        ticks.steal += values[7];
        ticks.total += values.iter().sum::<u64>();
        found += 1;
    }
    let expected = cpus.map_or(1, <[usize]>::len);
    (found == expected).then_some(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1240843 0 145866 972670 5171 0 874 7853 0 0
cpu0 620000 0 70000 480000 2500 0 400 4000 0 0
cpu1 620843 0 75866 492670 2671 0 474 3853 0 0
intr 1 2 3
ctxt 42
";

    #[test]
    fn the_aggregate_line_or_the_chosen_cpus_are_summed() {
        let all = parse(STAT, None).unwrap();
        assert_eq!(all.steal, 7853);
        assert_eq!(all.total, 1240843 + 145866 + 972670 + 5171 + 874 + 7853);
        let one = parse(STAT, Some(&[1])).unwrap();
        assert_eq!(one.steal, 3853);
        let both = parse(STAT, Some(&[0, 1])).unwrap();
        assert_eq!(both.steal, 7853);
    }

    #[test]
    fn a_missing_cpu_or_column_gives_nothing() {
        assert_eq!(parse(STAT, Some(&[5])), None);
        assert_eq!(parse("cpu  1 2 3 4\n", None), None);
        assert_eq!(parse("", None), None);
    }

    #[test]
    fn the_share_is_taken_between_two_readings() {
        let before = CpuTicks {
            steal: 10,
            total: 1000,
        };
        let after = CpuTicks {
            steal: 35,
            total: 1100,
        };
        let delta = after.since(before);
        assert_eq!(
            delta,
            CpuTicks {
                steal: 25,
                total: 100
            }
        );
        assert_eq!(delta.steal_percent(), Some(25.0));
        assert_eq!(CpuTicks::default().steal_percent(), None);
    }

    #[test]
    fn this_machine_reports_steal() {
        // Linux has had the column since 2.6.11; the readings only grow.
        let first = read(None).expect("/proc/stat with a steal column");
        let second = read(None).unwrap();
        assert!(second.total >= first.total && second.steal >= first.steal);
    }
}
