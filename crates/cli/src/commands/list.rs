//! `sheafbench list`: allocators (and how `sheaf` locks its CPU slots here), workload kinds,
//! counters and whether each is supported here, and the environment results record.

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use harness::counters;
use harness::spec::KindName;

use crate::registry::ALLOCATORS;

/// Prints the three lists and the environment.
pub(crate) fn run() {
    let mut allocators = Table::new();
    allocators.load_style(UTF8_FULL_CONDENSED);
    allocators.set_header(vec!["allocator", "description"]);
    for entry in ALLOCATORS {
        allocators.add_row(vec![entry.name, entry.description]);
    }
    println!("Allocators (--alloc):\n{allocators}");
    println!(
        "sheaf's CPU slot lock here: {}\n",
        sheaf::per_cpu_slot_lock()
    );

    let mut kinds = Table::new();
    kinds.load_style(UTF8_FULL_CONDENSED);
    kinds.set_header(vec!["kind", "what it does"]);
    for kind in KindName::ALL {
        kinds.add_row(vec![kind.as_str().to_owned(), kind.description()]);
    }
    println!("Workload kinds (`kind:` in a spec):\n{kinds}\n");

    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(vec!["counter", "on this machine"]);
    for (event, status) in counters::probe() {
        let status = match status {
            Ok(None) => "supported".to_owned(),
            Ok(Some(note)) => format!("supported ({note})"),
            Err(reason) => format!("unsupported: {reason}"),
        };
        table.add_row(vec![event.name().to_owned(), status]);
    }
    println!("Counters:\n{table}");

    let mut environment = Table::new();
    environment.load_style(UTF8_FULL_CONDENSED);
    environment.set_header(vec!["setting", "on this machine"]);
    for (label, value) in harness::environment::Environment::detect().describe() {
        environment.add_row(vec![label.to_owned(), value]);
    }
    println!("\nEnvironment (recorded in every result's `machine.environment`):\n{environment}");
}
