//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Benchmark and conformance runner for object-cache allocators (sheaf and its baselines).
#[derive(Debug, Parser)]
#[command(name = "sheafbench", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List allocators, workload kinds, and each counter with whether this machine supports it.
    List,
    /// Run workloads against allocators and print a table.
    Run(RunArgs),
    /// Run one workload over a list of values of one spec field.
    Sweep(SweepArgs),
    /// Scaling curves: one workload at 1..N tasks, as threads sharing a cache and as
    /// processes with a cache each, throughput per task count.
    Scale(ScaleArgs),
    /// Real programs with each allocator preloaded (LD_PRELOAD), in interleaved rounds: wall,
    /// user and system time and peak RSS per program, with ratios to a baseline allocator.
    Programs(ProgramsArgs),
    /// Compare two result files figure by figure: a verdict where a change exceeds the noise.
    Compare(CompareArgs),
    /// Measure two builds of sheafbench in the same interleaved rounds: per workload, thread
    /// count and allocator, the change from the old build to the new with a verdict.
    Ab(AbArgs),
    /// Check the API contract clauses on allocators.
    Conformance(ConformanceArgs),
    /// Address-space traces for the `trace-replay` kind.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// The results history: every run, sweep, scale, programs, bench, gate and conformance
    /// result recorded.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Measure one (workload, allocator, threads) and print the result as JSON (internal:
    /// the parent process runs every measurement in a child of its own).
    #[command(name = "__measure", hide = true)]
    Measure(MeasureArgs),
}

/// Options shared by `run` and `sweep`.
#[derive(Debug, Args)]
pub(crate) struct MeasureSelection {
    /// Allocators to run: comma-separated names, or `all` (the default; `sweep` over
    /// `sheaf_capacity` or a barn limit defaults to the designs that field changes).
    #[arg(long, value_delimiter = ',')]
    pub(crate) alloc: Vec<String>,
    /// Thread counts (overrides the spec's `threads`): a list (1,2,4), a range (1..4, both
    /// ends included) or both (1..4,8); for `scale`, the task counts (default 1..CPUs).
    #[arg(long)]
    pub(crate) threads: Option<String>,
    /// Length of each measured run, e.g. 2s or 500ms (overrides `duration`/`ops`).
    #[arg(long)]
    pub(crate) duration: Option<String>,
    /// Rounds (overrides `runs`): each round measures every allocator (in `sweep`, every
    /// value on every allocator) once, in an order rotated from round to round; figures are
    /// medians over rounds, ratios paired by round.
    #[arg(long)]
    pub(crate) runs: Option<u32>,
    /// Busy threads to run beside each measurement, pinned round-robin to the measured CPUs
    /// (overrides the spec's `hogs`): reproduces an oversubscribed machine.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) hogs: Option<String>,
    /// Override spec fields: key=value, comma-separated or repeated (e.g. sheaf_capacity=8).
    #[arg(long = "set", value_delimiter = ',')]
    pub(crate) set: Vec<String>,
    /// Short smoke run: 20 ms warm-up, 2 runs of 50 ms (explicit options still win).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Longest a measurement may take before it is killed and reported as failed, in
    /// seconds, at least 1 (default: three times its planned length plus 30 s).
    #[arg(long)]
    pub(crate) timeout: Option<u64>,
}

/// Where the history is (`run`, `sweep`, `scale`, `programs`, `conformance`, `compare`,
/// `history`).
#[derive(Debug, Args)]
pub(crate) struct DbArg {
    /// The results history: a SQLite file or a `postgres://` URL (default: $SHEAFBENCH_DB,
    /// else results/history.sqlite of the checkout).
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) db: Option<String>,
}

/// Recording into the history (`run`, `sweep`, `scale`, `programs`, `conformance`).
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Do not record this run in the results history.
    #[arg(long)]
    pub(crate) no_history: bool,
    #[command(flatten)]
    pub(crate) db: DbArg,
}

/// `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Workload spec files (YAML).
    #[arg(required = true)]
    pub(crate) workloads: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) selection: MeasureSelection,
    /// Write the results as JSON: the machine, and every measurement with every round's
    /// figures, the paired ratios, spec and warnings (schema documented in the repository's
    /// docs/results.md).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Write the results as a Markdown report.
    #[arg(long)]
    pub(crate) markdown: Option<PathBuf>,
    /// Allocator the ratio column is relative to.
    #[arg(long)]
    pub(crate) baseline: Option<String>,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// `ab`.
#[derive(Debug, Args)]
pub(crate) struct AbArgs {
    /// The build to compare against: another sheafbench binary (e.g. built from the revision
    /// before a change, or with other features). Its copy of each allocator is measured as
    /// `ALLOCATOR@old`.
    #[arg(long, value_name = "BINARY")]
    pub(crate) old: PathBuf,
    /// The build under test, measured as `ALLOCATOR@new` (default: this binary).
    #[arg(long, value_name = "BINARY")]
    pub(crate) new: Option<PathBuf>,
    /// Workload spec files (YAML).
    #[arg(required = true)]
    pub(crate) workloads: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) selection: MeasureSelection,
    /// The smallest change given a verdict, in percent: "faster" or "slower" needs the whole
    /// 95% interval of the change beyond it.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 2.0,
        allow_hyphen_values = true
    )]
    pub(crate) floor: f64,
    /// Write the results as JSON (the layout of `run --json`): every measurement, its
    /// allocator named `ALLOCATOR@old` or `ALLOCATOR@new`, the paired ratios new over old,
    /// and the two builds (path, version, SHA-256) in the notes.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Write the verdicts as JSON: one row per workload, thread count, allocator and figure.
    #[arg(long)]
    pub(crate) verdicts: Option<PathBuf>,
    /// Exit with status 1 when any row is called "slower" (a check for CI).
    #[arg(long)]
    pub(crate) fail_on_slower: bool,
}

/// `sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    /// Workload spec file (YAML).
    pub(crate) workload: PathBuf,
    /// The field and its values: key=v1,v2,... (e.g. sheaf_capacity=4,8,16,32,64).
    #[arg(long)]
    pub(crate) param: String,
    #[command(flatten)]
    pub(crate) selection: MeasureSelection,
    /// Write an SVG chart: throughput and p99 against the value, one line per allocator.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
    /// Write every measurement as JSON (the layout of `run --json`, docs/results.md).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// `scale`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Workload spec file (YAML).
    pub(crate) workload: PathBuf,
    /// `thread` (the tasks are threads of one process, sharing one cache), `process` (each
    /// task a process of its own, with its own cache and, for `maple-tree`, its own tree) or
    /// `both`.
    #[arg(long, default_value = "both")]
    pub(crate) mode: String,
    #[command(flatten)]
    pub(crate) selection: MeasureSelection,
    /// Allocator the ratio column is relative to (default: the first of --alloc).
    #[arg(long)]
    pub(crate) baseline: Option<String>,
    /// Write the curves as an SVG chart: total and per-task throughput against the task
    /// count, one line per (allocator, mode), with each point's paired interval.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
    /// Write every round's figures as JSON (`scaling`, docs/results.md); the chart goes
    /// beside it (`<name>-curves.svg`) unless --svg names another file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// `programs`.
#[derive(Debug, Args)]
pub(crate) struct ProgramsArgs {
    /// Allocators to preload: comma-separated names among glibc (no preload), sheaf-malloc,
    /// mimalloc, jemalloc and tcmalloc, or `all` (the default). The packaged ones are found
    /// in /usr/lib/<arch>-linux-gnu (or $SHEAFBENCH_LIB_DIR); those not installed are skipped
    /// with a note.
    #[arg(long, value_delimiter = ',')]
    pub(crate) alloc: Vec<String>,
    /// Only the programs of this suite: stress or packaged (default: both).
    #[arg(long)]
    pub(crate) suite: Option<String>,
    /// The programs manifest (default: programs/programs.yaml of the checkout).
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,
    /// Rounds: each round runs every program once under every allocator, in an order
    /// rotated from round to round; figures are medians over rounds, ratios paired by round.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// Only these programs (comma-separated names of the manifest).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub(crate) program: Vec<String>,
    /// Allocator the ratios are relative to (default: mimalloc where it runs, else glibc).
    #[arg(long)]
    pub(crate) baseline: Option<String>,
    /// Output directory: programs.json (rewritten after every run), programs.md, the charts
    /// programs-wall.svg and programs-rss.svg, the compiled programs and their inputs
    /// (default: results/runs/<time>/).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Longest one run may take, in seconds; past it the run's process group is killed and
    /// the run is a failure of its allocator.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub(crate) timeout: u64,
    /// The sheaf-malloc library to preload (default: libsheaf_malloc.so beside the
    /// sheafbench binary, as `cargo build --release -p sheaf-malloc` leaves it).
    #[arg(long, value_name = "PATH")]
    pub(crate) sheaf_malloc: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// `compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// The earlier result: a file, or a run of the history (`latest`, `latest~N`, a run id,
    /// a revision).
    pub(crate) old: PathBuf,
    /// The later result: a file or a run of the history.
    pub(crate) new: PathBuf,
    /// Confidence level of the bootstrap intervals.
    #[arg(long, default_value_t = 0.95)]
    pub(crate) confidence: f64,
    /// Two or more result files of one build and settings (A/A runs) whose spread sets each
    /// row's noise threshold: the 95% bound of a change between two invocations (default:
    /// one threshold per figure kind from the spread of rounds within OLD and NEW). It takes
    /// every value up to the next option, so give it after OLD and NEW.
    #[arg(long, num_args = 2.., value_names = ["A1", "A2"])]
    pub(crate) calibrate: Option<Vec<PathBuf>>,
    /// Also write every compared row (figures, change, interval, threshold, verdict) as JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Compare files measured with different settings (capacity, duration, runs...) instead
    /// of refusing them; a warning says which settings differ.
    #[arg(long)]
    pub(crate) allow_config_change: bool,
    #[command(flatten)]
    pub(crate) db: DbArg,
}

/// `conformance`.
#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// Allocators to check: comma-separated names, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub(crate) alloc: Vec<String>,
    /// Write the reports as a JSON array.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Short smoke run: fewer rounds and fault runs, same clauses.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Check only these clause IDs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Option<Vec<String>>,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// `history` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum HistoryCommand {
    /// List recorded runs, oldest first.
    List(HistoryListArgs),
    /// One figure of a (workload, allocator) over the recorded runs, as a table and a chart.
    Trend(HistoryTrendArgs),
    /// Record existing result files (of `run`, `sweep` or `cargo xtask bench`); directories
    /// are searched for `*.json`.
    Import(HistoryImportArgs),
}

/// `history list`.
#[derive(Debug, Args)]
pub(crate) struct HistoryListArgs {
    /// Runs with a figure of this workload.
    #[arg(long)]
    pub(crate) workload: Option<String>,
    /// Runs with a figure of this allocator.
    #[arg(long)]
    pub(crate) alloc: Option<String>,
    /// Runs on this machine: a fingerprint (prefix) or part of the CPU model.
    #[arg(long)]
    pub(crate) machine: Option<String>,
    /// Runs of this revision (prefix).
    #[arg(long)]
    pub(crate) revision: Option<String>,
    /// Runs at or after this date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Runs of this kind: run, bench, sweep, gate, conformance or programs.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    #[command(flatten)]
    pub(crate) db: DbArg,
}

/// `history trend`.
#[derive(Debug, Args)]
pub(crate) struct HistoryTrendArgs {
    /// Workload name.
    pub(crate) workload: String,
    /// Allocator name.
    pub(crate) allocator: String,
    /// The figure: throughput_ops_per_s, latency_p50_ns, latency_p99_ns, latency_p999_ns,
    /// ratio_vs_<allocator>, a gate figure such as ratio_vs_mimalloc, or a scale figure
    /// <mode>_<tasks>_{total_ops_per_s,per_task_ops_per_s,efficiency,ratio_vs_<other>}.
    #[arg(long, default_value = "throughput_ops_per_s")]
    pub(crate) figure: String,
    /// Only this thread count.
    #[arg(long)]
    pub(crate) threads: Option<u32>,
    /// Only this machine (a fingerprint prefix or part of the CPU model).
    #[arg(long)]
    pub(crate) machine: Option<String>,
    /// Write an SVG chart: one line per machine and thread count.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) db: DbArg,
}

/// `history import`.
#[derive(Debug, Args)]
pub(crate) struct HistoryImportArgs {
    /// Result files, or directories to search for them (e.g. results/runs).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) db: DbArg,
}

/// `trace` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Convert an `strace -f -e trace=memory[,process]` log to a trace (one-line summary on
    /// stderr).
    Import(TraceImportArgs),
}

/// `trace import`.
#[derive(Debug, Args)]
pub(crate) struct TraceImportArgs {
    /// The strace log (`strace -f -e trace=memory,process -o LOG program`).
    pub(crate) log: PathBuf,
    /// Where to write the trace (written atomically); stdout if absent.
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Write the trace even when the log gives no record (an empty file, or no line read as
    /// a memory call); without it such a log is refused with exit code 2.
    #[arg(long)]
    pub(crate) lenient: bool,
}

/// `__measure` (internal).
#[derive(Debug, Args)]
pub(crate) struct MeasureArgs {
    /// Allocator name.
    #[arg(long)]
    pub(crate) alloc: String,
    /// Worker threads.
    #[arg(long)]
    pub(crate) threads: u32,
    /// The validated workload, as JSON.
    #[arg(long)]
    pub(crate) workload_json: String,
    /// This process is task `TASK` of `--tasks` measured together (`scale --mode process`):
    /// pinned, it takes that task's share of the CPUs.
    #[arg(long, requires = "tasks")]
    pub(crate) task: Option<usize>,
    /// How many tasks are measured together.
    #[arg(long, requires = "task")]
    pub(crate) tasks: Option<usize>,
    /// Print `ready` on stdout once set up and wait for `go` on stdin before the warm-up.
    #[arg(long)]
    pub(crate) start_gate: bool,
}
