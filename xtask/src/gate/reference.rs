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

use super::bootstrap::Interval;
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

/// Reads the ratio references (the point estimate of each figure).
pub(crate) fn load_ratios(dir: &Path) -> TaskResult<Option<Loaded<f64>>> {
    load(&ratios_path(dir), |name, value| {
        value["ratio"].as_f64().ok_or_else(|| {
            format!("figure `{name}`: expected {{\"ratio\": <number>, ...}}, found {value}")
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
