//! From spec files and command-line options to validated workloads and allocator names.
//! Everything here runs before any measurement, so bad input stops the run before it starts.

use std::path::Path;
use std::time::Duration;

use harness::machine::available_cpus;
use harness::spec::{RunLength, SpecDuration, ThreadCounts};
use harness::{Workload, WorkloadSpec};

use crate::cli::MeasureSelection;
use crate::error::CliError;
use crate::registry;

/// A workload ready to run.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    /// Thread counts of `--threads` left out because they need more pinned threads than
    /// there are CPUs (each with the reason).
    pub(crate) skipped: Vec<String>,
    /// The validated workload.
    pub(crate) workload: Workload,
}

/// Reads, overrides and validates one spec; `extra` overrides come after `--set`.
pub(crate) fn load(
    file: &Path,
    selection: &MeasureSelection,
    extra: &[String],
) -> Result<Planned, CliError> {
    let mut spec = WorkloadSpec::from_file(file)?;
    apply_selection(&mut spec, selection, extra)?;
    let name = file.display().to_string();
    let cpus = available_cpus();
    let mut skipped = Vec::new();
    // `--threads` applies to every spec of a run, and some kinds start more threads than
    // their count (consumers, readers): counts that cannot be pinned are left out for those
    // specs only, and said so; a spec's own `threads` is validated strictly.
    if selection.threads.is_some() && spec.pinned {
        let mut probe = spec.clone();
        probe.threads = ThreadCounts(vec![1]);
        probe.pinned = false;
        let kind = probe.validate(&name, cpus)?.kind;
        let (fit, too_many): (Vec<u32>, Vec<u32>) = spec
            .threads
            .0
            .iter()
            .partition(|&&t| kind.os_threads(t) <= cpus);
        if !fit.is_empty() {
            skipped = too_many
                .iter()
                .map(|&t| {
                    format!(
                        "{}: {t} threads left out: kind `{}` then needs {} pinned threads and this machine has {cpus} CPUs (--set pinned=false runs it oversubscribed)",
                        spec.name,
                        kind.name(),
                        kind.os_threads(t)
                    )
                })
                .collect();
            spec.threads = ThreadCounts(fit);
        }
    }
    let workload = spec.validate(&name, cpus)?;
    if workload.spec.sheaf_capacity == Some(0) {
        eprintln!(
            "note: {name}: sheaf_capacity 0 means no sheaves: the designs with sheaves (and \
             magazine) send every allocation and free to the slabs, many times slower; \
             their results carry a `no sheaves` warning"
        );
    }
    Ok(Planned { skipped, workload })
}

/// Applies `--quick`, `--set` (then `extra`), `--threads`, `--duration`, `--runs` and
/// `--hogs`, and checks `--timeout`.
pub(crate) fn apply_selection(
    spec: &mut WorkloadSpec,
    selection: &MeasureSelection,
    extra: &[String],
) -> Result<(), CliError> {
    if selection.timeout == Some(0) {
        return Err(CliError::Usage {
            option: "--timeout 0".into(),
            message: "a time-out of 0 s would kill every measurement as it starts; give at \
                      least 1 second, or leave --timeout out for the default (three times the \
                      planned length plus 30 s)"
                .into(),
        });
    }
    if selection.quick {
        spec.make_quick();
    }
    spec.apply_overrides(&selection.set)?;
    spec.apply_overrides(extra)?;
    if let Some(threads) = &selection.threads {
        spec.threads = ThreadCounts(thread_counts(threads)?);
    }
    if let Some(duration) = &selection.duration {
        let d: SpecDuration = duration.parse().map_err(|message| CliError::Usage {
            option: format!("--duration {duration}"),
            message,
        })?;
        spec.duration = Some(d);
        spec.ops = None;
    }
    if let Some(runs) = selection.runs {
        spec.runs = runs;
    }
    if let Some(hogs) = &selection.hogs {
        let max = harness::spec::MAX_HOGS;
        spec.hogs = hogs
            .trim()
            .parse()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| CliError::Usage {
                option: format!("--hogs {hogs}"),
                message: format!("expected a number of busy threads between 0 and {max}"),
            })?;
    }
    Ok(())
}

/// The most threads (or tasks) one `--threads` item may ask for.
pub(crate) const MAX_COUNT: u32 = 4096;

/// Parses `--threads`: comma-separated counts and inclusive ranges (`1,2,4`, `1..4`,
/// `1..=4`, `1..4,8`), each at least 1 and at most [`MAX_COUNT`]; repeats are dropped, the
/// order is kept.
pub(crate) fn thread_counts(text: &str) -> Result<Vec<u32>, CliError> {
    let bad = |message: String| CliError::Usage {
        option: format!("--threads {text}"),
        message,
    };
    let count = |item: &str| -> Result<u32, CliError> {
        let n: u32 = item.trim().parse().map_err(|_| {
            bad(format!(
                "`{}` is not a count; expected counts and ranges such as 1,2,4 or 1..4",
                item.trim()
            ))
        })?;
        if n == 0 {
            return Err(bad("0 threads: every count must be at least 1".into()));
        }
        if n > MAX_COUNT {
            return Err(bad(format!("{n} is more than {MAX_COUNT}")));
        }
        Ok(n)
    };
    let mut counts: Vec<u32> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad(
                "an empty item; expected counts and ranges such as 1,2,4 or 1..4".into(),
            ));
        }
        let range = item.split_once("..=").or_else(|| item.split_once(".."));
        let items: Vec<u32> = match range {
            Some((from, to)) => {
                let (from, to) = (count(from)?, count(to)?);
                if from > to {
                    return Err(bad(format!("the range {item} runs backwards")));
                }
                (from..=to).collect()
            }
            None => vec![count(item)?],
        };
        for n in items {
            if !counts.contains(&n) {
                counts.push(n);
            }
        }
    }
    Ok(counts)
}

/// Resolves `--alloc` (names or `all`; none given means `all`) to registered names,
/// refusing unknown ones.
pub(crate) fn allocators(requested: &[String]) -> Result<Vec<&'static str>, CliError> {
    let known = registry::names();
    if requested.is_empty() {
        return Ok(known);
    }
    let mut chosen: Vec<&'static str> = Vec::new();
    for name in requested {
        let name = name.trim();
        if name == "all" {
            for k in &known {
                if !chosen.contains(k) {
                    chosen.push(k);
                }
            }
            continue;
        }
        match known.iter().find(|k| **k == name) {
            Some(k) => {
                if !chosen.contains(k) {
                    chosen.push(k);
                }
            }
            None => {
                return Err(CliError::UnknownAllocator {
                    name: name.to_owned(),
                    known: known.join(", "),
                });
            }
        }
    }
    if chosen.is_empty() {
        return Err(CliError::Usage {
            option: "--alloc".into(),
            message: "no allocator given; name at least one, or `all`".into(),
        });
    }
    Ok(chosen)
}

/// Checks that the directory of an output file exists, before anything runs.
pub(crate) fn check_output(option: &str, path: Option<&Path>) -> Result<(), CliError> {
    let Some(path) = path else { return Ok(()) };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::Usage {
            option: format!("{option} {}", path.display()),
            message: format!(
                "directory `{}` does not exist; create it first",
                dir.display()
            ),
        });
    }
    if path.is_dir() {
        return Err(CliError::Usage {
            option: format!("{option} {}", path.display()),
            message: "is a directory; give a file name".into(),
        });
    }
    Ok(())
}

/// How long a measurement of `workload` is planned to take: its warm-up and measured runs
/// (a run of a fixed operation count is counted as one second: its length is not known).
pub(crate) fn planned_length(workload: &Workload) -> Duration {
    let per_run = match workload.length {
        RunLength::Duration(d) => d,
        RunLength::Ops(_) => Duration::from_secs(1),
    };
    workload.spec.warmup.0 + per_run * workload.spec.runs
}

/// Longest a measurement may take: `timeout` seconds if given, else three times its planned
/// length plus 30 s (5 minutes per run for runs of a fixed operation count).
pub(crate) fn timeout(workload: &Workload, explicit: Option<u64>) -> Duration {
    if let Some(secs) = explicit {
        // `apply_selection` refused 0.
        return Duration::from_secs(secs);
    }
    let per_run = match workload.length {
        RunLength::Duration(d) => d,
        RunLength::Ops(_) => Duration::from_secs(300),
    };
    let planned = workload.spec.warmup.0 + per_run * workload.spec.runs;
    planned * 3 + Duration::from_secs(30)
}

/// Refuses, before anything runs, a spec with `phases` for a design that cannot change its
/// limits at run time, naming the first field the first phase changes.
pub(crate) fn check_phases(planned: &[Planned], allocators: &[&str]) -> Result<(), CliError> {
    for p in planned {
        let Some(phase) = p.workload.spec.phases.first() else {
            continue;
        };
        let (field, value) = phase
            .change()
            .first_field()
            .unwrap_or(("sheaf_capacity", 0));
        if let Some(name) = allocators
            .iter()
            .find(|name| !registry::changes_limits(name))
        {
            let able: Vec<&str> = registry::names()
                .into_iter()
                .filter(|name| registry::changes_limits(name))
                .collect();
            return Err(CliError::Spec(harness::SpecError::Invalid {
                file: p.workload.spec.name.clone(),
                field: format!("phases[0].{field}"),
                value: value.to_string(),
                expected: format!(
                    "a design that changes its limits at run time ({}); `{name}` has no sheaves to change (leave it out of --alloc)",
                    able.join(", ")
                ),
            }));
        }
    }
    Ok(())
}

/// Without `--alloc`, a run of specs with `phases` measures only the designs that can
/// change their limits at run time (as `sweep` over a sheaf field measures the designs it
/// changes), and says so; a design named in `--alloc` is kept, for [`check_phases`] to refuse.
pub(crate) fn default_to_changing(
    allocators: &mut Vec<&'static str>,
    requested: &[String],
    planned: &[Planned],
) {
    if !requested.is_empty() || planned.iter().all(|p| p.workload.spec.phases.is_empty()) {
        return;
    }
    allocators.retain(|name| registry::changes_limits(name));
    eprintln!(
        "note: the specs change limits at run time (phases): measuring the designs that can ({})",
        allocators.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_take_lists_and_ranges() {
        assert_eq!(thread_counts("1,2,4").unwrap(), [1, 2, 4]);
        assert_eq!(thread_counts("1..4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(thread_counts("1..=3,8").unwrap(), [1, 2, 3, 8]);
        assert_eq!(thread_counts(" 2 , 1..2 ").unwrap(), [2, 1]);
        for (bad, says) in [
            ("0", "0 threads"),
            ("1..0", "0 threads"),
            ("3..1", "runs backwards"),
            ("x", "`x` is not a count"),
            ("1,,2", "an empty item"),
            ("1..", "`` is not a count"),
            ("5000", "more than 4096"),
        ] {
            let err = thread_counts(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--threads {bad}: ")), "{err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
