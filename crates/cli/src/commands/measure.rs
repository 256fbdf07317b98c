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
}

impl AllocVisitor for Measure<'_> {
    type Output = Result<Measurement, MeasureError>;
    fn visit<A: ObjectAlloc>(self) -> Self::Output {
        measure::<A>(self.workload, self.threads, &MeasureOptions::default())
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
    let visitor = Measure {
        workload: &workload,
        threads: args.threads,
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
