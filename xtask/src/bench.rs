//! `cargo xtask bench`: where every design stands, on the default suite.
//!
//! Builds `sheafbench` in release, runs every workload in `workloads/` marked
//! `suite: default` against every allocator at one thread and at the machine's CPU count,
//! and writes `results/runs/<time>/`: `results.json` (the CLI's schema, the runs of every
//! workload merged), `report.md` (the CLI's Markdown of every workload), and the SVG charts
//! of `report` (throughput and latency percentiles per workload). Each workload is its own
//! `sheafbench run` (its `<workload>.json` and `.md` stay beside the merged files), so that a
//! workload refused at the CPU count (pinned threads beyond the CPUs) runs at one thread
//! instead of stopping the suite.
//!
//! `--programs [stress|packaged|all]` then runs `sheafbench programs` into the same directory
//! (`programs.json`, `programs.md`, `programs-wall.svg`, `programs-rss.svg`; the library
//! `libsheaf_malloc.so` is built beside the release binary first), records its result as a
//! `programs` run, and ends `report.md` with its table; `--only-programs` runs the programs
//! alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::report;
use crate::util::{self, TaskError, TaskResult};

/// The default suite, every allocator, at one thread and at the CPU count.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Short smoke runs (`sheafbench run --quick`).
    #[arg(long)]
    quick: bool,
    /// Allocators, e.g. sheaf,mimalloc, as `sheafbench run --alloc` takes them.
    #[arg(long, value_name = "LIST", default_value = "all")]
    alloc: String,
    /// Rounds per (workload, threads), as `sheafbench run --runs` takes them (default: each
    /// spec's `runs`).
    #[arg(long, value_name = "N")]
    runs: Option<u32>,
    /// Length of each measured run, as `sheafbench run --duration` takes it (default: each
    /// spec's).
    #[arg(long, value_name = "TIME")]
    duration: Option<String>,
    /// After the suite, the real programs with each allocator preloaded (`sheafbench
    /// programs`): the `stress` suite (the default), `packaged`, or `all`.
    #[arg(long, value_name = "SUITE", num_args = 0..=1, default_missing_value = "stress")]
    programs: Option<String>,
    /// Only the real programs of --programs (default: stress), not the workload suite.
    #[arg(long)]
    only_programs: bool,
    /// Rounds of the real programs (`sheafbench programs --rounds`; default: its own).
    #[arg(long, value_name = "N")]
    program_rounds: Option<u32>,
    #[command(flatten)]
    history: crate::history::HistoryOptions,
}

/// Options passed through to every `sheafbench run`.
#[derive(Debug)]
struct RunOptions<'a> {
    alloc: &'a str,
    quick: bool,
    runs: Option<u32>,
    duration: Option<&'a str>,
}

/// `cargo xtask bench`.
pub(crate) fn bench(options: Options) -> TaskResult {
    let Options {
        quick,
        alloc,
        runs,
        duration,
        programs,
        only_programs,
        program_rounds,
        history,
    } = options;
    let programs = match programs {
        Some(suite) => Some(programs_suite(&suite)?),
        None if only_programs => Some(Some("stress".to_owned())),
        None => None,
    };
    if only_programs {
        let exe = util::build_sheafbench(None)?;
        let dir = util::new_run_dir()?;
        let suite = programs.flatten();
        let outcome = run_programs(&exe, &dir, suite.as_deref(), program_rounds, &history)?;
        println!("\nfiles in {}:", dir.display());
        if let Some(report) = &outcome.report {
            let md = dir.join("report.md");
            util::write_atomic(&md, &format!("# sheafbench: real programs\n\n{report}"))?;
        }
        for name in [
            "report.md",
            PROGRAMS_JSON,
            "programs-wall.svg",
            "programs-rss.svg",
        ] {
            if dir.join(name).exists() {
                println!("  {name}");
            }
        }
        return outcome.into_result();
    }
    let pass = RunOptions {
        alloc: &alloc,
        quick,
        runs,
        duration: duration.as_deref(),
    };
    let started = Instant::now();
    let exe = util::build_sheafbench(None)?;
    let specs = util::default_suite()?;
    let dir = util::new_run_dir()?;
    let cpus = util::cpu_count();
    let all_threads = if cpus > 1 {
        format!("1,{cpus}")
    } else {
        "1".to_owned()
    };
    let thread_counts = if cpus > 1 { 2 } else { 1 };
    let weights: Vec<Duration> = specs
        .iter()
        .map(|spec| planned_weight(spec, quick, thread_counts))
        .collect();
    util::catch_interrupts();
    let mut interrupted = None;

    // One `sheafbench run` per workload: a kind whose pinned threads at the CPU count exceed
    // the CPUs (a producer-consumer pair is two threads) is refused by the CLI before it runs
    // anything (exit status 2), and is then run at one thread only, with a note.
    let mut parts = Vec::new();
    let mut notes = Vec::new();
    let mut failures = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let stem = spec
            .file_stem()
            .map_or_else(|| "workload".into(), |s| s.to_string_lossy().into_owned());
        let elapsed = started.elapsed();
        let eta = eta(elapsed, &weights[..index], &weights[index..])
            .map_or_else(String::new, |eta| format!(", ETA {}", minutes(eta)));
        eprintln!(
            "xtask: workload {} of {}: {stem} ({} elapsed{eta})",
            index + 1,
            specs.len(),
            minutes(elapsed)
        );
        let json = dir.join(format!("{stem}.json"));
        let markdown = dir.join(format!("{stem}.md"));
        let mut status = run_workload(&exe, spec, &pass, &all_threads, &json, &markdown)?;
        if util::interrupted() || status == Some(INTERRUPTED_STATUS) {
            if json.exists() {
                parts.push((json, markdown));
            }
            interrupted = Some(index + 1);
            break;
        }
        if status == Some(2) && all_threads != "1" {
            notes.push(format!(
                "{stem}: refused at {all_threads} threads (pinned threads would exceed the {cpus} CPUs); ran at 1 thread"
            ));
            status = run_workload(&exe, spec, &pass, "1", &json, &markdown)?;
        }
        if status != Some(0) {
            failures.push(format!(
                "{stem}: sheafbench exited with {}",
                status.map_or("a signal".into(), |c| c.to_string())
            ));
        }
        if json.exists() {
            parts.push((json, markdown));
        }
    }

    // Merge: one results.json and one report.md for the whole suite: the machine once, one
    // summary of every workload, then each workload's sections.
    let mut results = Vec::new();
    let mut sections = String::new();
    let mut machine = String::new();
    for (json, markdown) in &parts {
        results.push(util::read_json(json)?);
        if let Ok(text) = std::fs::read_to_string(markdown) {
            let (head, body) = split_report(&text);
            if machine.is_empty() {
                machine = head.to_owned();
            }
            // Each workload's warnings and failures sit under its own heading.
            sections.push_str(
                &body
                    .replace("## Warnings\n", "### Warnings\n")
                    .replace("## Failures\n", "### Failures\n"),
            );
            sections.push('\n');
        }
    }
    let mut merged = merge_results(results);
    if let Some(all) = merged.as_mut() {
        let mut list = all["notes"].as_array().cloned().unwrap_or_default();
        list.extend(notes.iter().map(|n| serde_json::Value::String(n.clone())));
        all["notes"] = serde_json::Value::Array(list);
    }
    let summary = merged
        .as_ref()
        .and_then(|all| serde_json::from_value::<harness::ResultFile>(all.clone()).ok())
        .map_or_else(String::new, |file| harness::summary::markdown(&file));
    // The real programs, into the same directory; their table closes the report.
    let mut programs_outcome = None;
    if let Some(suite) = &programs
        && interrupted.is_none()
    {
        programs_outcome = Some(run_programs(
            &exe,
            &dir,
            suite.as_deref(),
            program_rounds,
            &history,
        )?);
    }
    let programs_md = programs_outcome
        .as_ref()
        .and_then(|o| o.report.clone())
        .unwrap_or_default();
    let report_md =
        format!("# sheafbench: default suite\n\n{machine}{summary}{sections}{programs_md}");
    let mut files = Vec::new();
    if let Some(all) = merged {
        let json = dir.join("results.json");
        util::write_atomic(
            &json,
            &format!(
                "{}\n",
                serde_json::to_string_pretty(&all).unwrap_or_default()
            ),
        )?;
        files.push(json.clone());
        if interrupted.is_none() {
            match serde_json::from_value::<harness::ResultFile>(all.clone()) {
                Ok(file) => {
                    let mut run =
                        ::history::NewRun::from_result_file(::history::RunKind::Bench, &file);
                    run.source = Some(json.display().to_string());
                    run.config = serde_json::json!({
                        "quick": quick, "alloc": alloc, "runs": runs, "duration": duration,
                    });
                    history.record(run);
                }
                Err(error) => eprintln!("xtask: not recorded in the results history ({error})"),
            }
        }
        match report::write_charts(&json, &dir) {
            Ok(charts) => files.extend(charts),
            Err(error) => eprintln!("xtask: charts not drawn: {error}"),
        }
        let markdown = dir.join("report.md");
        util::write_atomic(&markdown, &report_md)?;
        files.push(markdown);
    }
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(at) = interrupted {
        println!(
            "\ninterrupted during workload {at} of {}: kept the finished measurements of {} workload(s) in {}:",
            specs.len(),
            parts.len(),
            dir.display()
        );
        for file in &files {
            println!("  {}", file.strip_prefix(&dir).unwrap_or(file).display());
        }
        return Err(TaskError::Failed("interrupted".into()));
    }
    println!(
        "\nbench finished in {:.0} s; files in {}:",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    for file in &files {
        println!("  {}", file.strip_prefix(&dir).unwrap_or(file).display());
    }
    println!("  (per-workload <workload>.json and <workload>.md as the CLI wrote them)");
    if let Some(outcome) = programs_outcome {
        println!(
            "  {PROGRAMS_JSON}, programs.md, programs-wall.svg, programs-rss.svg (real programs)"
        );
        if let Err(TaskError::Failed(why)) = outcome.into_result() {
            failures.push(why);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "some workloads failed:\n{}",
            failures.join("\n")
        )))
    }
}

/// The result file `sheafbench programs` writes into its output directory.
const PROGRAMS_JSON: &str = "programs.json";

/// `--programs`: `stress`, `packaged` or `all` (`None`: every suite).
fn programs_suite(text: &str) -> TaskResult<Option<String>> {
    match text {
        "stress" | "packaged" => Ok(Some(text.to_owned())),
        "all" => Ok(None),
        other => Err(TaskError::Failed(format!(
            "--programs {other}: expected stress, packaged or all"
        ))),
    }
}

/// What `sheafbench programs` left.
struct ProgramsOutcome {
    /// Its exit status (`None`: killed by a signal).
    status: Option<i32>,
    /// Its Markdown report (`programs.md`), where written.
    report: Option<String>,
}

impl ProgramsOutcome {
    fn into_result(self) -> TaskResult {
        match self.status {
            Some(0) => Ok(()),
            status => Err(TaskError::Failed(format!(
                "programs: sheafbench programs exited with {}",
                status.map_or("a signal".into(), |c| c.to_string())
            ))),
        }
    }
}

/// Builds `libsheaf_malloc.so` beside the release `sheafbench`, runs `sheafbench programs`
/// into `dir` (every suite when `suite` is `None`), and records its result in the history.
fn run_programs(
    exe: &Path,
    dir: &Path,
    suite: Option<&str>,
    rounds: Option<u32>,
    history: &crate::history::HistoryOptions,
) -> TaskResult<ProgramsOutcome> {
    let mut build = util::cargo();
    build.args(["build", "--release", "-p", "sheaf-malloc"]);
    util::run(build)?;
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .args(["programs", "--no-history", "--out"])
        .arg(dir);
    if let Some(suite) = suite {
        run.args(["--suite", suite]);
    }
    if let Some(rounds) = rounds {
        run.args(["--rounds", &rounds.to_string()]);
    }
    eprintln!("xtask: running {}", util::describe(&run));
    let status = run
        .status()
        .map_err(|e| format!("cannot start {}: {e}", util::describe(&run)))?;
    let json = dir.join(PROGRAMS_JSON);
    if let Ok(text) = std::fs::read_to_string(&json) {
        match serde_json::from_str::<harness::ResultFile>(&text) {
            Ok(file) => {
                let mut recorded =
                    ::history::NewRun::from_result_file(::history::RunKind::Programs, &file);
                recorded.source = Some(json.display().to_string());
                recorded.config = serde_json::json!({ "suite": suite, "rounds": rounds });
                history.record(recorded);
            }
            Err(error) => {
                eprintln!("xtask: programs not recorded in the results history ({error})")
            }
        }
    }
    Ok(ProgramsOutcome {
        status: status.code(),
        report: std::fs::read_to_string(dir.join("programs.md")).ok(),
    })
}

/// The exit status of a `sheafbench run` stopped by Ctrl-C (it keeps what finished).
const INTERRUPTED_STATUS: i32 = 130;

/// What one workload is planned to cost, for the ETA: its warm-up and measured runs at each
/// thread count (a run of a fixed operation count, or a spec that cannot be read, counts one
/// second). Every workload runs the same allocators, so their number cancels out of the ETA.
fn planned_weight(spec: &Path, quick: bool, thread_counts: u32) -> Duration {
    let Ok(mut spec) = harness::WorkloadSpec::from_file(spec) else {
        return Duration::from_secs(1);
    };
    if quick {
        spec.make_quick();
    }
    let per_run = spec.duration.map_or(Duration::from_secs(1), |d| d.0);
    (spec.warmup.0 + per_run * spec.runs) * thread_counts
}

/// The time left: the elapsed time scaled by the planned weight left over the weight done
/// (`None` before anything is done).
fn eta(elapsed: Duration, done: &[Duration], left: &[Duration]) -> Option<Duration> {
    let done: Duration = done.iter().sum();
    let left: Duration = left.iter().sum();
    (!done.is_zero()).then(|| elapsed.mul_f64(left.as_secs_f64() / done.as_secs_f64()))
}

/// `1m05s`, or `42s` under a minute.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// One result file from several: the first file's header (schema, date, machine) with the
/// `runs`, `failures` and `paired` ratios of all of them, in order. `None` when there is no file.
/// A workload's Markdown as the CLI writes it, split into the machine lines (after the title)
/// and the workload's own sections (after its summary).
fn split_report(text: &str) -> (&str, &str) {
    let head_start = text.find("\n\n").map_or(0, |i| i + 2);
    let head_end = text
        .find("## Summary")
        .unwrap_or(head_start)
        .max(head_start);
    let body_start = text[head_end..]
        .match_indices("\n## ")
        .map(|(i, _)| head_end + i + 1)
        .find(|&i| !text[i..].starts_with("## Summary"))
        .unwrap_or(text.len());
    (&text[head_start..head_end], &text[body_start..])
}

fn merge_results(parts: Vec<serde_json::Value>) -> Option<serde_json::Value> {
    let mut parts = parts.into_iter();
    let mut all = parts.next()?;
    for part in parts {
        for key in ["runs", "failures", "paired", "notes"] {
            let extra = part[key].as_array().cloned().unwrap_or_default();
            match all[key].as_array_mut() {
                Some(list) => list.extend(extra),
                None => all[key] = serde_json::Value::Array(extra),
            }
        }
    }
    Some(all)
}

/// One `sheafbench run` of one spec; returns its exit code (`None`: killed by a signal).
fn run_workload(
    exe: &Path,
    spec: &Path,
    pass: &RunOptions<'_>,
    threads: &str,
    json: &Path,
    markdown: &Path,
) -> TaskResult<Option<i32>> {
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .arg("run")
        .arg(spec)
        .args([
            "--no-history",
            "--alloc",
            pass.alloc,
            "--threads",
            threads,
            "--json",
        ])
        .arg(json)
        .arg("--markdown")
        .arg(markdown);
    if pass.quick {
        run.arg("--quick");
    }
    if let Some(runs) = pass.runs {
        run.args(["--runs", &runs.to_string()]);
    }
    if let Some(duration) = pass.duration {
        run.args(["--duration", duration]);
    }
    eprintln!("xtask: running {}", util::describe(&run));
    let status = run
        .status()
        .map_err(|e| format!("cannot start {}: {e}", util::describe(&run)))?;
    Ok(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_scales_the_elapsed_time_by_the_planned_weight_left() {
        let s = Duration::from_secs;
        assert_eq!(eta(s(10), &[], &[s(1), s(2)]), None);
        assert_eq!(eta(s(10), &[s(1)], &[s(2), s(2)]), Some(s(40)));
        assert_eq!(eta(s(10), &[s(1), s(1)], &[]), Some(s(0)));
        assert_eq!(minutes(s(42)), "42s");
        assert_eq!(minutes(s(125)), "2m05s");
    }

    #[test]
    fn the_programs_suite_is_stress_packaged_or_all() {
        assert_eq!(programs_suite("stress").unwrap().as_deref(), Some("stress"));
        assert_eq!(programs_suite("all").unwrap(), None);
        assert!(programs_suite("fast").is_err());
        let options = Options::try_parse_from(["bench", "--programs"]).unwrap();
        assert_eq!(options.programs.as_deref(), Some("stress"));
        let options = Options::try_parse_from(["bench", "--programs", "all"]).unwrap();
        assert_eq!(options.programs.as_deref(), Some("all"));
        assert!(
            Options::try_parse_from(["bench"])
                .unwrap()
                .programs
                .is_none()
        );
    }

    #[test]
    fn merged_results_keep_the_first_header_and_every_run_and_failure() {
        let a = serde_json::json!({"schema": 1, "machine": {"cores": 2}, "runs": [{"workload": "a"}], "failures": []});
        let b = serde_json::json!({"schema": 1, "machine": {"cores": 9}, "runs": [{"workload": "b"}],
                                   "failures": [{"workload": "b", "allocator": "x"}]});
        let c = serde_json::json!({"runs": [{"workload": "c"}], "paired": [{"workload": "c"}]});
        let merged = merge_results(vec![a, b, c]).unwrap();
        assert_eq!(merged["machine"]["cores"], 2);
        let workloads: Vec<&str> = merged["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["workload"].as_str().unwrap())
            .collect();
        assert_eq!(workloads, ["a", "b", "c"]);
        assert_eq!(merged["failures"].as_array().unwrap().len(), 1);
        assert_eq!(merged["paired"].as_array().unwrap().len(), 1);
        assert!(merge_results(Vec::new()).is_none());
    }

    #[test]
    fn a_workload_report_splits_into_its_machine_lines_and_its_own_sections() {
        let text = "# sheafbench results\n\nCPU · 2 CPUs\n\nEnvironment: x.\n\n## Summary\n\n| a |\n\nNot measured:\n\n- n\n\n## burst\n\ntable\n\n## Warnings\n\n- w\n";
        let (head, body) = split_report(text);
        assert_eq!(head, "CPU · 2 CPUs\n\nEnvironment: x.\n\n");
        assert_eq!(body, "## burst\n\ntable\n\n## Warnings\n\n- w\n");
    }
}
