//! `sheafbench programs`: real programs run with each allocator preloaded (`LD_PRELOAD`), in
//! interleaved rounds, with wall time, user and system time and peak resident set per
//! program and allocator, and the ratios to a baseline allocator paired by round.
//!
//! The programs come from a manifest (`programs/programs.yaml`, see [`manifest`]). For each
//! program: its C file is compiled once (`cc -O2 -pthread`), its `setup` runs once without
//! preload, then each round runs it once under every allocator, in an order rotated from round
//! to round, each run in a fresh scratch directory with a free port. The wall time is taken
//! around spawn and wait; CPU times and peak RSS come from `wait4`'s resource usage of the
//! preloaded process (for a client/server program, the server's; the wall time is the
//! client's). Every run's output is checked against the reference allocator's run of the same
//! round (glibc's when it runs). A run that fails (exit status, signal, time-out, different
//! output) is a failure of that allocator on that program, reported with the end of its
//! output; the other allocators and programs go on, and the command exits with 1 at the end.

mod allocators;
pub(crate) mod manifest;
mod runner;

use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{CellAlignment, Table};
use harness::ResultFile;
use harness::machine::Machine;
use harness::result::{
    Failure, ProgramAllocator, ProgramResult, ProgramRound, ProgramsGeomean, ProgramsResult,
    RatioRounds,
};
use harness::stats;

use self::allocators::Allocator;
use self::manifest::{Check, Manifest, ProgramSpec, Suite, Values};
use crate::benchmark::rounds;
use crate::cli::ProgramsArgs;
use crate::error::CliError;
use crate::output::{format, interrupt, note, progress};

/// How long a server may take to accept connections.
const SERVER_START: Duration = Duration::from_secs(10);
/// Lines of a failed run's stderr (and stdout) kept in its report.
const TAIL_LINES: usize = 12;

/// The result file's name in the output directory.
pub(crate) const JSON: &str = "programs.json";
/// The Markdown report's name in the output directory.
pub(crate) const MARKDOWN: &str = "programs.md";

fn usage(option: &str, message: impl Into<String>) -> CliError {
    CliError::Usage {
        option: option.to_owned(),
        message: message.into(),
    }
}

/// Parses `--alloc`: names of [`allocators::NAMES`] (or `all`, the default), each once;
/// `explicit` when the user named them.
fn selected_allocators(list: &[String]) -> Result<(Vec<&'static str>, bool), CliError> {
    let names: Vec<&str> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() || names == ["all"] {
        return Ok((allocators::NAMES.to_vec(), false));
    }
    let mut out = Vec::new();
    for name in names {
        let Some(&known) = allocators::NAMES.iter().find(|n| **n == name) else {
            return Err(usage(
                &format!("--alloc {name}"),
                format!(
                    "unknown allocator; expected {} or all",
                    allocators::NAMES.join(", ")
                ),
            ));
        };
        if !out.contains(&known) {
            out.push(known);
        }
    }
    Ok((out, true))
}

/// The programs of `manifest` that `--suite` and `--program` select.
fn select<'m>(
    manifest: &'m Manifest,
    suite: Option<&str>,
    names: &[String],
) -> Result<Vec<&'m ProgramSpec>, CliError> {
    let suite = suite
        .map(|s| {
            Suite::parse(s.trim()).ok_or_else(|| {
                usage(
                    &format!("--suite {s}"),
                    "unknown suite; expected stress or packaged",
                )
            })
        })
        .transpose()?;
    let known: Vec<&str> = manifest.programs.iter().map(|p| p.name.as_str()).collect();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !known.contains(&name) {
            return Err(usage(
                &format!("--program {name}"),
                format!(
                    "no such program in {}; it has: {}",
                    manifest.file.display(),
                    known.join(", ")
                ),
            ));
        }
    }
    let chosen: Vec<&ProgramSpec> = manifest
        .programs
        .iter()
        .filter(|p| suite.is_none_or(|s| p.suite == s))
        .filter(|p| names.is_empty() || names.iter().any(|n| n.trim() == p.name))
        .collect();
    if chosen.is_empty() {
        return Err(usage(
            "--suite/--program",
            format!(
                "no program of {} is selected{}",
                manifest.file.display(),
                suite.map_or(String::new(), |s| format!(" (suite {})", s.name()))
            ),
        ));
    }
    Ok(chosen)
}

/// One run's output, kept for the check against the reference allocator's.
#[derive(Debug)]
struct Output {
    stdout: Vec<u8>,
    file: Option<Vec<u8>>,
}

/// A failed run: what happened and the end of its output.
#[derive(Debug)]
struct RunFailure {
    error: String,
    output: String,
}

/// Everything a program's runs share.
struct Context<'a> {
    manifest: &'a Manifest,
    bin: PathBuf,
    input: PathBuf,
    scratch: PathBuf,
    timeout: Duration,
}

impl Context<'_> {
    fn values(&self) -> Values {
        Values {
            bin: Some(self.bin.display().to_string()),
            programs: Some(self.manifest.dir.display().to_string()),
            input: Some(self.input.display().to_string()),
            work: None,
            port: None,
        }
    }

    /// A path of the manifest: expanded, and relative ones taken from the manifest's
    /// directory.
    fn path(&self, values: &Values, text: &str) -> PathBuf {
        let path = PathBuf::from(values.apply(text));
        if path.is_absolute() {
            path
        } else {
            self.manifest.dir.join(path)
        }
    }
}

/// The end of a run's stderr and stdout, for its failure report.
fn tails(stderr: &Path, stdout: &Path) -> String {
    let mut out = String::new();
    for (name, path) in [("stderr", stderr), ("stdout", stdout)] {
        let tail = runner::tail(path, TAIL_LINES);
        if !tail.is_empty() {
            out.push_str(&format!("{name} (last lines):\n{tail}\n"));
        }
    }
    out
}

/// Runs `program` once under `allocator` in a fresh scratch directory (removed afterwards).
fn run_once(
    ctx: &Context<'_>,
    program: &ProgramSpec,
    allocator: &Allocator,
    label: &str,
) -> Result<(ProgramRound, Output), RunFailure> {
    let dir = ctx.scratch.join(label);
    let _ = std::fs::remove_dir_all(&dir);
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| RunFailure {
        error: format!("cannot create {}: {e}", work.display()),
        output: String::new(),
    })?;
    let result = run_in(ctx, program, allocator, &dir, &work);
    runner::reap_orphans();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    ctx: &Context<'_>,
    program: &ProgramSpec,
    allocator: &Allocator,
    dir: &Path,
    work: &Path,
) -> Result<(ProgramRound, Output), RunFailure> {
    let fail = |error: String, output: String| RunFailure { error, output };
    let port = runner::free_port().map_err(|e| fail(e, String::new()))?;
    let values = Values {
        work: Some(work.display().to_string()),
        port: Some(port),
        ..ctx.values()
    };
    let stdin = program.stdin.as_ref().map(|s| ctx.path(&values, s));
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let argv = values.argv(&program.command);
    let preload = allocator.library.as_deref();
    let (client, server) = match &program.server {
        None => {
            let finished = runner::run(
                &runner::Spec {
                    argv: &argv,
                    cwd: work,
                    preload,
                    stdin: stdin.as_deref(),
                    stdout: &stdout,
                    stderr: &stderr,
                },
                ctx.timeout,
            )
            .map_err(|e| fail(e, String::new()))?;
            (finished.clone(), finished)
        }
        Some(server) => {
            let (server_out, server_err) = (dir.join("server.stdout"), dir.join("server.stderr"));
            let server_tails = || tails(&server_err, &server_out);
            let running = runner::spawn(&runner::Spec {
                argv: &values.argv(&server.command),
                cwd: work,
                preload,
                stdin: None,
                stdout: &server_out,
                stderr: &server_err,
            })
            .map_err(|e| fail(format!("server: {e}"), String::new()))?;
            if !runner::wait_for_port(port, SERVER_START) {
                running.kill();
                return Err(fail(
                    format!(
                        "server: no connection accepted on port {port} within {} s",
                        SERVER_START.as_secs()
                    ),
                    server_tails(),
                ));
            }
            let client = runner::run(
                &runner::Spec {
                    argv: &argv,
                    cwd: work,
                    preload: None,
                    stdin: stdin.as_deref(),
                    stdout: &stdout,
                    stderr: &stderr,
                },
                ctx.timeout,
            );
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    running.kill();
                    return Err(fail(format!("client: {e}"), String::new()));
                }
            };
            if let Some(why) = client.failure(ctx.timeout) {
                running.kill();
                return Err(fail(format!("client: {why}"), tails(&stderr, &stdout)));
            }
            let (stop_out, stop_err) = (dir.join("stop.stdout"), dir.join("stop.stderr"));
            let stop = runner::run(
                &runner::Spec {
                    argv: &values.argv(&server.stop),
                    cwd: work,
                    preload: None,
                    stdin: None,
                    stdout: &stop_out,
                    stderr: &stop_err,
                },
                ctx.timeout,
            );
            let finished = running
                .wait(ctx.timeout)
                .map_err(|e| fail(format!("server: {e}"), String::new()))?;
            if let Err(e) = stop {
                return Err(fail(format!("stop: {e}"), String::new()));
            }
            if let Some(why) = finished.failure(ctx.timeout) {
                return Err(fail(format!("server: {why}"), server_tails()));
            }
            (client, finished)
        }
    };
    if let Some(why) = client.failure(ctx.timeout) {
        return Err(fail(why, tails(&stderr, &stdout)));
    }
    let file = match &program.check_file {
        Some(name) => {
            let path = work.join(values.apply(name));
            Some(std::fs::read(&path).map_err(|e| {
                fail(
                    format!("check_file {name}: cannot read {}: {e}", path.display()),
                    tails(&stderr, &stdout),
                )
            })?)
        }
        None => None,
    };
    let output = Output {
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        file,
    };
    Ok((
        ProgramRound {
            round: 0,
            position: 0,
            wall_seconds: client.wall.as_secs_f64(),
            user_seconds: server.user_seconds,
            sys_seconds: server.sys_seconds,
            peak_rss_bytes: server.peak_rss_bytes,
        },
        output,
    ))
}

/// Why a run's output cannot be checked: a `stdout` or `first-line` check of a run that
/// printed nothing would pass whatever the program did (an input it never read, say).
fn nothing_to_check(check: Check, output: &Output) -> Option<String> {
    let checks_stdout = matches!(check, Check::Stdout | Check::FirstLine);
    (checks_stdout && output.stdout.is_empty()).then(|| {
        "printed nothing on stdout, so its output cannot be checked (use `check: status` for a \
         program that prints nothing)"
            .to_owned()
    })
}

/// Where `mine` differs from `reference` under `check`, or `None`.
fn differs(
    check: Check,
    mine: &Output,
    reference: &Output,
    check_file: Option<&str>,
) -> Option<String> {
    let first_line = |b: &[u8]| b.split(|c| *c == b'\n').next().unwrap_or(&[]).to_vec();
    let stdout = match check {
        Check::Stdout => (mine.stdout != reference.stdout).then(|| {
            let (a, b) = (
                String::from_utf8_lossy(&mine.stdout),
                String::from_utf8_lossy(&reference.stdout),
            );
            let at = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or_else(|| a.lines().count().min(b.lines().count()));
            let line = |t: &str| {
                t.lines()
                    .nth(at)
                    .unwrap_or("(no line)")
                    .chars()
                    .take(80)
                    .collect::<String>()
            };
            format!(
                "stdout differs at line {}: `{}` here, `{}` in the reference",
                at + 1,
                line(&a),
                line(&b)
            )
        }),
        Check::FirstLine => {
            (first_line(&mine.stdout) != first_line(&reference.stdout)).then(|| {
                format!(
                    "first line of stdout differs: `{}` here, `{}` in the reference",
                    String::from_utf8_lossy(&first_line(&mine.stdout)),
                    String::from_utf8_lossy(&first_line(&reference.stdout))
                )
            })
        }
        Check::Status => None,
    };
    stdout.or_else(|| {
        (mine.file != reference.file).then(|| {
            format!(
                "{} differs from the reference's ({} bytes here, {} there)",
                check_file.unwrap_or("the checked file"),
                mine.file.as_ref().map_or(0, Vec::len),
                reference.file.as_ref().map_or(0, Vec::len)
            )
        })
    })
}

/// A program being measured: per allocator, its rounds and its failure.
struct Measured<'a> {
    spec: &'a ProgramSpec,
    command: Vec<String>,
    rounds: Vec<Vec<ProgramRound>>,
    failures: Vec<Option<String>>,
}

/// Builds `program`'s C file into `bin`: `Err` with the compiler's output.
fn build(ctx: &Context<'_>, program: &ProgramSpec, file: &str) -> Result<(), RunFailure> {
    let source = ctx.path(&ctx.values(), file);
    let exe = ctx.bin.join(&program.name);
    let out = std::process::Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .map_err(|e| RunFailure {
            error: format!("build: cannot run cc: {e}"),
            output: String::new(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(RunFailure {
        error: format!(
            "build: `cc -O2 -pthread -o {} {}` failed ({})",
            exe.display(),
            source.display(),
            out.status
        ),
        output: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `setup` once, without preload.
fn setup(ctx: &Context<'_>, argv: &[String]) -> Result<(), RunFailure> {
    let argv = ctx.values().argv(argv);
    let (out, err) = (
        ctx.input.join(".setup.stdout"),
        ctx.input.join(".setup.stderr"),
    );
    let finished = runner::run(
        &runner::Spec {
            argv: &argv,
            cwd: &ctx.input,
            preload: None,
            stdin: None,
            stdout: &out,
            stderr: &err,
        },
        ctx.timeout,
    )
    .map_err(|e| RunFailure {
        error: format!("setup: {e}"),
        output: String::new(),
    })?;
    let tail = tails(&err, &out);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    match finished.failure(ctx.timeout) {
        None => Ok(()),
        Some(why) => Err(RunFailure {
            error: format!("setup: {why}"),
            output: tail,
        }),
    }
}

/// `a` over `b` paired by round, for a figure of the rounds.
fn paired(
    a: &[ProgramRound],
    b: &[ProgramRound],
    figure: fn(&ProgramRound) -> f64,
) -> Option<RatioRounds> {
    let pick = |r: &[ProgramRound]| r.iter().map(|x| (x.round, figure(x))).collect::<Vec<_>>();
    rounds::ratio_rounds(&pick(a), &pick(b))
}

fn wall(r: &ProgramRound) -> f64 {
    r.wall_seconds
}

fn rss(r: &ProgramRound) -> f64 {
    r.peak_rss_bytes as f64
}

/// The result entry of a measured program.
fn summarize(m: &Measured<'_>, allocators: &[Allocator], baseline: usize) -> ProgramResult {
    let usable = |i: usize| m.failures[i].is_none() && !m.rounds[i].is_empty();
    let entries = allocators
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let rounds = &m.rounds[i];
            let median = |f: fn(&ProgramRound) -> f64| {
                stats::median(&rounds.iter().map(f).collect::<Vec<_>>())
            };
            let versus = |figure| {
                (i != baseline && usable(i) && usable(baseline))
                    .then(|| paired(rounds, &m.rounds[baseline], figure))
                    .flatten()
            };
            ProgramAllocator {
                allocator: a.name.to_owned(),
                rounds: rounds.clone(),
                wall_seconds: median(wall),
                user_seconds: median(|r| r.user_seconds),
                sys_seconds: median(|r| r.sys_seconds),
                peak_rss_bytes: median(rss).map(|v| v.round() as u64),
                wall_ratio: versus(wall),
                rss_ratio: versus(rss),
                failure: m.failures[i].clone(),
            }
        })
        .collect();
    ProgramResult {
        name: m.spec.name.clone(),
        suite: m.spec.suite.name().to_owned(),
        about: m.spec.about.clone(),
        command: m.command.clone(),
        server: m.spec.server.is_some(),
        allocators: entries,
    }
}

/// Per allocator other than the baseline, the geometric mean over the programs of its ratios:
/// for each round every covered program completed under both, the geometric mean of that
/// round's ratios; their geometric mean is the estimate and the interval bootstraps them.
fn geomeans(
    programs: &[ProgramResult],
    allocators: &[Allocator],
    baseline: usize,
) -> Vec<ProgramsGeomean> {
    let versus = allocators[baseline].name;
    let mut out = Vec::new();
    for (i, a) in allocators.iter().enumerate() {
        if i == baseline {
            continue;
        }
        let covered: Vec<(&ProgramAllocator, &ProgramAllocator)> = programs
            .iter()
            .filter_map(|p| {
                let mine = &p.allocators[i];
                (mine.wall_ratio.is_some()).then(|| (mine, &p.allocators[baseline]))
            })
            .collect();
        let over_rounds = |figure: fn(&ProgramRound) -> f64| -> Option<RatioRounds> {
            let all_rounds: Vec<u32> = covered.first()?.0.rounds.iter().map(|r| r.round).collect();
            let mut per_round = Vec::new();
            for round in all_rounds {
                let ratios: Option<Vec<f64>> = covered
                    .iter()
                    .map(|(mine, base)| {
                        let x = mine.rounds.iter().find(|r| r.round == round).map(figure)?;
                        let y = base.rounds.iter().find(|r| r.round == round).map(figure)?;
                        (x > 0.0 && y > 0.0).then(|| x / y)
                    })
                    .collect();
                if let Some(g) = ratios.and_then(|r| stats::geometric_mean(&r)) {
                    per_round.push(g);
                }
            }
            rounds::ratio_of_rounds(per_round)
        };
        let names: Vec<String> = programs
            .iter()
            .filter(|p| p.allocators[i].wall_ratio.is_some())
            .map(|p| p.name.clone())
            .collect();
        out.push(ProgramsGeomean {
            allocator: a.name.to_owned(),
            versus: versus.to_owned(),
            programs: names,
            wall: over_rounds(wall),
            rss: over_rounds(rss),
        });
    }
    out
}

/// The default output directory: `results/runs/<time>/` of the checkout.
fn default_out() -> PathBuf {
    let time = harness::machine::utc_now().replace(':', "-");
    super::history::root()
        .join("results")
        .join("runs")
        .join(time)
}

/// The allocators that run: those found here, the baseline's and the reference's indexes
/// among them, and those the user named that are missing.
struct Lineup {
    found: Vec<Allocator>,
    missing_named: Vec<&'static str>,
    baseline: usize,
    reference: usize,
}

/// Finds the selected allocators' libraries; a missing one is a note (and a warning if the
/// user named it), none found an error.
fn lineup(
    args: &ProgramsArgs,
    (names, explicit): (Vec<&'static str>, bool),
    results: &mut ResultFile,
) -> Result<Lineup, CliError> {
    let lib_dir = allocators::lib_dir();
    let mut found: Vec<Allocator> = Vec::new();
    let mut missing_named = Vec::new();
    for name in names {
        match allocators::find(name, args.sheaf_malloc.as_deref(), &lib_dir) {
            Ok(a) => found.push(a),
            Err(why) => {
                if explicit {
                    missing_named.push(name);
                }
                note(results, format!("{why}: skipped"));
            }
        }
    }
    if !missing_named.is_empty() {
        eprintln!(
            "warning: --alloc names {} but {} not available here (see above); running the others",
            missing_named.join(", "),
            if missing_named.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        );
    }
    if found.is_empty() {
        return Err(usage(
            "--alloc",
            "none of the allocators is available here (see above)",
        ));
    }
    let index_of = |name: &str| found.iter().position(|a| a.name == name);
    let baseline = match &args.baseline {
        Some(b) => index_of(b).ok_or_else(|| {
            usage(
                &format!("--baseline {b}"),
                "that allocator is not available here (see above)",
            )
        })?,
        None => index_of("mimalloc")
            .or_else(|| index_of("glibc"))
            .unwrap_or(0),
    };
    let reference = index_of("glibc").unwrap_or(0);
    if found[reference].name != "glibc" {
        note(
            results,
            format!(
                "glibc is not selected: outputs are checked against {}'s",
                found[reference].name
            ),
        );
    }
    Ok(Lineup {
        found,
        missing_named,
        baseline,
        reference,
    })
}

/// Where a run's files go.
struct Places {
    out_dir: PathBuf,
    timeout: Duration,
}

impl Places {
    fn context<'m>(&self, manifest: &'m Manifest, program: &ProgramSpec) -> Context<'m> {
        Context {
            manifest,
            bin: self.out_dir.join("programs-bin"),
            input: self.out_dir.join("programs-input").join(&program.name),
            scratch: self.out_dir.join("programs-work"),
            timeout: self.timeout,
        }
    }
}

/// Before any measurement: each chosen program's requirements, build and setup. Returns the
/// programs ready to run; the others are notes or failures in `results`.
fn prepare<'m>(
    chosen: &[&'m ProgramSpec],
    manifest: &Manifest,
    places: &Places,
    results: &mut ResultFile,
) -> Result<Vec<&'m ProgramSpec>, CliError> {
    let mut ready: Vec<&ProgramSpec> = Vec::new();
    let cc = runner::on_path("cc").is_some();
    for &program in chosen {
        let ctx = places.context(manifest, program);
        if let Some(r) = program
            .requires
            .iter()
            .find(|r| runner::on_path(&r.exe).is_none())
        {
            note(
                results,
                format!(
                    "{}: skipped: `{}` is not installed (apt-get install {}, or cargo xtask setup-programs)",
                    program.name, r.exe, r.package
                ),
            );
            continue;
        }
        if let Some(file) = &program.build {
            if !cc {
                note(
                    results,
                    format!(
                        "{}: skipped: no C compiler `cc` on PATH (apt-get install gcc)",
                        program.name
                    ),
                );
                continue;
            }
            let _ = std::fs::create_dir_all(&ctx.bin);
            eprintln!("programs: building {}", program.name);
            if let Err(f) = build(&ctx, program, file) {
                report_failure(results, program, "all", &f);
                continue;
            }
        }
        let _ = std::fs::remove_dir_all(&ctx.input);
        if let Err(e) = std::fs::create_dir_all(&ctx.input) {
            return Err(usage(
                "--out",
                format!("cannot create {}: {e}", ctx.input.display()),
            ));
        }
        if let Some(argv) = &program.setup {
            eprintln!("programs: setting up {}", program.name);
            if let Err(f) = setup(&ctx, argv) {
                report_failure(results, program, "all", &f);
                continue;
            }
        }
        ready.push(program);
    }
    Ok(ready)
}

/// Runs one round of `m`'s program under every allocator not failed yet, in the round's
/// rotated order; returns each allocator's output (for the check) and keeps its figures or
/// its failure in `m`.
fn run_round(
    ctx: &Context<'_>,
    m: &mut Measured<'_>,
    lineup: &Lineup,
    round: u32,
    rounds_in_all: u32,
    bar: &mut progress::Progress,
    results: &mut ResultFile,
) -> Vec<Option<Output>> {
    let program = m.spec;
    let found = &lineup.found;
    let order: Vec<usize> = (0..found.len()).collect();
    let mut outputs: Vec<Option<Output>> = found.iter().map(|_| None).collect();
    for (position, index) in rounds::order(&order, round).into_iter().enumerate() {
        let allocator = &found[index];
        bar.start(&format!(
            "{} / {} / round {} of {rounds_in_all}",
            program.name,
            allocator.name,
            round + 1,
        ));
        if m.failures[index].is_some() {
            bar.finish_one(Duration::from_secs(1));
            continue;
        }
        let label = format!("{}-{}-{}", program.name, allocator.name, round);
        let outcome = run_once(ctx, program, allocator, &label).and_then(|done| {
            match nothing_to_check(program.check, &done.1) {
                Some(error) => Err(RunFailure {
                    error,
                    output: String::new(),
                }),
                None => Ok(done),
            }
        });
        match outcome {
            Ok((mut figures, output)) => {
                figures.round = round;
                figures.position = position as u32;
                m.rounds[index].push(figures);
                outputs[index] = Some(output);
            }
            Err(_) if interrupt::requested() => {}
            Err(f) => {
                let f = RunFailure {
                    error: format!("round {}: {}", round + 1, f.error),
                    output: f.output,
                };
                bar.suspend(|| report_failure(results, program, allocator.name, &f));
                m.failures[index] = Some(f.error);
            }
        }
        bar.finish_one(Duration::from_secs(1));
        if interrupt::requested() {
            break;
        }
    }
    outputs
}

/// Checks a round's outputs against the reference allocator's: a differing output fails
/// that allocator and drops its figures of the round.
fn check_round(
    m: &mut Measured<'_>,
    lineup: &Lineup,
    round: u32,
    mut outputs: Vec<Option<Output>>,
    bar: &mut progress::Progress,
    results: &mut ResultFile,
) {
    let program = m.spec;
    let reference = &lineup.found[lineup.reference];
    let Some(expected) = outputs[lineup.reference].take() else {
        if outputs.iter().any(Option::is_some) && !interrupt::requested() {
            note(
                results,
                format!(
                    "{}: round {}: outputs not checked: {} did not complete it",
                    program.name,
                    round + 1,
                    reference.name
                ),
            );
        }
        return;
    };
    for (index, output) in outputs.iter().enumerate() {
        let Some(output) = output else { continue };
        if let Some(why) = differs(
            program.check,
            output,
            &expected,
            program.check_file.as_deref(),
        ) {
            let f = RunFailure {
                error: format!(
                    "round {}: output differs from {}'s: {why}",
                    round + 1,
                    reference.name
                ),
                output: String::new(),
            };
            bar.suspend(|| report_failure(results, program, lineup.found[index].name, &f));
            m.rounds[index].retain(|r| r.round != round);
            m.failures[index] = Some(f.error);
        }
    }
}

/// `programs`.
pub(crate) fn run(args: ProgramsArgs) -> Result<(), CliError> {
    if args.rounds == 0 {
        return Err(usage("--rounds 0", "at least one round is needed"));
    }
    if args.timeout == 0 {
        return Err(usage("--timeout 0", "the per-run limit is at least 1 s"));
    }
    let (names, explicit) = selected_allocators(&args.alloc)?;
    if let Some(b) = &args.baseline
        && !names.contains(&b.as_str())
    {
        return Err(CliError::Baseline {
            name: b.clone(),
            running: names.join(", "),
        });
    }
    let manifest_file = args.manifest.clone().unwrap_or_else(|| {
        super::history::root()
            .join("programs")
            .join("programs.yaml")
    });
    let manifest = Manifest::load(&manifest_file).map_err(CliError::Manifest)?;
    let chosen = select(&manifest, args.suite.as_deref(), &args.program)?;
    if let Some(path) = &args.sheaf_malloc
        && !path.exists()
    {
        return Err(usage(
            &format!("--sheaf-malloc {}", path.display()),
            "no such file (build it with `cargo build --release -p sheaf-malloc`)",
        ));
    }
    runner::become_subreaper().map_err(|e| usage("programs", e))?;
    let mut results = ResultFile::new(Machine::detect());
    let lineup = lineup(&args, (names, explicit), &mut results)?;

    let out_dir = args.out.clone().unwrap_or_else(default_out);
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        usage(
            &format!("--out {}", out_dir.display()),
            format!("cannot create it: {e}"),
        )
    })?;
    let out_dir = std::fs::canonicalize(&out_dir).unwrap_or(out_dir);
    let json = out_dir.join(JSON);
    let places = Places {
        out_dir: out_dir.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let found = &lineup.found;
    let mut summary = ProgramsResult {
        manifest: manifest.file.display().to_string(),
        rounds: args.rounds,
        baseline: found[lineup.baseline].name.to_owned(),
        reference: found[lineup.reference].name.to_owned(),
        allocators: found.iter().map(Allocator::describe).collect(),
        programs: Vec::new(),
        geomean: Vec::new(),
    };
    results.programs = Some(summary.clone());
    let ready = prepare(&chosen, &manifest, &places, &mut results)?;
    export_json(&results, &json)?;

    interrupt::install();
    let total = ready.len() * found.len() * args.rounds as usize;
    let mut bar = progress::Progress::new(total, Duration::from_secs(total as u64));
    for &program in &ready {
        let ctx = places.context(&manifest, program);
        let mut m = Measured {
            spec: program,
            command: ctx.values().argv(&program.command),
            rounds: vec![Vec::new(); found.len()],
            failures: vec![None; found.len()],
        };
        for round in 0..args.rounds {
            let outputs = run_round(
                &ctx,
                &mut m,
                &lineup,
                round,
                args.rounds,
                &mut bar,
                &mut results,
            );
            check_round(&mut m, &lineup, round, outputs, &mut bar, &mut results);
            summary.programs.retain(|p| p.name != program.name);
            summary.programs.push(summarize(&m, found, lineup.baseline));
            summary.geomean = geomeans(&summary.programs, found, lineup.baseline);
            results.programs = Some(summary.clone());
            export_json(&results, &json)?;
            if interrupt::requested() {
                bar.finish();
                let _ = std::fs::remove_dir_all(out_dir.join("programs-work"));
                return Err(CliError::Interrupted {
                    kept: summary
                        .programs
                        .iter()
                        .flat_map(|p| &p.allocators)
                        .map(|a| a.rounds.len())
                        .sum::<usize>()
                        + results.failures.len(),
                    files: format!("kept in {}", json.display()),
                });
            }
        }
    }
    bar.finish();
    let _ = std::fs::remove_dir_all(out_dir.join("programs-work"));
    report(&args, &lineup, &results, &summary, &out_dir, &json)
}

/// After the last round: the table, the Markdown report, the charts, the history record and
/// the exit status (1 when any run failed).
fn report(
    args: &ProgramsArgs,
    lineup: &Lineup,
    results: &ResultFile,
    summary: &ProgramsResult,
    out_dir: &Path,
    json: &Path,
) -> Result<(), CliError> {
    let found = &lineup.found;
    print!("{}", render(summary, found, false));
    harness::result::write_atomic(
        &out_dir.join(MARKDOWN),
        markdown(results, summary, found).as_bytes(),
    )?;
    for (file, figure) in [
        ("programs-wall.svg", Figure::Wall),
        ("programs-rss.svg", Figure::Rss),
    ] {
        if !summary.programs.is_empty() {
            chart(&out_dir.join(file), results, summary, figure)?;
        }
    }
    super::history::record(
        &args.history,
        super::history::of_result_file(history::RunKind::Programs, results, Some(json)),
    );
    println!(
        "files in {}: {JSON}, {MARKDOWN}, programs-wall.svg, programs-rss.svg",
        out_dir.display()
    );
    if !lineup.missing_named.is_empty() {
        eprintln!(
            "note: not run (not available here): {}",
            lineup.missing_named.join(", ")
        );
    }
    if !results.failures.is_empty() {
        return Err(CliError::ProgramsFailed(results.failures.len()));
    }
    Ok(())
}

fn export_json(results: &ResultFile, path: &Path) -> Result<(), CliError> {
    crate::export::write(&crate::export::JsonExporter, results, None, path)
}

/// Prints a failure with the end of its output and keeps it in `results`.
fn report_failure(
    results: &mut ResultFile,
    program: &ProgramSpec,
    allocator: &str,
    f: &RunFailure,
) {
    eprintln!("error: {} / {allocator}: {}", program.name, f.error);
    for line in f.output.lines() {
        eprintln!("  | {line}");
    }
    results.failures.push(Failure {
        workload: program.name.clone(),
        allocator: allocator.to_owned(),
        threads: 0,
        error: f.error.clone(),
        stderr: f.output.clone(),
    });
}

/// A ratio with its interval: `1.03 [0.98..1.07]`, `-` without one.
fn ratio_cell(r: Option<&RatioRounds>) -> String {
    r.map_or_else(
        || "-".to_owned(),
        |r| format::ratio_with_interval(r.estimate, r.interval),
    )
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s"))
}

fn mebibytes(b: Option<u64>) -> String {
    b.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}

/// The table: a row per (program, allocator), then a geometric-mean row per allocator; its
/// caption first. `markdown`: a Markdown table instead of the terminal's.
fn render(summary: &ProgramsResult, allocators: &[Allocator], markdown: bool) -> String {
    let base = &summary.baseline;
    let mut table = Table::new();
    table.load_style(if markdown {
        ASCII_MARKDOWN
    } else {
        UTF8_FULL_CONDENSED
    });
    table.set_header(vec![
        "program".to_owned(),
        "allocator".to_owned(),
        "wall".to_owned(),
        "user".to_owned(),
        "sys".to_owned(),
        "peak RSS".to_owned(),
        format!("wall vs {base}"),
        format!("RSS vs {base}"),
        "status".to_owned(),
    ]);
    for p in &summary.programs {
        for a in &p.allocators {
            let is_base = a.allocator == *base && a.failure.is_none();
            table.add_row(vec![
                p.name.clone(),
                a.allocator.clone(),
                seconds(a.wall_seconds),
                seconds(a.user_seconds),
                seconds(a.sys_seconds),
                mebibytes(a.peak_rss_bytes),
                if is_base {
                    "1".into()
                } else {
                    ratio_cell(a.wall_ratio.as_ref())
                },
                if is_base {
                    "1".into()
                } else {
                    ratio_cell(a.rss_ratio.as_ref())
                },
                match &a.failure {
                    Some(why) => format!("FAILED: {}", why.chars().take(60).collect::<String>()),
                    None => format!("ok ({} rounds)", a.rounds.len()),
                },
            ]);
        }
    }
    let count = summary.programs.len();
    for g in &summary.geomean {
        table.add_row(vec![
            "geomean".to_owned(),
            g.allocator.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            ratio_cell(g.wall.as_ref()),
            ratio_cell(g.rss.as_ref()),
            format!("{} of {count} programs", g.programs.len()),
        ]);
    }
    for col in 2..8 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let libraries: Vec<String> = allocators
        .iter()
        .map(|a| match (&a.library, &a.version) {
            (None, _) => format!("{} (no preload)", a.name),
            (Some(_), Some(v)) => format!("{} {v}", a.name),
            (Some(_), None) => a.name.to_owned(),
        })
        .collect();
    let caption = format!(
        "programs: {} rounds, allocators interleaved (order rotated each round): {}; medians over rounds; ratios over {base} paired by round [95% interval], lower is better; outputs checked against {}",
        summary.rounds,
        libraries.join(", "),
        summary.reference
    );
    if markdown {
        format!("{caption}.\n\n{table}\n")
    } else {
        format!("{caption}\n{table}\n")
    }
}

/// The Markdown report of the run (`programs.md`): the table, the failures and the notes.
fn markdown(results: &ResultFile, summary: &ProgramsResult, allocators: &[Allocator]) -> String {
    let mut md = format!(
        "## Real programs\n\n{}\n",
        render(summary, allocators, true)
    );
    if !results.failures.is_empty() {
        md.push_str("### Failures\n\n");
        for f in &results.failures {
            md.push_str(&format!(
                "- `{}` / `{}`: {}\n",
                f.workload, f.allocator, f.error
            ));
        }
        md.push('\n');
    }
    if !results.notes.is_empty() {
        md.push_str("### Notes\n\n");
        for n in &results.notes {
            md.push_str(&format!("- {n}\n"));
        }
        md.push('\n');
    }
    md
}

/// Which ratio a chart shows.
#[derive(Clone, Copy)]
enum Figure {
    Wall,
    Rss,
}

/// A bar per (program, allocator) and per allocator's geometric mean: the ratio to the
/// baseline, the whisker half the interval's width, the rounds' ratios as dots.
fn chart(
    path: &Path,
    results: &ResultFile,
    summary: &ProgramsResult,
    figure: Figure,
) -> Result<(), CliError> {
    let pick = |a: &ProgramAllocator| match figure {
        Figure::Wall => a.wall_ratio.clone(),
        Figure::Rss => a.rss_ratio.clone(),
    };
    let groups: Vec<String> = summary
        .allocators
        .iter()
        .map(|a| a.name.clone())
        .filter(|n| *n != summary.baseline)
        .collect();
    let bar = |label: String, group: &str, r: &RatioRounds| harness::chart::Bar {
        label,
        value: r.estimate,
        spread: r.interval.map_or(0.0, |(low, high)| (high - low) / 2.0),
        group: groups.iter().position(|g| g == group).unwrap_or(0),
        rounds: r.rounds.clone(),
    };
    let mut bars = Vec::new();
    for p in &summary.programs {
        for a in &p.allocators {
            if let Some(r) = pick(a) {
                bars.push(bar(
                    format!("{} / {}", p.name, a.allocator),
                    &a.allocator,
                    &r,
                ));
            }
        }
    }
    for g in &summary.geomean {
        let r = match figure {
            Figure::Wall => g.wall.as_ref(),
            Figure::Rss => g.rss.as_ref(),
        };
        if let Some(r) = r {
            bars.push(bar(format!("geomean / {}", g.allocator), &g.allocator, r));
        }
    }
    let (title, desc) = match figure {
        Figure::Wall => ("programs: wall time", "wall time"),
        Figure::Rss => ("programs: peak RSS", "peak RSS"),
    };
    crate::export::svg::write(
        path,
        harness::chart::bars(
            &format!("{title} over {} (lower is better)", summary.baseline),
            &format!("{desc} / {}'s, paired by round", summary.baseline),
            &groups,
            &bars,
            &crate::export::svg::footer(results),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(round: u32, wall: f64, rss: u64) -> ProgramRound {
        ProgramRound {
            round,
            position: 0,
            wall_seconds: wall,
            user_seconds: wall,
            sys_seconds: 0.0,
            peak_rss_bytes: rss,
        }
    }

    fn allocator(name: &'static str) -> Allocator {
        Allocator {
            name,
            library: None,
            package: None,
            version: None,
        }
    }

    #[test]
    fn the_geometric_mean_pairs_the_programs_round_by_round() {
        let spec = |name: &str| ProgramSpec {
            name: name.into(),
            suite: Suite::Stress,
            about: String::new(),
            build: None,
            setup: None,
            command: vec!["x".into()],
            stdin: None,
            check: Check::Stdout,
            check_file: None,
            requires: Vec::new(),
            server: None,
        };
        let allocators = [allocator("glibc"), allocator("sheaf-malloc")];
        let (a, b) = (spec("a"), spec("b"));
        // Program a: sheaf-malloc takes 2x the time; program b: half. RSS 1.5x and equal.
        let ma = Measured {
            spec: &a,
            command: Vec::new(),
            rounds: vec![
                vec![round(0, 1.0, 100), round(1, 2.0, 100)],
                vec![round(0, 2.0, 150), round(1, 4.0, 150)],
            ],
            failures: vec![None, None],
        };
        let mb = Measured {
            spec: &b,
            command: Vec::new(),
            rounds: vec![
                vec![round(0, 4.0, 100), round(1, 4.0, 100)],
                vec![round(0, 2.0, 100), round(1, 2.0, 100)],
            ],
            failures: vec![None, None],
        };
        let programs = [
            summarize(&ma, &allocators, 0),
            summarize(&mb, &allocators, 0),
        ];
        let wall = programs[0].allocators[1].wall_ratio.as_ref().unwrap();
        assert_eq!(wall.rounds, [2.0, 2.0]);
        assert!(programs[0].allocators[0].wall_ratio.is_none());
        assert_eq!(programs[0].allocators[1].wall_seconds, Some(3.0));
        let g = geomeans(&programs, &allocators, 0);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].programs, ["a", "b"]);
        let wall = g[0].wall.as_ref().unwrap();
        assert!((wall.estimate - 1.0).abs() < 1e-12, "{wall:?}");
        let rss = g[0].rss.as_ref().unwrap();
        assert!((rss.estimate - 1.5f64.sqrt()).abs() < 1e-12, "{rss:?}");
        // A failed program leaves the geometric mean.
        let mut failed = mb;
        failed.failures[1] = Some("exit status 3".into());
        let programs = [
            summarize(&ma, &allocators, 0),
            summarize(&failed, &allocators, 0),
        ];
        assert!(programs[1].allocators[1].wall_ratio.is_none());
        let g = geomeans(&programs, &allocators, 0);
        assert_eq!(g[0].programs, ["a"]);
        assert!((g[0].wall.as_ref().unwrap().estimate - 2.0).abs() < 1e-12);
    }

    #[test]
    fn outputs_differ_by_the_check() {
        let out = |s: &str| Output {
            stdout: s.as_bytes().to_vec(),
            file: None,
        };
        let (a, b) = (out("sum 1\nt 0.5\n"), out("sum 1\nt 0.7\n"));
        assert_eq!(
            differs(Check::Stdout, &a, &b, None).unwrap(),
            "stdout differs at line 2: `t 0.5` here, `t 0.7` in the reference"
        );
        assert_eq!(differs(Check::FirstLine, &a, &b, None), None);
        assert!(differs(Check::FirstLine, &out("sum 2\n"), &b, None).is_some());
        assert_eq!(differs(Check::Status, &out("x"), &b, None), None);
        assert!(nothing_to_check(Check::Stdout, &out("")).is_some());
        assert!(nothing_to_check(Check::FirstLine, &out("")).is_some());
        assert_eq!(nothing_to_check(Check::Stdout, &out("sum 1\n")), None);
        assert_eq!(nothing_to_check(Check::Status, &out("")), None);
        let with_file = Output {
            stdout: b"sum 1\n".to_vec(),
            file: Some(vec![1, 2]),
        };
        let other = Output {
            stdout: b"sum 1\n".to_vec(),
            file: Some(vec![1]),
        };
        assert!(
            differs(Check::Status, &with_file, &other, Some("out.ppm"))
                .unwrap()
                .starts_with("out.ppm differs")
        );
    }

    #[test]
    fn allocator_names_are_checked() {
        assert_eq!(selected_allocators(&[]).unwrap().0.len(), 5);
        let (names, explicit) =
            selected_allocators(&["glibc".into(), "sheaf-malloc".into(), "glibc".into()]).unwrap();
        assert_eq!(names, ["glibc", "sheaf-malloc"]);
        assert!(explicit);
        let err = selected_allocators(&["hoard".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--alloc hoard: unknown allocator"), "{err}");
    }
}
