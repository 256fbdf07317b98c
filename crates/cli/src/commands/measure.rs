//! `sheafbench __measure`: the child side of a measurement. Prints the measurement as JSON
//! on stdout; any failure goes to stderr with a non-zero exit.

use harness::{MeasureError, MeasureOptions, Measurement, Workload, measure};
use object_alloc::ObjectAlloc;

use crate::cli::MeasureArgs;
use crate::error::CliError;
use crate::registry::{self, AllocVisitor};

struct Measure<'a> {
    workload: &'a Workload,
    threads: u32,
    options: MeasureOptions,
}

impl AllocVisitor for Measure<'_> {
    type Output = Result<Measurement, MeasureError>;
    fn visit<A: ObjectAlloc>(self) -> Self::Output {
        measure::<A>(self.workload, self.threads, &self.options)
    }
}

/// The line a gated child prints on stdout once it is set up (before its measurement's
/// JSON), and the line it then waits for on stdin.
pub(crate) const READY: &str = "ready";
/// See [`READY`].
pub(crate) const GO: &str = "go";

/// The start gate of `__measure --start-gate`: says [`READY`] on stdout and waits for [`GO`]
/// on stdin. Anything else (the parent closed the pipe: it gave up or died) ends the process
/// before it measures.
fn wait_for_go() {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    let said = writeln!(out, "{READY}").and_then(|()| out.flush());
    drop(out);
    let mut line = String::new();
    let heard = std::io::stdin().lock().read_line(&mut line);
    if said.is_err() || heard.is_err() || line.trim() != GO {
        eprintln!("sheafbench: no start signal from the parent; not measuring");
        std::process::exit(1);
    }
}

/// The environment variable through which the parent names itself to the measuring child.
pub(crate) const PARENT_PID_ENV: &str = "SHEAFBENCH_PARENT_PID";

/// Makes this measuring process die with the `sheafbench run` that started it, so that an
/// interrupted run (Ctrl-C, a kill) leaves no measurement running on behind it. The kernel
/// sends SIGKILL when the parent exits; a parent that exited before the request was made is
/// caught by comparing the current parent with the one named in [`PARENT_PID_ENV`].
fn die_with_parent() {
    use rustix::process::{Signal, getppid, set_parent_process_death_signal};
    if set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        return; // Not available: the parent's time-out still bounds the measurement.
    }
    let named = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok());
    let current = getppid().map(|pid| pid.as_raw_nonzero().get());
    if let Some(named) = named
        && current != Some(named)
    {
        eprintln!("sheafbench: the run that started this measurement has ended");
        std::process::exit(1);
    }
}

/// The warning for a run without sheaves (`sheaf_capacity: 0`) of a design that has them:
/// a legal setting, but every allocation and free then takes the slab path, so the figures
/// are those of another configuration, many times slower.
pub(crate) fn no_sheaves(workload: &Workload, alloc: &str) -> Option<String> {
    (workload.spec.sheaf_capacity == Some(0) && registry::reads_field(alloc, "sheaf_capacity"))
        .then(|| {
            "no sheaves: sheaf_capacity is 0, so every allocation and free goes to the slabs \
             (many times slower than with the default capacity); leave sheaf_capacity \
             out for the default"
                .to_owned()
        })
}

/// Runs the measurement and prints it.
pub(crate) fn run(args: MeasureArgs) -> Result<(), CliError> {
    die_with_parent();
    let workload: Workload =
        serde_json::from_str(&args.workload_json).map_err(|e| CliError::Usage {
            option: "--workload-json".into(),
            message: format!("not a workload: {e}"),
        })?;
    let options = MeasureOptions {
        task: args.task.zip(args.tasks),
        start_gate: args.start_gate.then_some(wait_for_go as fn()),
        ..MeasureOptions::default()
    };
    let visitor = Measure {
        workload: &workload,
        threads: args.threads,
        options,
    };
    let measurement = registry::with_allocator(&args.alloc, visitor).ok_or_else(|| {
        CliError::UnknownAllocator {
            name: args.alloc.clone(),
            known: registry::names().join(", "),
        }
    })??;
    let mut measurement = measurement;
    if let Some(note) = no_sheaves(&workload, &args.alloc) {
        measurement.warnings.push(note);
    }
    println!(
        "{}",
        serde_json::to_string(&measurement).expect("a measurement serializes")
    );
    Ok(())
}
