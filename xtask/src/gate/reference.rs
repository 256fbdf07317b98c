//! The gate's reference files in `results/reference/`, written only by `cargo xtask gate
//! --bless` from a real run.
//!
//! - `instructions.json`: `{"provenance": {...}, "figures": {"<benchmark>": <Ir>, ...}}`
//! - `ratios.json`: `{"provenance": {...}, "method": {...}, "figures": {"<figure>":
//!   {"ratio": r, "low": l, "high": h, "rounds": n}, ...}}`
//!
//! `provenance` records the machine (CPU model, cores, kernel), `rustc -V`, valgrind's
//! version, the git revision and the date: a reference from another machine or toolchain is
//! not comparable, and the gate prints where its references came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::stats::Interval;

use crate::util::{self, TaskError, TaskResult};

/// `results/reference/`: the committed references.
pub(crate) fn committed_dir() -> PathBuf {
    util::root().join("results").join("reference")
}

/// `<dir>/instructions.json`.
pub(crate) fn instructions_path(dir: &Path) -> PathBuf {
    dir.join("instructions.json")
}

/// `<dir>/ratios.json`.
pub(crate) fn ratios_path(dir: &Path) -> PathBuf {
    dir.join("ratios.json")
}

/// A reference file's figures and provenance, or `None` when the file does not exist yet.
pub(crate) struct Loaded<T> {
    pub(crate) figures: BTreeMap<String, T>,
    pub(crate) provenance: serde_json::Value,
}

/// Reads the instruction-count references.
pub(crate) fn load_instructions(dir: &Path) -> TaskResult<Option<Loaded<u64>>> {
    load(&instructions_path(dir), |name, value| {
        value.as_u64().ok_or_else(|| {
            format!("figure `{name}`: expected a non-negative integer, found {value}")
        })
    })
}

/// Reads the ratio references: each figure's estimate and interval (a figure recorded
/// without `low` and `high` is a point: both bounds equal its ratio).
pub(crate) fn load_ratios(dir: &Path) -> TaskResult<Option<Loaded<Interval>>> {
    load(&ratios_path(dir), |name, value| {
        let estimate = value["ratio"].as_f64().ok_or_else(|| {
            format!("figure `{name}`: expected {{\"ratio\": <number>, ...}}, found {value}")
        })?;
        let bound = |key: &str| match &value[key] {
            serde_json::Value::Null => Ok(estimate),
            other => other
                .as_f64()
                .ok_or_else(|| format!("figure `{name}`: `{key}` is not a number: {other}")),
        };
        Ok(Interval {
            estimate,
            low: bound("low")?,
            high: bound("high")?,
        })
    })
}

fn load<T>(
    path: &Path,
    figure: impl Fn(&str, &serde_json::Value) -> Result<T, String>,
) -> TaskResult<Option<Loaded<T>>> {
    if !path.exists() {
        return Ok(None);
    }
    let json = util::read_json(path)?;
    let Some(entries) = json["figures"].as_object() else {
        return Err(TaskError::Failed(format!(
            "{}: expected an object `figures`",
            path.display()
        )));
    };
    let mut figures = BTreeMap::new();
    for (name, value) in entries {
        let parsed = figure(name, value).map_err(|e| format!("{}: {e}", path.display()))?;
        figures.insert(name.clone(), parsed);
    }
    Ok(Some(Loaded {
        figures,
        provenance: json["provenance"].clone(),
    }))
}

/// The benchmark whose reference count `--slowdown` takes its per mille of: the per-thread
/// fast-path alloc+free pair.
pub(crate) const SLOWDOWN_BASE: &str = "alloc_free_pair_per_thread::per_thread";

/// The most instructions sheaf's `slowdown` feature accepts per pair.
const SLOWDOWN_LIMIT: u64 = 1_000;

/// The instructions to add to every pair for a slowdown of `permille` per mille of the
/// [`SLOWDOWN_BASE`] reference count in `dir`, and that count.
pub(crate) fn slowdown_instructions(dir: &Path, permille: u32) -> TaskResult<(u64, u64)> {
    let path = instructions_path(dir);
    let base = load_instructions(dir)?
        .and_then(|loaded| loaded.figures.get(SLOWDOWN_BASE).copied())
        .ok_or_else(|| {
            TaskError::Failed(format!(
                "gate --slowdown: {} has no reference count of `{SLOWDOWN_BASE}`, of which the \
                 slowdown is a share; bless references first (`cargo xtask gate --bless`)",
                path.display()
            ))
        })?;
    let instructions = share_of(permille, base);
    if instructions > SLOWDOWN_LIMIT {
        return Err(TaskError::Usage(format!(
            "gate: --slowdown {permille}: {instructions} instructions per pair, above the \
             feature's limit of {SLOWDOWN_LIMIT}"
        )));
    }
    Ok((instructions, base))
}

/// `permille` per mille of `base`, rounded to the nearest whole instruction, and at least one
/// when `permille` is not 0.
fn share_of(permille: u32, base: u64) -> u64 {
    if permille == 0 {
        return 0;
    }
    ((u64::from(permille) * base + 500) / 1000).max(1)
}

/// The JSON of an instruction-count reference file.
pub(crate) fn instructions_json(
    counts: &BTreeMap<String, u64>,
    provenance: &serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "provenance": provenance,
        "unit": "instructions (callgrind Ir) per benchmark call",
        "figures": counts,
    })
}

/// The JSON of a ratio reference file.
pub(crate) fn ratios_json(
    intervals: &BTreeMap<String, (Interval, usize)>,
    method: serde_json::Value,
    provenance: &serde_json::Value,
) -> serde_json::Value {
    let figures: serde_json::Map<String, serde_json::Value> = intervals
        .iter()
        .map(|(name, (interval, rounds))| {
            (
                name.clone(),
                serde_json::json!({
                    "ratio": interval.estimate,
                    "low": interval.low,
                    "high": interval.high,
                    "rounds": rounds,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "provenance": provenance,
        "unit": "throughput of sheaf / throughput of the comparator (higher: sheaf faster)",
        "method": method,
        "figures": figures,
    })
}

/// Why figures measured under `now` cannot be judged against a reference recorded under
/// `reference`, or `None` when they can. Instruction counts depend on the compiler and on
/// valgrind; wall-clock ratios on the machine (CPU model, core count, kernel release) and the
/// compiler. The kernel release is there because a hypervisor may name every host's CPU
/// alike (docs/decisions.md, "xtask"). A field that either side could not record counts as a
/// difference: nothing vouches for it.
pub(crate) fn incomparable(
    signal: &str,
    reference: &serde_json::Value,
    now: &serde_json::Value,
) -> Option<String> {
    let fields: &[(&str, &[&str])] = if signal == "instructions" {
        &[("rustc", &["rustc"]), ("valgrind", &["valgrind"])]
    } else {
        &[
            ("CPU", &["machine", "cpu"]),
            ("cores", &["machine", "cores"]),
            ("kernel", &["machine", "kernel"]),
            ("rustc", &["rustc"]),
        ]
    };
    let differences: Vec<String> = fields
        .iter()
        .filter_map(|(label, path)| {
            let at = |root: &serde_json::Value| {
                path.iter()
                    .fold(root.clone(), |value, key| value[*key].clone())
            };
            let (was, is) = (at(reference), at(now));
            let shown = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "unknown".into(),
                other => other.to_string(),
            };
            (was.is_null() || is.is_null() || was != is).then(|| {
                format!(
                    "{label} {} here, {} in the reference",
                    shown(&is),
                    shown(&was)
                )
            })
        })
        .collect();
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// One line saying where a reference came from.
pub(crate) fn describe_provenance(provenance: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let git = text(&provenance["git"]);
    let dirty = if provenance["dirty_tree"].as_bool() == Some(true) {
        " (dirty tree)"
    } else {
        ""
    };
    format!(
        "{} ({} cores, kernel {}), {}, git {}{dirty}, {}",
        text(&provenance["machine"]["cpu"]),
        provenance["machine"]["cores"]
            .as_u64()
            .map_or("?".into(), |c| c.to_string()),
        text(&provenance["machine"]["kernel"]),
        text(&provenance["rustc"]),
        git.get(..12).unwrap_or(&git),
        text(&provenance["date"]),
    )
}

#[cfg(test)]
mod comparability_tests {
    use super::incomparable;
    use serde_json::json;

    fn provenance(cpu: &str, cores: u64, rustc: &str, valgrind: &str) -> serde_json::Value {
        json!({
            "machine": {"cpu": cpu, "cores": cores, "kernel": "6.1"},
            "rustc": rustc,
            "valgrind": valgrind,
            "git": "abc",
            "date": "2026-01-01",
        })
    }

    #[test]
    fn same_machine_and_toolchain_is_comparable() {
        let a = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.22.0");
        let mut b = a.clone();
        b["git"] = json!("def");
        b["date"] = json!("2026-02-02");
        assert_eq!(incomparable("instructions", &a, &b), None);
        assert_eq!(incomparable("ratios", &a, &b), None);
    }

    #[test]
    fn another_kernel_spoils_ratios_not_instruction_counts() {
        let a = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.22.0");
        let mut b = a.clone();
        b["machine"]["kernel"] = json!("6.2");
        assert_eq!(incomparable("instructions", &a, &b), None);
        let reason = incomparable("ratios", &a, &b).expect("another kernel");
        assert!(
            reason.contains("kernel 6.2 here, 6.1 in the reference"),
            "{reason}"
        );
    }

    #[test]
    fn another_cpu_spoils_ratios_not_instruction_counts() {
        let a = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.22.0");
        let b = provenance("Xeon", 2, "rustc 1.95.0", "valgrind-3.22.0");
        assert_eq!(incomparable("instructions", &a, &b), None);
        let reason = incomparable("ratios", &a, &b).expect("another CPU");
        assert!(
            reason.contains("CPU Xeon here, EPYC in the reference"),
            "{reason}"
        );
        let c = provenance("EPYC", 16, "rustc 1.95.0", "valgrind-3.22.0");
        assert!(
            incomparable("ratios", &a, &c)
                .expect("other core count")
                .contains("cores 16")
        );
    }

    #[test]
    fn another_toolchain_spoils_both() {
        let a = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.22.0");
        let b = provenance("EPYC", 2, "rustc 1.96.0", "valgrind-3.22.0");
        assert!(incomparable("instructions", &a, &b).is_some());
        assert!(incomparable("ratios", &a, &b).is_some());
        let c = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.24.0");
        assert!(
            incomparable("instructions", &a, &c)
                .expect("valgrind")
                .contains("valgrind")
        );
        assert_eq!(incomparable("ratios", &a, &c), None);
    }

    #[test]
    fn an_unrecorded_field_is_a_difference() {
        let a = provenance("EPYC", 2, "rustc 1.95.0", "valgrind-3.22.0");
        let mut b = a.clone();
        b["valgrind"] = serde_json::Value::Null;
        let reason = incomparable("instructions", &a, &b).expect("unknown valgrind");
        assert!(reason.contains("valgrind unknown here"), "{reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference directory of its own under the system's temporary directory.
    fn reference_dir(name: &str, figures: serde_json::Value) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-reference-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = serde_json::json!({"provenance": {}, "figures": figures});
        std::fs::write(instructions_path(&dir), json.to_string()).unwrap();
        dir
    }

    #[test]
    fn the_slowdown_is_a_share_of_the_reference_pair() {
        // 5% of the 48-instruction pair: 2.4, rounded to 2.
        let dir = reference_dir("48", serde_json::json!({SLOWDOWN_BASE: 48, "other": 1000}));
        assert_eq!(slowdown_instructions(&dir, 50).unwrap(), (2, 48));
        // The share follows the reference when the pair grows: 5% of 200 is 10.
        let dir = reference_dir("200", serde_json::json!({SLOWDOWN_BASE: 200}));
        assert_eq!(slowdown_instructions(&dir, 50).unwrap(), (10, 200));
        assert_eq!(slowdown_instructions(&dir, 100).unwrap(), (20, 200));
        // Too large for the feature.
        assert!(matches!(
            slowdown_instructions(&dir, 6000),
            Err(TaskError::Usage(_))
        ));
        // No reference of the pair: nothing to take a share of.
        let dir = reference_dir("none", serde_json::json!({"other": 1000}));
        let error = slowdown_instructions(&dir, 50).unwrap_err().to_string();
        assert!(error.contains(SLOWDOWN_BASE), "{error}");
    }

    #[test]
    fn a_share_is_rounded_and_never_zero_when_asked_for() {
        assert_eq!(share_of(0, 48), 0);
        assert_eq!(share_of(1, 48), 1);
        assert_eq!(share_of(50, 43), 2);
        assert_eq!(share_of(1000, 48), 48);
    }
}
