//! Project automation, run as `cargo xtask <task>`; one module per task.
//!
//! - `test`: formatting check, clippy with warnings denied, and every test (what CI runs).
//! - `bench`: the default benchmark suite with every allocator, into `results/runs/<time>/`.
//! - `sweep`: sheaf capacity and barn limits swept over the workloads that depend on them.
//! - `gate`: the regression gate against `results/reference/` (instruction counts and
//!   wall-clock ratios); `--bless` records new references.
//! - `conformance`: the contract clauses on every allocator.
//! - `report`: charts (SVG) from a result file of `sheafbench run`.
//! - `overhead`: the harness's figure for `churn-lifo` beside criterion's for the same loop.
//! - `maple-share`: each design's share of a maple-tree write's instructions, under callgrind.
//! - `batching`: batched deferred frees against per-object ones on `deferred-churn`.
//!
//! The xtask drives the `sheafbench` binary and cargo; it links no allocator.

mod batching;
mod bench;
mod conformance;
mod gate;
mod maple_share;
mod overhead;
mod report;
mod sweep;
mod test;
mod util;

use std::env;
use std::process::ExitCode;

use util::TaskError;

const USAGE: &str = "usage: cargo xtask <task> [options]

tasks:
  test          cargo fmt --check, clippy -D warnings, and every test (what CI runs)
  bench         default suite (workloads/*.yaml with `suite: default`), every allocator, at 1
                thread and at the CPU count, into results/runs/<time>/ (JSON, Markdown, SVG)
                [--quick] [--alloc a,b]
  sweep         sheaf capacity and barn limits over burst, prefill and maple-tree workloads
                [--quick] [--capacities 4,8,...] [--workload FILE]...
  gate          regression gate against results/reference/ (run `cargo xtask gate --help`)
  conformance   the contract clauses on every allocator [--quick]
  report        SVG charts from a result file: report <results.json> [--out DIR]
  overhead      sheafbench's churn-lifo figure beside criterion's for the same loop, per
                allocator [--alloc a,b] [--rounds N] [--measurement-time SECS]
  maple-share   instructions per maple-tree write under callgrind, split between the
                allocator and the tree, per design
                [--alloc a,b] [--spec FILE] [--passes N] [--json FILE]
  batching      deferred-churn at one writer, deferred batching on against off, per
                allocator: the paired ratio with its interval, recycled sheaves per second
                [--alloc a,b] [--rounds N] [--spec FILE] [--set key=value]...

exit status: 0 success, 1 the gate found a regression, 2 anything else went wrong";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let wants_help = rest.iter().any(|a| a == "-h" || a == "--help");
    let result = match task.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "gate" if wants_help => {
            println!("usage: {}", gate::USAGE);
            Ok(())
        }
        _ if wants_help => {
            println!("{USAGE}");
            Ok(())
        }
        "test" => test::test(rest),
        "bench" => bench::bench(rest),
        "sweep" => sweep::sweep(rest),
        "gate" => gate::gate(rest),
        "conformance" => conformance::conformance(rest),
        "report" => report::report(rest),
        "overhead" => overhead::overhead(rest),
        "maple-share" => maple_share::maple_share(rest),
        "batching" => batching::batching(rest),
        other => Err(TaskError::Usage(format!("unknown task `{other}`\n{USAGE}"))),
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
