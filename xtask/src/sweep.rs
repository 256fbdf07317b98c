//! `cargo xtask sweep`: choosing sheaf capacity and barn limits from measurements.
//!
//! For each workload (`burst`, `prefill-burst`, `maple-tree` when its spec exists, and the
//! many-thread `prefill-contention`), `sheafbench sweep` runs sheaf over a list of sheaf
//! capacities, then the barn's full-sheaf limit over a list of values, each writing a JSON
//! file and an SVG chart into `results/runs/<time>/`. The xtask then reads the JSON and
//! reports, per workload, object size and thread count, the value that gave the best
//! throughput and the one that gave the best p99.9, with the memory the cache held at each
//! (slab bytes and cached objects), and beside every measurement the barn-lock contention
//! counter (`barn_lock_contended`) per million operations. The same tables go to
//! `sweep.md` in the run directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use clap::Parser;

use crate::util::{self, TaskError, TaskResult};

/// Workload specs swept by default (a missing one is skipped with a note).
const WORKLOADS: [&str; 4] = [
    "burst.yaml",
    "prefill-burst.yaml",
    "maple-tree.yaml",
    "prefill-contention.yaml",
];
/// Sheaf capacities tried by default: around the kernel's 32 and its cure, 120.
const CAPACITIES: &str = "4,8,16,32,60,120";
/// Full-sheaf limits of the barn tried by default.
const BARN_LIMITS: &str = "2,4,8,16,32";

/// Sheaf capacities and barn limits swept over the workloads that depend on them.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Short smoke runs (`sheafbench sweep --quick`).
    #[arg(long)]
    quick: bool,
    /// Sheaf capacities to try.
    #[arg(long, value_name = "LIST", default_value = CAPACITIES)]
    capacities: String,
    /// The barn's full-sheaf limits to try.
    #[arg(long, value_name = "LIST", default_value = BARN_LIMITS)]
    barn: String,
    /// Do not sweep the barn's limit.
    #[arg(long, conflicts_with = "barn")]
    no_barn: bool,
    /// A workload spec to sweep (repeatable; default: burst, prefill-burst, maple-tree and
    /// prefill-contention).
    #[arg(long = "workload", value_name = "FILE")]
    workloads: Vec<PathBuf>,
}

/// `cargo xtask sweep`.
pub(crate) fn sweep(options: Options) -> TaskResult {
    let Options {
        quick,
        capacities,
        barn,
        no_barn,
        mut workloads,
    } = options;
    let barn = (!no_barn).then_some(barn);
    if workloads.is_empty() {
        for name in WORKLOADS {
            let path = util::root().join("workloads").join(name);
            if path.exists() {
                workloads.push(path);
            } else {
                println!("note: {} not found: not swept", path.display());
            }
        }
    }
    let exe = util::build_sheafbench(None)?;
    let dir = util::new_run_dir()?;
    let mut summary = String::new();
    let mut failures = Vec::new();
    let mut params = vec![("sheaf_capacity", capacities)];
    if let Some(barn) = barn {
        params.push(("barn_max_full", barn));
    }
    for spec in &workloads {
        let stem = spec
            .file_stem()
            .map_or_else(|| "workload".into(), |s| s.to_string_lossy().into_owned());
        for (key, values) in &params {
            let json = dir.join(format!("sweep-{stem}-{key}.json"));
            let svg = dir.join(format!("sweep-{stem}-{key}.svg"));
            let mut run = Command::new(&exe);
            run.current_dir(util::root())
                .arg("sweep")
                .arg(spec)
                .arg("--param")
                .arg(format!("{key}={values}"))
                .args(["--alloc", "sheaf", "--json"])
                .arg(&json)
                .arg("--svg")
                .arg(&svg);
            if quick {
                run.arg("--quick");
            }
            if let Err(error) = util::run(run) {
                failures.push(error.to_string());
            }
            if json.exists() {
                let result = util::read_json(&json)?;
                let section = render(&stem, key, &result);
                print!("{section}");
                summary.push_str(&section);
            }
        }
    }
    let report = dir.join("sweep.md");
    util::write_atomic(
        &report,
        &format!("# Sheaf capacity and barn limit sweeps\n\n{summary}"),
    )?;
    println!(
        "\nfiles in {} (sweep.md, sweep-*.json, sweep-*.svg)",
        dir.display()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "some sweeps failed:\n{}",
            failures.join("\n")
        )))
    }
}

/// One measurement of a sweep, as the summary needs it.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    value: u64,
    throughput: f64,
    p999: f64,
    slab_bytes: Option<u64>,
    cached_objects: Option<u64>,
    contended_per_mop: Option<f64>,
}

/// (workload, object size, threads, allocator) -> samples in sweep order.
type Groups = BTreeMap<(String, u64, u64, String), Vec<Sample>>;

fn groups(result: &serde_json::Value, key: &str) -> Groups {
    let mut groups = Groups::new();
    for run in result["runs"].as_array().into_iter().flatten() {
        let config = &run["config"];
        let (Some(workload), Some(allocator), Some(value), Some(throughput)) = (
            run["workload"].as_str(),
            run["allocator"].as_str(),
            config[key].as_u64(),
            run["throughput_ops_per_s"].as_f64(),
        ) else {
            continue;
        };
        let ops = run["ops"].as_f64().unwrap_or(0.0);
        let contended = run["stats"]["barn_lock_contended"].as_f64();
        groups
            .entry((
                workload.to_owned(),
                config["object_size"].as_u64().unwrap_or(0),
                config["threads"].as_u64().unwrap_or(0),
                allocator.to_owned(),
            ))
            .or_default()
            .push(Sample {
                value,
                throughput,
                p999: run["latency_ns"]["p999"].as_f64().unwrap_or(f64::NAN),
                slab_bytes: run["memory"]["slab_bytes"].as_u64(),
                cached_objects: run["memory"]["cached_objects"].as_u64(),
                contended_per_mop: contended.filter(|_| ops > 0.0).map(|c| c / ops * 1e6),
            });
    }
    groups
}

fn optional<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The Markdown section of one sweep: every measurement, then the best value per group.
fn render(stem: &str, key: &str, result: &serde_json::Value) -> String {
    let groups = groups(result, key);
    let mut out = String::new();
    let _ = writeln!(out, "## {stem}: {key}\n");
    if groups.is_empty() {
        let _ = writeln!(out, "No successful measurement.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "| {key} | object size | threads | allocator | Mops/s | p99.9 (ns) | slab bytes | cached objects | barn_lock_contended / Mop |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for ((_, size, threads, allocator), samples) in &groups {
        for s in samples {
            let _ = writeln!(
                out,
                "| {} | {size} | {threads} | {allocator} | {:.2} | {:.0} | {} | {} | {} |",
                s.value,
                s.throughput / 1e6,
                s.p999,
                optional(s.slab_bytes),
                optional(s.cached_objects),
                s.contended_per_mop
                    .map_or_else(|| "-".into(), |c| format!("{c:.1}")),
            );
        }
    }
    let _ = writeln!(out, "\nBest {key} per object size and thread count:\n");
    let _ = writeln!(
        out,
        "| object size | threads | allocator | best for throughput | held | best for p99.9 | held |"
    );
    let _ = writeln!(out, "|---:|---:|---|---|---|---|---|");
    for ((_, size, threads, allocator), samples) in &groups {
        let (Some(fast), Some(tail)) = (best_throughput(samples), best_p999(samples)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {size} | {threads} | {allocator} | {key}={} ({:.2} Mops/s) | {} | {key}={} ({:.0} ns) | {} |",
            fast.value,
            fast.throughput / 1e6,
            held(fast),
            tail.value,
            tail.p999,
            held(tail),
        );
    }
    out.push('\n');
    out
}

fn held(sample: &Sample) -> String {
    format!(
        "{} slab bytes, {} cached objects",
        optional(sample.slab_bytes),
        optional(sample.cached_objects)
    )
}

fn best_throughput(samples: &[Sample]) -> Option<&Sample> {
    samples
        .iter()
        .filter(|s| s.throughput.is_finite())
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
}

fn best_p999(samples: &[Sample]) -> Option<&Sample> {
    samples
        .iter()
        .filter(|s| s.p999.is_finite() && s.p999 > 0.0)
        .min_by(|a, b| a.p999.total_cmp(&b.p999))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(capacity: u64, throughput: f64, p999: f64, contended: u64) -> serde_json::Value {
        serde_json::json!({
            "workload": "prefill-contention", "allocator": "sheaf",
            "config": {"object_size": 256, "threads": 8, "sheaf_capacity": capacity},
            "ops": 2_000_000, "throughput_ops_per_s": throughput,
            "latency_ns": {"p999": p999},
            "memory": {"slab_bytes": capacity * 4096, "cached_objects": capacity * 3},
            "stats": {"barn_lock_contended": contended}
        })
    }

    #[test]
    fn best_values_and_contention_per_million_operations() {
        let result = serde_json::json!({"runs": [
            run(8, 1.0e6, 9000.0, 4000),
            run(32, 3.0e6, 5000.0, 1000),
            run(120, 2.5e6, 4000.0, 20),
        ]});
        let groups = groups(&result, "sheaf_capacity");
        let samples = &groups[&("prefill-contention".to_owned(), 256, 8, "sheaf".to_owned())];
        assert_eq!(best_throughput(samples).unwrap().value, 32);
        assert_eq!(best_p999(samples).unwrap().value, 120);
        assert_eq!(samples[0].contended_per_mop, Some(2000.0));
        let text = render("prefill-contention", "sheaf_capacity", &result);
        assert!(
            text.contains("sheaf_capacity=32 (3.00 Mops/s) | 131072 slab bytes, 96 cached objects")
        );
        assert!(text.contains("sheaf_capacity=120 (4000 ns)"));
        assert!(text.contains("| 120 | 256 | 8 | sheaf | 2.50 | 4000 | 491520 | 360 | 10.0 |"));
    }

    #[test]
    fn missing_figures_show_as_dashes_not_zeroes() {
        let result = serde_json::json!({"runs": [{
            "workload": "burst", "allocator": "sheaf",
            "config": {"object_size": 64, "threads": 1, "sheaf_capacity": 4},
            "throughput_ops_per_s": 1.0e6, "latency_ns": {}, "memory": {}, "stats": {}
        }]});
        let text = render("burst", "sheaf_capacity", &result);
        assert!(
            text.contains("| 4 | 64 | 1 | sheaf | 1.00 | NaN | - | - | - |"),
            "{text}"
        );
        assert!(
            render("burst", "sheaf_capacity", &serde_json::json!({}))
                .contains("No successful measurement")
        );
    }
}
