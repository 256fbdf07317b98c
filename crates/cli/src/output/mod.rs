//! What the user sees: tables on stdout, warnings and progress on stderr.

pub(crate) mod format;
pub(crate) mod interrupt;
pub(crate) mod progress;
pub(crate) mod table;
pub(crate) mod warnings;

/// Prints `line` as a note on stderr and keeps it in the result file's notes (once).
pub(crate) fn note(results: &mut harness::ResultFile, line: String) {
    if !results.notes.contains(&line) {
        eprintln!("note: {line}");
        results.notes.push(line);
    }
}
