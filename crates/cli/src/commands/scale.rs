//! `sheafbench scale`: scaling curves. One workload run by 1..N tasks at once, as threads of
//! one process sharing one cache (`thread` mode) and as processes with a cache each
//! (`process` mode), on each allocator. Every point (allocator, mode, task count) is measured
//! once per round, in an order rotated from round to round, so that drift of the machine
//! reaches every point alike; per-task throughput is set against the smallest task count and
//! against the other allocators round by round (paired ratios with bootstrap intervals).
//!
//! Each measurement runs in child processes behind a start gate (see
//! `executor::run_together`): one child with `k` worker threads in thread mode, `k` children
//! with one worker thread each in process mode, each pinned to its own CPUs. Points with more
//! threads than CPUs run unpinned and are marked oversubscribed.

use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::machine::{Machine, available_cpus};
use harness::result::{Failure, ScalePoint, ScaleProcess, ScaleRatio, ScaleRound};
use harness::spec::{Kind, ThreadCounts};
use harness::stats::{self, Bootstrap, CONFIDENCE};
use harness::{Measurement, ResultFile, Workload};

use crate::benchmark::executor::{measure_command, run_together};
use crate::benchmark::{plan, rounds};
use crate::cli::ScaleArgs;
use crate::error::CliError;
use crate::export::{self, JsonExporter};
use crate::output::{format, interrupt, progress, warnings};

/// How the tasks of a point run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Threads of one process, sharing one cache.
    Thread,
    /// A process per task, each with its own cache.
    Process,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Thread => "thread",
            Mode::Process => "process",
        }
    }
}

/// Parses `--mode`.
fn modes(text: &str) -> Result<Vec<Mode>, CliError> {
    match text.trim() {
        "thread" => Ok(vec![Mode::Thread]),
        "process" => Ok(vec![Mode::Process]),
        "both" => Ok(vec![Mode::Thread, Mode::Process]),
        other => Err(CliError::Usage {
            option: format!("--mode {other}"),
            message: "unknown mode; expected thread, process or both".into(),
        }),
    }
}

/// Why `kind` cannot run in process mode, naming the field; `None` when it can. A task must
/// be independent of the others: readers that serve every writer of the process would be
/// multiplied by the task count (one set per process) and would read only their own
/// process's objects.
fn process_mode_refusal(kind: &Kind) -> Option<String> {
    match kind {
        Kind::MapleTree { readers, .. } | Kind::DeferredChurn { readers, .. } if *readers > 0 => {
            Some(format!(
                "kind `{}` with `readers` = {readers} cannot run in process mode: its readers serve the writers of every task together, so a process per task would multiply them and split what they read; set readers to 0 (--set readers=0) or use --mode thread",
                kind.name()
            ))
        }
        _ => None,
    }
}

/// A point of the curves to measure.
struct Point {
    allocator: &'static str,
    mode: Mode,
    tasks: u32,
    /// The threads of all its tasks exceed the CPUs: measured unpinned.
    oversubscribed: bool,
    /// The one-run workload as each child measures it (pinning decided).
    workload: Workload,
}

/// One round of a point, as measured.
struct Measured {
    round: u32,
    position: u32,
    processes: Vec<ScaleProcess>,
    warnings: Vec<String>,
}

impl Measured {
    fn total(&self) -> f64 {
        self.processes.iter().map(|p| p.throughput_ops_per_s).sum()
    }
}

/// `scale`.
pub(crate) fn run(mut args: ScaleArgs) -> Result<(), CliError> {
    let modes = modes(&args.mode)?;
    let allocators = plan::allocators(&args.selection.alloc)?;
    let baseline = super::run::baseline(args.baseline.as_deref(), &allocators)?;
    plan::check_output("--svg", args.svg.as_deref())?;
    plan::check_output("--json", args.json.as_deref())?;
    let cpus = available_cpus().max(1);
    let mut counts = match args.selection.threads.take() {
        Some(text) => plan::thread_counts(&text)?,
        None => (1..=cpus as u32).collect(),
    };
    counts.sort_unstable();
    // The task counts replace the spec's own `threads`: it is validated at one.
    args.selection.threads = Some("1".into());
    let planned = plan::load(&args.workload, &args.selection, &[])?;
    let workload = planned.workload;
    if modes.contains(&Mode::Process)
        && let Some(message) = process_mode_refusal(&workload.kind)
    {
        return Err(CliError::Usage {
            option: format!("--mode {}", args.mode.trim()),
            message,
        });
    }
    let rounds_planned = workload.spec.runs;
    let mut one_run = workload.clone();
    one_run.spec.runs = 1;
    let timeout = plan::timeout(&one_run, args.selection.timeout);
    let length = plan::planned_length(&one_run);
    let name = workload.spec.name.clone();

    let mut results = ResultFile::new(Machine::detect());
    let mut points = Vec::new();
    for &mode in &modes {
        for &tasks in &counts {
            let (threads, per_task) = match mode {
                Mode::Thread => (tasks, 1),
                Mode::Process => (1, tasks as usize),
            };
            let os_threads = workload.kind.os_threads(threads) * per_task;
            let oversubscribed = os_threads > cpus;
            if oversubscribed && workload.spec.pinned {
                let note = format!(
                    "{name}: {tasks} tasks in {} mode start {os_threads} threads on {cpus} CPUs: measured unpinned (oversubscribed)",
                    mode.name()
                );
                crate::output::note(&mut results, note);
            }
            let mut w = one_run.clone();
            w.spec.pinned = workload.spec.pinned && !oversubscribed;
            w.spec.threads = ThreadCounts(vec![threads]);
            for &allocator in &allocators {
                points.push(Point {
                    allocator,
                    mode,
                    tasks,
                    oversubscribed,
                    workload: w.clone(),
                });
            }
        }
    }
    let total = points.len() * rounds_planned as usize;
    interrupt::install();
    let mut bar = progress::Progress::new(total, length * total as u32);
    let mut measured: Vec<Vec<Measured>> = points.iter().map(|_| Vec::new()).collect();
    let mut failed = vec![false; points.len()];
    let references = rounds::references(Some(baseline), &allocators);
    for round in 0..rounds_planned {
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.rotate_left(round as usize % points.len().max(1));
        for (position, &index) in order.iter().enumerate() {
            let point = &points[index];
            let what = format!(
                "{name} / {} / {} mode / {} tasks",
                point.allocator,
                point.mode.name(),
                point.tasks
            );
            bar.start(&format!("{what} / round {} of {rounds_planned}", round + 1));
            if failed[index] {
                bar.finish_one(length);
                continue;
            }
            match measure_point(point, timeout) {
                Ok((processes, warnings)) => measured[index].push(Measured {
                    round,
                    position: position as u32,
                    processes,
                    warnings,
                }),
                // The measurement an interrupt cut short is not a failure.
                Err(_) if interrupt::requested() => {}
                Err((error, stderr)) => {
                    failed[index] = true;
                    bar.suspend(|| {
                        eprintln!("error: {what} (round {}): {error}", round + 1);
                        for line in stderr.lines() {
                            eprintln!("  | {line}");
                        }
                    });
                    results.failures.push(Failure {
                        workload: name.clone(),
                        allocator: point.allocator.to_owned(),
                        threads: point.tasks,
                        error: format!(
                            "{} mode, {} tasks: {error}",
                            point.mode.name(),
                            point.tasks
                        ),
                        stderr,
                    });
                }
            }
            results.scaling = summarize(&points, &measured, &references, &workload);
            if let Some(path) = &args.json {
                export::write(&JsonExporter, &results, Some(baseline), path)?;
            }
            if interrupt::requested() {
                bar.finish();
                let kept = measured.iter().map(Vec::len).sum::<usize>() + results.failures.len();
                return Err(CliError::Interrupted {
                    kept,
                    files: args.json.as_ref().map_or_else(
                        || "and none written (no --json)".to_owned(),
                        |p| format!("kept in {}", p.display()),
                    ),
                });
            }
            bar.finish_one(length);
        }
    }
    bar.finish();
    super::history::record(
        &args.history,
        super::history::of_result_file(history::RunKind::Scale, &results, args.json.as_deref()),
    );

    print!("{}", render(&results.scaling, &references, rounds_planned));
    warnings::print(&warnings::collect_by_subject(results.scaling.iter().map(
        |p| {
            (
                format!(
                    "{}/{}/{}/{}",
                    p.workload,
                    p.allocator,
                    p.mode,
                    tasks_label(p.tasks)
                ),
                p.warnings.as_slice(),
            )
        },
    )));
    let svg = args.svg.clone().or_else(|| {
        args.json.as_ref().map(|json| {
            let stem = json
                .file_stem()
                .map_or_else(|| "scale".into(), |s| s.to_string_lossy().into_owned());
            json.with_file_name(format!("{stem}-curves.svg"))
        })
    });
    if let Some(path) = svg {
        chart(&path, &results, cpus as u32)?;
    }
    if !results.failures.is_empty() {
        return Err(CliError::MeasurementsFailed {
            failed: results.failures.len(),
            total: points.len(),
        });
    }
    Ok(())
}

/// Measures one round of `point`: its processes' figures and warnings, or what failed with
/// the end of the failing process's stderr.
fn measure_point(
    point: &Point,
    timeout: std::time::Duration,
) -> Result<(Vec<ScaleProcess>, Vec<String>), (String, String)> {
    let commands = match point.mode {
        Mode::Thread => vec![measure_command(
            &point.workload,
            point.allocator,
            point.tasks,
            None,
        )],
        Mode::Process => (0..point.tasks as usize)
            .map(|task| {
                measure_command(
                    &point.workload,
                    point.allocator,
                    1,
                    Some((task, point.tasks as usize)),
                )
            })
            .collect(),
    }
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| (e, String::new()))?;
    let task = |index: usize| match point.mode {
        Mode::Thread => String::new(),
        Mode::Process => format!("task {} of {}: ", index + 1, point.tasks),
    };
    let finished = run_together(commands, timeout)
        .map_err(|f| (format!("{}{}", task(f.index), f.error), f.stderr))?;
    let mut processes = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for (index, f) in finished.into_iter().enumerate() {
        let m: Measurement = serde_json::from_slice(&f.stdout).map_err(|e| {
            (
                format!(
                    "{}the measuring process printed no valid measurement: {e}",
                    task(index)
                ),
                String::new(),
            )
        })?;
        processes.push(ScaleProcess {
            pid: f.pid,
            ops: m.ops,
            seconds: m.seconds,
            throughput_ops_per_s: m.throughput_ops_per_s,
        });
        warnings.extend(m.warnings);
    }
    Ok((processes, warnings))
}

/// `a / b` per round both completed, as a ratio with its interval.
fn ratio(versus: String, a: &[(u32, f64)], b: &[(u32, f64)]) -> Option<ScaleRatio> {
    let per_round = rounds::round_ratios(a, b);
    let estimate = stats::geometric_mean(&per_round)?;
    let interval = Bootstrap::with_seed(rounds::SEED)
        .geometric_mean(&per_round)
        .map(|i| (i.low, i.high));
    Some(ScaleRatio {
        versus,
        rounds: per_round,
        estimate,
        interval,
        confidence: CONFIDENCE,
    })
}

/// The per-task throughput of each round of a point.
fn per_task_by_round(point: &Point, rounds: &[Measured]) -> Vec<(u32, f64)> {
    rounds
        .iter()
        .map(|r| (r.round, r.total() / f64::from(point.tasks)))
        .collect()
}

/// The curve points measured so far, with their ratios.
fn summarize(
    points: &[Point],
    measured: &[Vec<Measured>],
    references: &[&str],
    workload: &Workload,
) -> Vec<ScalePoint> {
    let smallest = points.iter().map(|p| p.tasks).min().unwrap_or(1);
    let find = |allocator: &str, mode: Mode, tasks: u32| {
        points
            .iter()
            .position(|p| p.allocator == allocator && p.mode == mode && p.tasks == tasks)
            .filter(|&j| !measured[j].is_empty())
    };
    let mut out = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let rounds_of = &measured[i];
        if rounds_of.is_empty() {
            continue;
        }
        let totals: Vec<f64> = rounds_of.iter().map(Measured::total).collect();
        let total = stats::geometric_mean(&totals).unwrap_or(0.0);
        let mine = per_task_by_round(point, rounds_of);
        let efficiency = if point.tasks == smallest {
            None
        } else {
            find(point.allocator, point.mode, smallest).and_then(|j| {
                ratio(
                    tasks_label(smallest),
                    &mine,
                    &per_task_by_round(&points[j], &measured[j]),
                )
            })
        };
        let mut versus = Vec::new();
        for &reference in references {
            if reference == point.allocator {
                continue;
            }
            if let Some(j) = find(reference, point.mode, point.tasks)
                && let Some(r) = ratio(
                    reference.to_owned(),
                    &mine,
                    &per_task_by_round(&points[j], &measured[j]),
                )
            {
                versus.push(r);
            }
        }
        if point.mode == Mode::Process
            && let Some(j) = find(point.allocator, Mode::Thread, point.tasks)
            && let Some(r) = ratio(
                Mode::Thread.name().to_owned(),
                &mine,
                &per_task_by_round(&points[j], &measured[j]),
            )
        {
            versus.push(r);
        }
        let mut warnings: Vec<String> = Vec::new();
        // A child's one run says nothing of the spread over rounds.
        let kept = rounds_of
            .iter()
            .flat_map(|r| &r.warnings)
            .filter(|w| !rounds::PER_CHILD_ONLY.iter().any(|p| w.starts_with(p)));
        for w in kept {
            // One warning of each kind: the first round's details stand for the others.
            let kind = w.split_once(": ").map_or(w.as_str(), |(k, _)| k);
            if !warnings.iter().any(|k| k.starts_with(kind)) {
                warnings.push(w.clone());
            }
        }
        out.push(ScalePoint {
            workload: workload.spec.name.clone(),
            allocator: point.allocator.to_owned(),
            mode: point.mode.name().to_owned(),
            tasks: point.tasks,
            pinned: point.workload.spec.pinned,
            oversubscribed: point.oversubscribed,
            op_unit: workload.kind.op_unit().to_owned(),
            rounds: rounds_of
                .iter()
                .map(|r| ScaleRound {
                    round: r.round,
                    position: r.position,
                    total_ops_per_s: r.total(),
                    processes: r.processes.clone(),
                })
                .collect(),
            total_ops_per_s: total,
            per_task_ops_per_s: total / f64::from(point.tasks),
            efficiency,
            versus,
            warnings,
        });
    }
    out
}

fn tasks_label(tasks: u32) -> String {
    if tasks == 1 {
        "1 task".to_owned()
    } else {
        format!("{tasks} tasks")
    }
}

/// A ratio cell: estimate and interval, `-` where there is none.
fn ratio_cell(r: Option<&ScaleRatio>) -> String {
    r.map_or_else(
        || "-".to_owned(),
        |r| format::ratio_with_interval(r.estimate, r.interval),
    )
}

/// The table: one row per point, by mode, allocator and task count.
fn render(points: &[ScalePoint], references: &[&str], rounds: u32) -> String {
    let Some(first) = points.first() else {
        return String::new();
    };
    let smallest = points.iter().map(|p| p.tasks).min().unwrap_or(1);
    let process = points.iter().any(|p| p.mode == "process");
    let both = process && points.iter().any(|p| p.mode == "thread");
    let mut header = vec![
        "mode".to_owned(),
        "tasks".to_owned(),
        "allocator".to_owned(),
        "pinned".to_owned(),
        "total".to_owned(),
        "per task".to_owned(),
        format!("per task vs {}", tasks_label(smallest)),
    ];
    header.extend(references.iter().map(|r| format!("vs {r}")));
    if both {
        header.push("vs thread".to_owned());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(header.clone());
    let mut order: Vec<&ScalePoint> = points.iter().collect();
    // Thread mode first, then allocators in the order they ran, then task counts: each
    // curve reads down its rows.
    let rank = |name: &str| points.iter().position(|p| p.allocator == name);
    order.sort_by_key(|p| (p.mode != "thread", rank(&p.allocator), p.tasks));
    for p in order {
        let mut row = vec![
            p.mode.clone(),
            p.tasks.to_string(),
            p.allocator.clone(),
            if p.oversubscribed {
                "no (oversubscribed)".to_owned()
            } else if p.pinned {
                "yes".to_owned()
            } else {
                "no".to_owned()
            },
            format::throughput(p.total_ops_per_s),
            format::throughput(p.per_task_ops_per_s),
            if p.tasks == smallest {
                "1".to_owned()
            } else {
                ratio_cell(p.efficiency.as_ref())
            },
        ];
        for &r in references {
            row.push(if p.allocator == r {
                "1".to_owned()
            } else {
                ratio_cell(p.versus.iter().find(|v| v.versus == r))
            });
        }
        if both {
            row.push(if p.mode == "thread" {
                "1".to_owned()
            } else {
                ratio_cell(p.versus.iter().find(|v| v.versus == "thread"))
            });
        }
        table.add_row(row);
    }
    for col in 4..header.len() {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!(
        "{}: op = {}; {rounds} rounds, every point once per round; throughput is the geometric mean over rounds, ratios are paired by round (95% interval)\n{table}\n",
        first.workload, first.op_unit
    )
}

/// Draws the curves into `path`.
fn chart(path: &Path, results: &ResultFile, cpus: u32) -> Result<(), CliError> {
    let mut series: Vec<harness::chart::CurveSeries> = Vec::new();
    let smallest = results.scaling.iter().map(|p| p.tasks).min().unwrap_or(1);
    for p in &results.scaling {
        let label = format!("{} ({})", p.allocator, p.mode);
        // The paired interval of the ratio to the smallest count, in ops/s per task.
        let reference = results
            .scaling
            .iter()
            .find(|q| q.allocator == p.allocator && q.mode == p.mode && q.tasks == smallest);
        let interval = match (&p.efficiency, reference) {
            (Some(e), Some(r)) => e
                .interval
                .map(|(low, high)| (low * r.per_task_ops_per_s, high * r.per_task_ops_per_s)),
            _ => None,
        };
        let point = harness::chart::CurvePoint {
            tasks: p.tasks,
            total: p.total_ops_per_s,
            per_task: p.per_task_ops_per_s,
            interval,
            oversubscribed: p.oversubscribed,
        };
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push(point),
            None => series.push((label, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by_key(|p| p.tasks);
    }
    let name = results.scaling.first().map_or("", |p| p.workload.as_str());
    crate::export::svg::write(
        path,
        harness::chart::scaling(
            &format!("{name}: throughput against tasks"),
            &series,
            cpus,
            &crate::export::svg::footer(results),
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_thread_process_or_both() {
        assert_eq!(modes("thread").unwrap(), [Mode::Thread]);
        assert_eq!(modes("both").unwrap(), [Mode::Thread, Mode::Process]);
        let err = modes("fibre").unwrap_err().to_string();
        assert!(err.starts_with("--mode fibre: unknown mode"), "{err}");
    }
}
