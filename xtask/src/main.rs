//! Project automation, run as `cargo xtask <task>`; one module per task, each declaring its
//! own options (clap derive, as the CLI's), and the [`Task`] enum naming them all.
//!
//! Everyday tasks:
//! - `test`: formatting check, clippy with warnings denied, and every test (what CI runs).
//! - `bench`: the default benchmark suite with every allocator, into `results/runs/<time>/`.
//! - `sweep`: sheaf capacity and barn limits swept over the workloads that depend on them.
//! - `gate`: the regression gate against `results/reference/` (instruction counts and
//!   wall-clock ratios); `--bless` records new references.
//! - `conformance`: the contract clauses on every allocator.
//! - `ab`: the working tree against a revision, both measured in the same rounds.
//! - `report`: charts (SVG) from a result file of `sheafbench run`.
//! - `soak`: the long `lifetimes` specs (`suite: soak`): memory back to its floor at every
//!   drain, no growth over time.
//! - `setup-programs`: installs (apt-get) the packaged programs that `sheafbench programs`
//!   runs and the allocator libraries it preloads.
//!
//! Studies (measurements behind design choices, listed apart in `--help`):
//! - `overhead`: the harness's figure for `churn-lifo` beside criterion's for the same loop.
//! - `maple-share`: each design's share of a maple-tree write's instructions, under callgrind.
//! - `batching`: batched deferred frees against per-object ones on `deferred-churn`.
//!
//! Shared pieces: `util` (the workspace, child processes, builds, option parsers, provenance);
//! the statistics (`harness::stats`) and the charts (`harness::chart`) are the CLI's too.
//! The xtask drives the `sheafbench` binary and cargo; it links no allocator.

mod ab;
mod batching;
mod bench;
mod conformance;
mod gate;
mod history;
mod maple_share;
mod overhead;
mod report;
mod setup_programs;
mod soak;
mod sweep;
mod test;
mod util;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use util::TaskError;

/// Project automation for sheafbench.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true,
    after_help = "exit status: 0 success, 1 the gate found a regression, 2 anything else went wrong"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The tasks. Studies are hidden from the main list and shown apart by [`command`].
#[derive(Debug, Subcommand)]
enum Task {
    /// cargo fmt --check, clippy -D warnings, and every test (what CI runs).
    Test(test::Options),
    /// The default suite, every allocator, at 1 thread and at the CPU count.
    ///
    /// Runs the workloads/*.yaml marked `suite: default` into results/runs/<time>/ (JSON,
    /// Markdown, SVG); `--programs` adds the real programs under preloaded allocators.
    Bench(bench::Options),
    /// Sheaf capacity and barn limits over burst, prefill and maple-tree workloads.
    Sweep(sweep::Options),
    /// Regression gate against results/reference/ (instruction counts, wall-clock ratios).
    Gate(gate::Options),
    /// The contract clauses on every allocator.
    Conformance(conformance::Options),
    /// The working tree against a revision (default HEAD), both built in release and
    /// measured in the same interleaved rounds (`sheafbench ab`): each allocator's change.
    Ab(ab::Options),
    /// SVG charts from a result file of `sheafbench run`.
    Report(report::Options),
    /// The soak specs (suite: soak): memory back to its floor at each drain, no growth.
    ///
    /// Minutes per spec; `--duration 30s` for a short check.
    Soak(soak::Options),
    /// Installs the packaged programs and allocator libraries `sheafbench programs` uses.
    ///
    /// apt-get, for the packages named by programs/programs.yaml's `requires` plus
    /// libmimalloc2.0, libjemalloc2 and libtcmalloc-minimal4; skips what is installed.
    /// Without root it prints the apt-get command and exits with status 2.
    SetupPrograms(setup_programs::Options),
    /// Study: sheafbench's churn-lifo figure beside criterion's, per allocator.
    ///
    /// Both run the same loop; the paired ratio of the rounds, with its interval, says
    /// whether the harness's own measuring adds to what it measures.
    #[command(hide = true)]
    Overhead(overhead::Options),
    /// Study: each design's share of a maple-tree write's instructions, under callgrind.
    ///
    /// Splits the instructions of each write between the allocator and the tree, per design.
    #[command(hide = true)]
    MapleShare(maple_share::Options),
    /// Study: deferred batching on against off on deferred-churn, per allocator.
    ///
    /// One writer thread; the paired ratio with its interval, and the recycled sheaves per
    /// second.
    #[command(hide = true)]
    Batching(batching::Options),
}

/// The command line, with the hidden studies listed under a heading of their own (clap has
/// one heading for all subcommands).
fn command() -> clap::Command {
    let command = Cli::command();
    let studies: Vec<String> = command
        .get_subcommands()
        .filter(|task| task.is_hide_set())
        .map(|task| {
            let about = task
                .get_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            format!(
                "  {:<11}  {}",
                task.get_name(),
                about.trim_start_matches("Study: ")
            )
        })
        .collect();
    let after = command
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    command.after_help(format!(
        "Studies (measurements behind design choices; `cargo xtask <study> --help`):\n{}\n\n{after}",
        studies.join("\n")
    ))
}

/// Parses the options of one task from `args` (without the task's name), as the command line
/// would: a usage error is [`TaskError::Usage`] with clap's message.
#[cfg(test)]
fn parse_task_args<T: Parser>(args: &[&str]) -> util::TaskResult<T> {
    T::try_parse_from(std::iter::once("task").chain(args.iter().copied()))
        .map_err(|error| TaskError::Usage(error.to_string()))
}

/// Asserts that each `args` is refused as a usage error whose message contains the text given
/// beside it.
#[cfg(test)]
fn assert_usage_errors<T: Parser + std::fmt::Debug>(cases: &[(&[&str], &str)]) {
    for &(args, message) in cases {
        match parse_task_args::<T>(args) {
            Err(TaskError::Usage(error)) => assert!(error.contains(message), "{args:?}: {error}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

fn main() -> ExitCode {
    // clap prints help (exit status 0) and usage errors (exit status 2) itself.
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // Every task works in the workspace it was started in; say which, since results are
    // written there.
    let root = match util::locate_root() {
        Ok(root) => root,
        Err(error) => {
            eprintln!("xtask: {error}");
            return ExitCode::from(2);
        }
    };
    eprintln!("xtask: workspace {}", root.display());
    let result = match cli.task {
        Task::Test(options) => test::test(options),
        Task::Bench(options) => bench::bench(options),
        Task::Sweep(options) => sweep::sweep(options),
        Task::Gate(options) => gate::gate(options),
        Task::Conformance(options) => conformance::conformance(options),
        Task::Ab(options) => ab::ab(options),
        Task::Report(options) => report::report(options),
        Task::Soak(options) => soak::soak(options),
        Task::SetupPrograms(options) => setup_programs::setup_programs(options),
        Task::Overhead(options) => overhead::overhead(options),
        Task::MapleShare(options) => maple_share::maple_share(options),
        Task::Batching(options) => batching::batching(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(TaskError::Regression(message)) => {
            eprintln!("xtask: {message}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn help_lists_everyday_tasks_before_the_studies() {
        let help = command().render_help().to_string();
        let position = |name: &str| {
            help.find(&format!("  {name} "))
                .unwrap_or_else(|| panic!("{name} missing from:\n{help}"))
        };
        let heading = help.find("Studies").expect("a heading for the studies");
        for task in [
            "test",
            "bench",
            "sweep",
            "gate",
            "conformance",
            "ab",
            "report",
            "setup-programs",
        ] {
            assert!(position(task) < heading, "{task}:\n{help}");
        }
        for study in ["overhead", "maple-share", "batching"] {
            assert!(position(study) > heading, "{study}:\n{help}");
        }
    }

    #[test]
    fn every_task_name_parses() {
        for args in [
            &["xtask", "test"][..],
            &["xtask", "test", "-p", "sheaf", "--", "--nocapture"],
            &["xtask", "bench", "--quick"],
            &["xtask", "sweep", "--no-barn"],
            &["xtask", "gate", "--only", "instructions"],
            &["xtask", "conformance", "--quick"],
            &[
                "xtask", "ab", "--base", "HEAD~1", "--alloc", "sheaf", "--runs", "10",
            ],
            &["xtask", "report", "results.json"],
            &[
                "xtask",
                "setup-programs",
                "--manifest",
                "programs/programs.yaml",
            ],
            &["xtask", "overhead", "--rounds", "2"],
            &["xtask", "maple-share", "--passes", "1"],
            &["xtask", "batching", "--rounds", "2"],
        ] {
            let matches = command().try_get_matches_from(args);
            assert!(matches.is_ok(), "{args:?}: {:?}", matches.err());
        }
        let unknown = command().try_get_matches_from(["xtask", "frobnicate"]);
        assert!(unknown.is_err());
    }
}
