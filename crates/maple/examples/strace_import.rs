//! Converts an strace log to the trace format and replays it with checking on:
//! `cargo run -p maple --example strace_import -- <strace-log> <trace-out>`.

use std::process::ExitCode;

use maple::testing::TestAlloc;
use maple::{WriteConfig, run, strace};
use object_alloc::ObjectAlloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: strace_import <strace-log> <trace-out>");
        return ExitCode::FAILURE;
    };
    let log = match std::fs::read_to_string(input) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("cannot read {input}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let import = strace::import(&log);
    if let Err(e) = std::fs::write(output, import.trace.to_string()) {
        eprintln!("cannot write {output}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}", import.stats);
    let alloc = TestAlloc::new(&maple::node_cache_config()).expect("valid config");
    match run::replay(
        &alloc,
        &import.trace,
        WriteConfig::default(),
        true,
        &mut run::NoRecorder,
    ) {
        Ok(outcome) => {
            println!("replay: {outcome:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replay failed: {e}");
            ExitCode::FAILURE
        }
    }
}
