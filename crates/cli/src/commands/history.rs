//! `sheafbench history` (list, trend, import), and the recording every `run`, `sweep`,
//! `scale`, `programs` and `conformance` does unless `--no-history` is given.
//!
//! Recording comes after the result file is written, in one transaction, and never changes
//! the command's outcome: a store that is corrupt, locked past its timeout or unreachable is
//! one line on stderr. The `history` commands themselves fail on it with exit code 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use harness::ResultFile;
use history::{Filter, Location, NewRun, RunKind, SeriesQuery};

use crate::cli::{DbArg, HistoryArgs, HistoryCommand};
use crate::error::CliError;

/// The checkout the command runs in (the nearest directory up from here holding `.git`),
/// else the current directory: the default store is `results/history.sqlite` under it.
pub(crate) fn root() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    here.ancestors()
        .find(|dir| dir.join(".git").exists())
        .map_or_else(|| here.clone(), Path::to_path_buf)
}

/// The store `--db` names, else `SHEAFBENCH_DB`, else the checkout's default file.
pub(crate) fn location(db: &DbArg) -> Location {
    Location::resolve(db.db.as_deref(), &root())
}

/// Records `run` unless `--no-history`; a failure is one line on stderr, never an error.
pub(crate) fn record(args: &HistoryArgs, run: NewRun) {
    if args.no_history {
        return;
    }
    let location = location(&args.db);
    let run = run.with_branch_of(&root());
    if let Err(error) = history::open(&location).and_then(|mut store| store.record(&run)) {
        eprintln!("warning: not recorded in the results history ({error})");
    }
}

/// A run of `kind` from a result file, with the command line as its configuration and the
/// JSON file it was written to as its source.
pub(crate) fn of_result_file(kind: RunKind, file: &ResultFile, json: Option<&Path>) -> NewRun {
    let mut run = NewRun::from_result_file(kind, file);
    run.config = serde_json::json!({ "args": std::env::args().skip(1).collect::<Vec<_>>() });
    run.source = json.map(|p| p.display().to_string());
    run
}

/// A result file named by `arg`: the file when one exists there, else a run of the history
/// (`latest`, `latest~N`, a run id, a revision) of `run`, `sweep` or `bench`.
pub(crate) fn load_result(arg: &Path, db: &DbArg) -> Result<ResultFile, CliError> {
    if arg.exists() {
        return Ok(ResultFile::load(arg)?);
    }
    let text = arg.to_string_lossy();
    let looks_like_reference = text == "latest"
        || text.starts_with("latest~")
        || (!text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit()));
    if !looks_like_reference {
        // Not a reference either: the file's own error.
        return Ok(ResultFile::load(arg)?);
    }
    let mut store = history::open(&location(db))?;
    let id = store.resolve(&text, &[RunKind::Run, RunKind::Sweep, RunKind::Bench])?;
    let document = store.document(id)?;
    serde_json::from_value(document).map_err(|e| {
        CliError::Result(harness::result::ResultError::Parse {
            file: format!("history run {id}"),
            message: e.to_string(),
        })
    })
}

/// `history ...`.
pub(crate) fn run(command: HistoryCommand) -> Result<(), CliError> {
    match command {
        HistoryCommand::List(args) => {
            let kind = args
                .kind
                .as_deref()
                .map(str::parse::<RunKind>)
                .transpose()
                .map_err(|message| CliError::Usage {
                    option: "--kind".into(),
                    message,
                })?;
            let filter = Filter {
                workload: args.workload,
                allocator: args.alloc,
                machine: args.machine,
                revision: args.revision,
                since: args.since,
                kind,
            };
            let mut store = history::open(&location(&args.db))?;
            let runs = store.list(&filter)?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header([
                "id", "time", "kind", "revision", "branch", "machine", "cpu", "figures",
            ]);
            for r in &runs {
                let mut revision: String = r.revision.chars().take(10).collect();
                if r.dirty {
                    revision.push_str("-dirty");
                }
                let kind = match &r.tag {
                    Some(tag) => format!("{} ({tag})", r.kind),
                    None => r.kind.clone(),
                };
                table.add_row([
                    r.id.to_string(),
                    r.time.clone(),
                    kind,
                    revision,
                    r.branch.clone().unwrap_or_else(|| "-".into()),
                    r.machine.chars().take(8).collect(),
                    r.cpu.clone(),
                    r.figures.to_string(),
                ]);
            }
            println!("{table}");
            println!("{} run(s) in {}", runs.len(), store.location());
            Ok(())
        }
        HistoryCommand::Trend(args) => trend(args),
        HistoryCommand::Import(args) => import(&args.paths, &args.db),
    }
}

fn trend(args: crate::cli::HistoryTrendArgs) -> Result<(), CliError> {
    if let Some(svg) = &args.svg {
        crate::benchmark::plan::check_output("--svg", Some(svg))?;
    }
    let mut store = history::open(&location(&args.db))?;
    // The machine filter reads as `list`'s: resolve it to fingerprints through the runs.
    let machines: Option<Vec<String>> = match &args.machine {
        Some(m) => Some(
            store
                .list(&Filter {
                    machine: Some(m.clone()),
                    ..Filter::default()
                })?
                .into_iter()
                .map(|r| r.machine)
                .collect(),
        ),
        None => None,
    };
    let points: Vec<history::Point> = store
        .series(&SeriesQuery {
            workload: args.workload.clone(),
            allocator: args.allocator.clone(),
            name: args.figure.clone(),
            threads: args.threads,
            ..SeriesQuery::default()
        })?
        .into_iter()
        .filter(|p| machines.as_ref().is_none_or(|m| m.contains(&p.machine)))
        .collect();
    if points.is_empty() {
        return Err(CliError::Usage {
            option: format!("trend {} {}", args.workload, args.allocator),
            message: format!(
                "no recorded figure `{}` (see `sheafbench history list --workload {}`)",
                args.figure, args.workload
            ),
        });
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "run",
        "time",
        "revision",
        "machine",
        "threads",
        &args.figure,
    ]);
    for p in &points {
        let value = match (p.low, p.high) {
            (Some(low), Some(high)) => format!("{:.4} [{low:.4}, {high:.4}]", p.value),
            _ => format!("{:.4}", p.value),
        };
        table.add_row([
            p.run.to_string(),
            p.time.clone(),
            p.revision.chars().take(10).collect(),
            p.machine.chars().take(8).collect(),
            p.threads.map_or_else(|| "-".into(), |t| t.to_string()),
            value,
        ]);
    }
    println!("{table}");
    if let Some(path) = &args.svg {
        let mut runs: Vec<history::RunId> = points.iter().map(|p| p.run).collect();
        runs.dedup();
        let labels: Vec<String> = runs.iter().map(|id| format!("#{id}")).collect();
        let mut series: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for p in &points {
            let index = runs.iter().position(|r| *r == p.run).unwrap_or(0);
            let name = match p.threads {
                Some(t) => format!("{} {t}t", &p.machine[..p.machine.len().min(8)]),
                None => p.machine.chars().take(8).collect(),
            };
            series
                .entry(name)
                .or_default()
                .push((index, p.value, p.low.zip(p.high)));
        }
        let series: Vec<harness::chart::TrendSeries> = series.into_iter().collect();
        let first = points.first().map_or("", |p| p.time.as_str());
        let last = points.last().map_or("", |p| p.time.as_str());
        crate::export::svg::write(
            path,
            harness::chart::trend(
                &format!("{} / {}: {}", args.workload, args.allocator, args.figure),
                &args.figure,
                &labels,
                &series,
                &format!(
                    "{} runs, {first} to {last} · revisions {} to {}",
                    runs.len(),
                    short(points.first()),
                    short(points.last()),
                ),
            ),
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The first ten digits of a point's revision, for a chart's footer.
fn short(point: Option<&history::Point>) -> String {
    point.map_or_else(String::new, |p| p.revision.chars().take(10).collect())
}

/// The result files under `path` (itself when a file), sorted, each with the kind it is
/// recorded as. A directory of `cargo xtask bench` (it holds `results.json` and `report.md`)
/// gives its merged `results.json` only, as a bench: the per-workload files beside it hold
/// the same measurements. The rounds of a gate (`ratio-round-*.json`) are the gate's own.
fn json_files(path: &Path, out: &mut Vec<(PathBuf, RunKind)>) -> std::io::Result<()> {
    if !path.is_dir() {
        out.push((path.to_path_buf(), RunKind::Run));
        return Ok(());
    }
    let merged = path.join("results.json");
    if merged.is_file() && path.join("report.md").is_file() {
        out.push((merged, RunKind::Bench));
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if entry.is_dir() {
            json_files(&entry, out)?;
        } else if name.ends_with(".json") && !name.starts_with("ratio-round-") {
            out.push((entry, RunKind::Run));
        }
    }
    Ok(())
}

fn import(paths: &[PathBuf], db: &DbArg) -> Result<(), CliError> {
    // The store first: one that cannot be opened fails before any directory is searched.
    let mut store = history::open(&location(db))?;
    let mut files = Vec::new();
    for path in paths {
        json_files(path, &mut files).map_err(|source| {
            CliError::Result(harness::result::ResultError::Read {
                file: path.display().to_string(),
                source,
            })
        })?;
    }
    // A file already recorded (same source and date) is not recorded twice.
    let known: Vec<(Option<String>, String)> = store
        .list(&Filter::default())?
        .into_iter()
        .map(|r| (r.source, r.time))
        .collect();
    let (mut imported, mut skipped, mut unreadable) = (0, 0, 0);
    for (file, kind) in &files {
        let result = match ResultFile::load(file) {
            Ok(result) => result,
            Err(error) => {
                // Gate files, conformance reports and merged copies are not result files.
                eprintln!("skipped: {error}");
                unreadable += 1;
                continue;
            }
        };
        let source = file.display().to_string();
        if known.contains(&(Some(source.clone()), result.date.clone())) {
            skipped += 1;
            continue;
        }
        let mut run = NewRun::from_result_file(*kind, &result);
        run.source = Some(source);
        run.config = serde_json::json!({ "imported": true });
        store.record(&run)?;
        imported += 1;
    }
    println!(
        "imported {imported} result file(s) into {}; {skipped} already there, {unreadable} not result files",
        store.location()
    );
    Ok(())
}
