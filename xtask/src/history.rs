//! Recording the xtask's own results (`bench`, `gate`) into the results history, as the CLI
//! records its commands: after the result files are written, one transaction, and a store
//! that fails is one line on stderr, never a failed task. The `sheafbench` runs a task drives
//! are started with `--no-history`: the task records their merged result once.

use clap::Args;
use history::{Location, NewRun};

use crate::util;

/// The options of a task that records.
#[derive(Debug, Args)]
pub(crate) struct HistoryOptions {
    /// Neither read nor write the results history.
    #[arg(long)]
    pub(crate) no_history: bool,
    /// The results history: a SQLite file or a `postgres://` URL (default: $SHEAFBENCH_DB,
    /// else results/history.sqlite).
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) db: Option<String>,
}

impl HistoryOptions {
    /// The store these options name.
    pub(crate) fn location(&self) -> Location {
        Location::resolve(self.db.as_deref(), &util::root())
    }

    /// Records `run` unless `--no-history`; a failure is one line on stderr.
    pub(crate) fn record(&self, run: NewRun) {
        if self.no_history {
            return;
        }
        let run = run.with_branch_of(&util::root());
        match history::open(&self.location()).and_then(|mut store| store.record(&run)) {
            Ok(id) => eprintln!(
                "xtask: recorded as run {id} in {}",
                self.location().describe()
            ),
            Err(error) => eprintln!("xtask: not recorded in the results history ({error})"),
        }
    }
}
