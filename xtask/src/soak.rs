//! `cargo xtask soak`: the long `lifetimes` specs (`suite: soak`), checking that memory comes
//! back to its floor at every drain and does not grow over time.
//!
//! Runs `sheafbench run` on every `workloads/*.yaml` marked `suite: soak` (one round; the
//! spec's length, or `--duration`), then reads the first worker's cycle figures of each
//! measurement (`extra`, written by the `lifetimes` kind):
//!
//! - **floor**: the cache's slab bytes at the end of each drain (the process's resident set
//!   for a design without slabs). Every drain must come back to within 25% plus 256 KiB of the
//!   first drain's floor: sheaves and the barn keep a bounded amount of free objects, and a
//!   node keeps a few empty slabs, so the floor is not zero, but it must not creep up;
//! - **growth**: the least-squares slope of the resident set at the ends of the holds, times
//!   the measured seconds: the growth the slope projects over the run. It must stay within
//!   10% of the first drain's resident set.
//!
//! Writes `results/runs/<time>/soak.json` and prints one line per measurement; exit status 1
//! when a check fails (as the gate's regressions), 2 when the run itself failed.

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;

use crate::util::{self, Names, TaskError, TaskResult};

/// How far a later drain's floor may rise above the first: a share of it, plus bytes.
const FLOOR_SHARE: f64 = 0.25;
const FLOOR_BYTES: f64 = 256.0 * 1024.0;

/// The growth over the run the hold-end slope may project, as a share of the first floor's
/// resident set.
const GROWTH_SHARE: f64 = 0.10;

/// The soak specs, memory floor and growth checked.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Allocators.
    #[arg(
        long = "alloc",
        value_name = "LIST",
        value_parser = util::allocator_list,
        default_value = "sheaf"
    )]
    allocators: Names,
    /// Length of the run instead of the spec's (e.g. 30s for a short check).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
}

/// `cargo xtask soak`.
pub(crate) fn soak(options: Options) -> TaskResult {
    let specs = soak_suite()?;
    let exe = util::build_sheafbench(None)?;
    let dir = util::new_run_dir()?;
    let json = dir.join("soak.json");
    let mut run = Command::new(&exe);
    run.current_dir(util::root())
        .arg("run")
        .args(&specs)
        .arg("--alloc")
        .arg(options.allocators.0.join(","))
        .args(["--runs", "1", "--json"])
        .arg(&json);
    if let Some(duration) = &options.duration {
        run.arg("--duration").arg(duration);
    }
    util::run(run)?;
    let result = util::read_json(&json)?;
    let mut failed = Vec::new();
    for m in result["runs"].as_array().into_iter().flatten() {
        let name = format!(
            "{}/{}/{}t",
            m["workload"].as_str().unwrap_or("?"),
            m["allocator"].as_str().unwrap_or("?"),
            m["config"]["threads"]
        );
        let seconds = m["seconds"].as_f64().unwrap_or(0.0);
        let check = Check::of(&m["extra"], seconds);
        println!("{name}: {}", check.describe());
        if !check.passed() {
            failed.push(name);
        }
    }
    println!("{}", json.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Regression(format!(
            "memory did not return to its floor or grew: {}",
            failed.join(", ")
        )))
    }
}

/// The `workloads/*.yaml` marked `suite: soak`, sorted.
fn soak_suite() -> TaskResult<Vec<PathBuf>> {
    let dir = util::root().join("workloads");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == "yaml")
                && std::fs::read_to_string(path)
                    .is_ok_and(|text| text.lines().any(|l| l.trim() == "suite: soak"))
        })
        .collect();
    specs.sort();
    if specs.is_empty() {
        return Err(TaskError::Failed(format!(
            "no workload in {} is marked `suite: soak`",
            dir.display()
        )));
    }
    Ok(specs)
}

/// The checks of one measurement.
#[derive(Debug, PartialEq)]
struct Check {
    cycles: f64,
    /// Which floor: `slab` or `rss`.
    floor_of: &'static str,
    first: Option<f64>,
    highest: Option<f64>,
    /// Bytes per second, and the projected growth over the run.
    slope: Option<f64>,
    growth: Option<f64>,
    rss_floor: Option<f64>,
}

impl Check {
    fn of(extra: &serde_json::Value, seconds: f64) -> Self {
        let get = |key: &str| extra[key].as_f64();
        let floor_of = if get("drain_floor_slab_bytes_first").is_some() {
            "slab"
        } else {
            "rss"
        };
        let key = |what: &str| {
            let gauge = if floor_of == "slab" {
                "slab_bytes"
            } else {
                "rss_bytes"
            };
            format!("drain_floor_{gauge}_{what}")
        };
        let slope = get("hold_rss_bytes_slope_bytes_per_s");
        Self {
            cycles: get("cycles").unwrap_or(0.0),
            floor_of,
            first: get(&key("first")),
            highest: get(&key("max")),
            slope,
            growth: slope.map(|s| s * seconds),
            rss_floor: get("drain_floor_rss_bytes_first"),
        }
    }

    fn floor_ok(&self) -> bool {
        match (self.first, self.highest) {
            (Some(first), Some(highest)) => highest <= first * (1.0 + FLOOR_SHARE) + FLOOR_BYTES,
            _ => false,
        }
    }

    fn growth_ok(&self) -> bool {
        match (self.growth, self.rss_floor) {
            (Some(growth), Some(floor)) => growth <= floor * GROWTH_SHARE,
            _ => false,
        }
    }

    fn passed(&self) -> bool {
        self.cycles >= 2.0 && self.floor_ok() && self.growth_ok()
    }

    fn describe(&self) -> String {
        let mib =
            |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2} MiB", v / 1048576.0));
        format!(
            "{} cycles; {} floor first {}, highest {} ({}); RSS slope over holds {} B/s, {} over the run ({})",
            self.cycles,
            self.floor_of,
            mib(self.first),
            mib(self.highest),
            if self.floor_ok() { "ok" } else { "ROSE" },
            self.slope.map_or("-".to_owned(), |s| format!("{s:.0}")),
            mib(self.growth),
            if self.growth_ok() { "ok" } else { "GREW" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(first: f64, max: f64, slope: f64) -> serde_json::Value {
        serde_json::json!({
            "cycles": 10.0,
            "drain_floor_slab_bytes_first": first,
            "drain_floor_slab_bytes_max": max,
            "drain_floor_rss_bytes_first": 8.0e6,
            "hold_rss_bytes_slope_bytes_per_s": slope,
        })
    }

    #[test]
    fn a_floor_that_creeps_up_or_a_resident_set_that_grows_fails() {
        assert!(Check::of(&extra(1e6, 1.2e6, 100.0), 600.0).passed());
        let rose = Check::of(&extra(1e6, 2e6, 100.0), 600.0);
        assert!(!rose.floor_ok() && rose.growth_ok());
        // 2 KB/s for 600 s is 1.2 MB: above 10% of an 8 MB floor.
        let grew = Check::of(&extra(1e6, 1e6, 2000.0), 600.0);
        assert!(grew.floor_ok() && !grew.growth_ok());
        assert!(grew.describe().contains("GREW"), "{}", grew.describe());
        // Without cycle figures (not a lifetimes measurement) nothing passes.
        assert!(!Check::of(&serde_json::json!({}), 600.0).passed());
    }

    #[test]
    fn a_design_without_slabs_is_judged_by_its_resident_set() {
        let check = Check::of(
            &serde_json::json!({"cycles": 3.0, "drain_floor_rss_bytes_first": 8e6,
                "drain_floor_rss_bytes_max": 8.1e6, "hold_rss_bytes_slope_bytes_per_s": 0.0}),
            60.0,
        );
        assert_eq!(check.floor_of, "rss");
        assert!(check.passed(), "{check:?}");
    }
}
