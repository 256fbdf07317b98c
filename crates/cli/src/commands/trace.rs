//! `sheafbench trace import`: an `strace -f -e trace=memory[,process]` log to the trace
//! format of the `trace-replay` kind ([`maple::trace`]), with [`maple::strace::import`].
//!
//! The importer counts what it cannot use (failed calls, unfinished/resumed pairs, munmaps of
//! unmapped ranges, unreadable lines) rather than refusing it; but a log that gives no record
//! at all (an empty file, or not an strace log) is refused with exit code 2 unless
//! `--lenient`, since an empty trace replays nothing. A log of several tasks without process
//! events gets a warning: each task then replays in an address space of its own. The output
//! is written atomically, so a failed import leaves no partial trace; the one-line summary
//! goes to stderr.

use std::io::Write;

use harness::result::write_atomic;

use crate::cli::TraceImportArgs;
use crate::error::CliError;

/// Runs `trace import`.
pub(crate) fn import(args: TraceImportArgs) -> Result<(), CliError> {
    crate::benchmark::plan::check_output("--output", args.output.as_deref())?;
    let log = std::fs::read(&args.log).map_err(|e| CliError::Usage {
        option: args.log.display().to_string(),
        message: format!("cannot read the strace log: {e}"),
    })?;
    // Logs may hold arbitrary bytes in strings strace printed; the importer skips lines it
    // cannot read, so a lossy conversion loses nothing it would use.
    let log = String::from_utf8_lossy(&log);
    let imported = maple::strace::import(&log);
    if imported.stats.records == 0 && !args.lenient {
        return Err(CliError::Usage {
            option: args.log.display().to_string(),
            message: format!(
                "no memory call read ({}): not an `strace -f -e trace=memory,process` log? \
                 (--lenient writes the empty trace)",
                imported.stats
            ),
        });
    }
    let text = imported.trace.to_string();
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::Usage {
                    option: "stdout".into(),
                    message: format!("cannot write the trace: {e}"),
                })?;
        }
    }
    eprintln!("{}: {}", args.log.display(), imported.stats);
    if imported.stats.tasks_ungrouped() {
        eprintln!(
            "warning: {}: {} tasks but no process events (clone, fork, execve): threads cannot \
             be grouped into processes, so each task replays in an address space of its own \
             (trace with `strace -f -e trace=memory,process`)",
            args.log.display(),
            imported.stats.tasks
        );
    }
    Ok(())
}
