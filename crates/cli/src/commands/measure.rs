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

/// Runs the measurement and prints it.
pub(crate) fn run(args: MeasureArgs) -> Result<(), CliError> {
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
    println!(
        "{}",
        serde_json::to_string(&measurement).expect("a measurement serializes")
    );
    Ok(())
}
