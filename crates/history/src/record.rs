//! What one recorded run holds, and how a result file becomes one.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use harness::ResultFile;
use harness::histogram::LatencyFigures;
use harness::machine::Machine;

/// What produced a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunKind {
    /// `sheafbench run`.
    Run,
    /// `cargo xtask bench`.
    Bench,
    /// `sheafbench sweep`.
    Sweep,
    /// `cargo xtask gate`.
    Gate,
    /// `sheafbench conformance`.
    Conformance,
    /// `sheafbench programs`.
    Programs,
    /// `sheafbench scale`.
    Scale,
}

impl RunKind {
    /// Every kind.
    pub const ALL: [RunKind; 7] = [
        Self::Run,
        Self::Bench,
        Self::Sweep,
        Self::Gate,
        Self::Conformance,
        Self::Programs,
        Self::Scale,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Bench => "bench",
            Self::Sweep => "sweep",
            Self::Gate => "gate",
            Self::Conformance => "conformance",
            Self::Programs => "programs",
            Self::Scale => "scale",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown run kind `{text}` (run, bench, sweep, gate, conformance, programs, scale)"
                )
            })
    }
}

/// The facts of a machine that change its figures; runs with the same [`Fingerprint::id`]
/// are comparable, and the gate judges a change against the history of its own fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// CPU model.
    pub cpu: String,
    /// CPUs the process could use.
    pub cores: u32,
    /// Kernel release.
    pub kernel: String,
    /// How the CPU number is found: glibc's rseq area size and `SHEAF_RSEQ`.
    pub rseq: String,
    /// CPU frequency governor.
    pub governor: String,
    /// SMT control and whether siblings are active.
    pub smt: String,
    /// Transparent huge pages mode.
    pub thp: String,
}

impl Fingerprint {
    /// The fingerprint of the machine a result file describes.
    pub fn of(machine: &Machine) -> Self {
        let env = &machine.environment;
        let or_unknown = |v: Option<&str>| v.unwrap_or("unknown").to_owned();
        let rseq = format!(
            "glibc {} sheaf {}",
            env.rseq_glibc_size
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            env.sheaf_rseq.as_deref().unwrap_or("default")
        );
        let smt = format!(
            "{} {}",
            or_unknown(env.smt_control.as_deref()),
            env.smt_active
                .map_or("unknown", |a| if a { "active" } else { "inactive" })
        );
        Self {
            cpu: machine.cpu.clone(),
            cores: u32::try_from(machine.cores).unwrap_or(u32::MAX),
            kernel: machine.kernel.clone(),
            rseq,
            governor: or_unknown(env.cpu_governor.as_deref()),
            smt,
            thp: or_unknown(env.thp.as_deref()),
        }
    }

    /// A short stable id of every field: 16 hex digits of a 64-bit FNV-1a hash.
    pub fn id(&self) -> String {
        let text = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.cpu, self.cores, self.kernel, self.rseq, self.governor, self.smt, self.thp
        );
        hash_hex(&text)
    }
}

/// 16 hex digits of the 64-bit FNV-1a hash of `text` (stable across builds and machines).
pub(crate) fn hash_hex(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// One named figure of a run, with every round's value.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Workload name (`None` for figures of no workload).
    pub workload: Option<String>,
    /// Allocator name (`None` for figures of no allocator).
    pub allocator: Option<String>,
    /// Worker threads.
    pub threads: Option<u32>,
    /// What the figure is (`throughput_ops_per_s`, `latency_p99_ns`, `ratio_vs_mimalloc`,
    /// `instructions`, a clause id...).
    pub name: String,
    /// The figure (a median or estimate over the rounds).
    pub value: f64,
    /// Lower bound of its interval, when it has one.
    pub low: Option<f64>,
    /// Upper bound of its interval.
    pub high: Option<f64>,
    /// Every round's value, in round order.
    pub rounds: Vec<f64>,
}

impl Figure {
    /// A figure with no interval and no rounds.
    pub fn point(workload: &str, allocator: &str, name: &str, value: f64) -> Self {
        Self {
            workload: Some(workload.to_owned()),
            allocator: Some(allocator.to_owned()),
            threads: None,
            name: name.to_owned(),
            value,
            low: None,
            high: None,
            rounds: Vec::new(),
        }
    }
}

/// One measurement's descriptive fields (JSON text each).
#[derive(Clone, Debug, PartialEq)]
pub struct MeasurementRow {
    /// Workload name.
    pub workload: String,
    /// Workload kind.
    pub workload_kind: String,
    /// Allocator.
    pub allocator: String,
    /// Worker threads.
    pub threads: u32,
    /// The spec as run (JSON).
    pub spec: String,
    /// [`hash_hex`] of `spec`.
    pub spec_hash: String,
    /// The run configuration (JSON).
    pub config: String,
    /// Event counters (JSON).
    pub counters: String,
    /// Memory (JSON).
    pub memory: String,
    /// The design's counters (JSON).
    pub stats: String,
    /// Warnings (JSON array).
    pub warnings: String,
}

/// A run to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// When it started (UTC, `YYYY-MM-DDTHH:MM:SSZ`, so that text order is time order).
    pub time: String,
    /// What produced it.
    pub kind: RunKind,
    /// Source revision, without the `-dirty` suffix.
    pub revision: String,
    /// Branch, when known.
    pub branch: Option<String>,
    /// Whether the tree had uncommitted changes.
    pub dirty: bool,
    /// The machine.
    pub machine: Fingerprint,
    /// A label for runs that are not the tree as committed (`slowdown=50`); `None` for
    /// ordinary runs, the only ones the gate's history reads.
    pub tag: Option<String>,
    /// Settings of the run as a whole (JSON object).
    pub config: serde_json::Value,
    /// The file it was written to or imported from.
    pub source: Option<String>,
    /// The whole result as written.
    pub document: serde_json::Value,
    /// One row per measurement.
    pub measurements: Vec<MeasurementRow>,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl NewRun {
    /// An empty run of `kind` on `machine`, dated `time`; revision and dirty flag from the
    /// machine's `git` field.
    pub fn new(kind: RunKind, time: &str, machine: &Machine, document: serde_json::Value) -> Self {
        let (revision, dirty) = match machine.git.strip_suffix("-dirty") {
            Some(revision) => (revision.to_owned(), true),
            None => (machine.git.clone(), false),
        };
        Self {
            time: time.to_owned(),
            kind,
            revision,
            branch: None,
            dirty,
            machine: Fingerprint::of(machine),
            tag: None,
            config: serde_json::json!({}),
            source: None,
            document,
            measurements: Vec::new(),
            figures: Vec::new(),
        }
    }

    /// A run of `kind` from a result file of `sheafbench run` or `sweep`: a measurement
    /// row and its figures (throughput and latency percentiles with every round) per
    /// measurement, and a figure per paired ratio with its interval and rounds.
    pub fn from_result_file(kind: RunKind, file: &ResultFile) -> Self {
        let document = serde_json::to_value(file).unwrap_or(serde_json::Value::Null);
        let mut run = Self::new(kind, &file.date, &file.machine, document);
        for m in &file.runs {
            let spec = json(&m.spec);
            run.measurements.push(MeasurementRow {
                workload: m.workload.clone(),
                workload_kind: m.kind.clone(),
                allocator: m.allocator.clone(),
                threads: m.config.threads,
                spec_hash: hash_hex(&spec),
                spec,
                config: json(&m.config),
                counters: json(&m.counters),
                memory: json(&m.memory),
                stats: json(&m.stats),
                warnings: json(&m.warnings),
            });
            let figure = |name: &str, value: f64, rounds: Vec<f64>| Figure {
                workload: Some(m.workload.clone()),
                allocator: Some(m.allocator.clone()),
                threads: Some(m.config.threads),
                name: name.to_owned(),
                value,
                low: None,
                high: None,
                rounds,
            };
            run.figures.push(figure(
                "throughput_ops_per_s",
                m.throughput_ops_per_s,
                m.samples.iter().map(|s| s.throughput_ops_per_s).collect(),
            ));
            let latency = &m.latency_ns.figures;
            for (name, value, pick) in [
                (
                    "latency_p50_ns",
                    latency.p50,
                    (|l| l.p50) as fn(&LatencyFigures) -> u64,
                ),
                ("latency_p99_ns", latency.p99, |l| l.p99),
                ("latency_p999_ns", latency.p999, |l| l.p999),
            ] {
                let rounds = m
                    .samples
                    .iter()
                    .filter_map(|s| s.latency_ns.as_ref().map(|l| pick(l) as f64))
                    .collect();
                run.figures.push(figure(name, value as f64, rounds));
            }
        }
        for p in &file.paired {
            run.figures.push(Figure {
                workload: Some(p.workload.clone()),
                allocator: Some(p.allocator.clone()),
                threads: Some(p.threads),
                name: format!("ratio_vs_{}", p.versus),
                value: p.estimate,
                low: p.interval.map(|i| i.0),
                high: p.interval.map(|i| i.1),
                rounds: p.rounds.clone(),
            });
        }
        if let Some(programs) = &file.programs {
            run.figures.extend(program_figures(programs));
        }
        run.figures
            .extend(file.scaling.iter().flat_map(scale_figures));
        run
    }

    /// Fills in the branch from the git checkout at `dir`, when there is one.
    pub fn with_branch_of(mut self, dir: &Path) -> Self {
        self.branch = git_branch(dir);
        self
    }
}

/// The figures of one point of `sheafbench scale`, named with its mode and task count
/// (`thread_2_total_ops_per_s`; `threads` is the task count): total and per-task throughput
/// with every round, the efficiency against the smallest task count, and the ratios to the
/// other allocators and modes, each with its interval and rounds.
fn scale_figures(point: &harness::result::ScalePoint) -> Vec<Figure> {
    let prefix = format!("{}_{}", point.mode, point.tasks);
    let figure =
        |name: String, value: f64, interval: Option<(f64, f64)>, rounds: Vec<f64>| Figure {
            workload: Some(point.workload.clone()),
            allocator: Some(point.allocator.clone()),
            threads: Some(point.tasks),
            name,
            value,
            low: interval.map(|i| i.0),
            high: interval.map(|i| i.1),
            rounds,
        };
    let tasks = f64::from(point.tasks.max(1));
    let totals: Vec<f64> = point.rounds.iter().map(|r| r.total_ops_per_s).collect();
    let mut figures = vec![
        figure(
            format!("{prefix}_total_ops_per_s"),
            point.total_ops_per_s,
            None,
            totals.clone(),
        ),
        figure(
            format!("{prefix}_per_task_ops_per_s"),
            point.per_task_ops_per_s,
            None,
            totals.iter().map(|t| t / tasks).collect(),
        ),
    ];
    let ratios = point
        .efficiency
        .iter()
        .map(|r| (format!("{prefix}_efficiency"), r))
        .chain(point.versus.iter().map(|r| {
            (
                format!("{prefix}_ratio_vs_{}", r.versus.replace(' ', "_")),
                r,
            )
        }));
    for (name, ratio) in ratios {
        figures.push(figure(
            name,
            ratio.estimate,
            ratio.interval,
            ratio.rounds.clone(),
        ));
    }
    figures
}

/// A figure of one round of a program.
type RoundFigure = fn(&harness::result::ProgramRound) -> f64;

/// The figures of `sheafbench programs`, the program as the workload: per (program,
/// allocator) `wall_seconds`, `user_seconds`, `sys_seconds` and `peak_rss_bytes` (medians,
/// with every round) and `wall_ratio_vs_<baseline>`, `rss_ratio_vs_<baseline>` (with their
/// intervals and rounds); per allocator the geometric means over the programs as the
/// workload `geomean`.
fn program_figures(programs: &harness::result::ProgramsResult) -> Vec<Figure> {
    let mut out = Vec::new();
    let ratio =
        |workload: &str, allocator: &str, name: String, r: &harness::result::RatioRounds| Figure {
            workload: Some(workload.to_owned()),
            allocator: Some(allocator.to_owned()),
            threads: None,
            name,
            value: r.estimate,
            low: r.interval.map(|i| i.0),
            high: r.interval.map(|i| i.1),
            rounds: r.rounds.clone(),
        };
    let versus = &programs.baseline;
    for p in &programs.programs {
        for a in &p.allocators {
            let figures: [(&str, Option<f64>, RoundFigure); 4] = [
                ("wall_seconds", a.wall_seconds, |r| r.wall_seconds),
                ("user_seconds", a.user_seconds, |r| r.user_seconds),
                ("sys_seconds", a.sys_seconds, |r| r.sys_seconds),
                ("peak_rss_bytes", a.peak_rss_bytes.map(|b| b as f64), |r| {
                    r.peak_rss_bytes as f64
                }),
            ];
            for (name, value, pick) in figures {
                if let Some(value) = value {
                    out.push(Figure {
                        rounds: a.rounds.iter().map(pick).collect(),
                        ..Figure::point(&p.name, &a.allocator, name, value)
                    });
                }
            }
            if let Some(r) = &a.wall_ratio {
                out.push(ratio(
                    &p.name,
                    &a.allocator,
                    format!("wall_ratio_vs_{versus}"),
                    r,
                ));
            }
            if let Some(r) = &a.rss_ratio {
                out.push(ratio(
                    &p.name,
                    &a.allocator,
                    format!("rss_ratio_vs_{versus}"),
                    r,
                ));
            }
        }
    }
    for g in &programs.geomean {
        if let Some(r) = &g.wall {
            out.push(ratio(
                "geomean",
                &g.allocator,
                format!("wall_ratio_vs_{}", g.versus),
                r,
            ));
        }
        if let Some(r) = &g.rss {
            out.push(ratio(
                "geomean",
                &g.allocator,
                format!("rss_ratio_vs_{}", g.versus),
                r,
            ));
        }
    }
    out
}

/// The branch checked out at `dir` (`None` outside a checkout or on a detached head).
pub fn git_branch(dir: &Path) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--abbrev-ref", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let branch = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (!branch.is_empty() && branch != "HEAD").then_some(branch)
}

/// A result field as JSON text.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
