//! The clauses of the allocator API contract (`docs/contract.md` in the repository) as checks that run on any
//! [`ObjectAlloc`] design.
//!
//! # How a run works
//!
//! [`run`] executes one *check* per clause ID of [`CLAUSES`], in order, each on a fresh cache
//! (and a fresh page source), each on its own thread under [`std::panic::catch_unwind`] and a
//! time limit, so one design that panics or hangs yields a `fail` with the reason instead of
//! ending the run. A check drives a scenario (single operations, seeded fault injection, several
//! threads moved between CPUs) and records *findings*: violations of a clause, each with a detail
//! that names the seed, sizes and thread count needed to reproduce it.
//!
//! # Attribution
//!
//! A scenario often observes a clause other than the one it is written for: every check verifies
//! the pattern written into each object before freeing it, so an overlap shows up everywhere.
//! A finding therefore names the clause it violates, whichever check saw it, and optionally a
//! *context* clause: the concurrency clauses (C-CONC-1/2) and C-CONF-2 ("every prefill clause
//! with capacity 0") re-run other clauses in their setting. A clause fails when
//!
//! - some finding names it, or
//! - some finding has it as context, and the finding's own clause holds outside every context:
//!   the failure is specific to the setting (for example an overlap seen only under four
//!   threads fails both C-OBJ-2 and C-CONC-1; an overlap seen everywhere fails C-OBJ-2 alone).
//!
//! The concurrent scenarios run last and leave out the operations whose clauses already fail on
//! their own (saying so in the detail), so a broken refill is reported by C-REFILL-2, not again
//! by every scenario that happens to refill.
//!
//! # Accounting
//!
//! Every fixture gives the design its own `slab::LimitedPages` (a byte budget and seeded fault
//! injection over mmap). At quiescent points (threads joined, `barrier()` called) the live
//! count of `stats()` must equal the objects the check holds; objects still in an outstanding
//! prefilled sheaf may count either as live or as cached, and both readings are accepted. After
//! every object is freed, `barrier()` and `shrink()`, the page source must hold 0 bytes.
//!
//! # Threads
//!
//! Scenarios pin threads with `core_affinity` and move them between CPUs as they run. Every
//! thread is joined explicitly before accounting is checked: the end of a `std::thread::scope`
//! does not wait for thread-local destructors, which is where a design with thread-local
//! sheaves hands them back.
//!
//! # Reproducing a failure
//!
//! Each detail names the seed, the configuration (object size, alignment, capacity, barn
//! limits, nodes), the thread count and, for fault-injection runs, the run number and the
//! fault seed. Every random choice derives from [`Options::seed`] and the clause, so running
//! the same clause alone ([`Options::only`]) with the same seed repeats the same operations
//! (thread interleavings aside).
//!
//! # Applicability
//!
//! Clauses that depend on what a design promises ([`object_alloc::Capabilities`]) are reported
//! `n/a` with the reason when the promise is not made: page accounting and fault injection need
//! `uses_page_source`, `NOWAIT` clauses need `honours_nowait`, live-object accounting needs
//! `tracks_live_objects`, barn limits need `sheaf_layer`.
//!
//! # Modules
//!
//! - `checks`: one check per clause, by family (`obj`, `bulk`, `prefill`, `refill`, `ret`,
//!   `defer`, `conc`, `fork`, `conf`), and the scaffolding they share (`checks/mod.rs`: the
//!   fixture, the hand of stamped objects, the ID-to-check map). `checks/prefill/failed.rs`
//!   holds C-PREFILL-6, the prefills that must fail.
//! - `findings`: violations and the attribution rule that turns them into a status.
//! - `objects`: object stamps; owns "every byte of a live object is checked before its free".
//! - `pages`: the page source of the checks; `rng`: the seeded generator every choice derives
//!   from.
//!
//! # The generic test suite
//!
//! [`testing`] holds the short, deterministic checks that every design's integration tests
//! run under `cargo test` (one `#[test]` each, through [`allocator_tests!`] and
//! [`page_source_tests!`]); they panic on the first violation instead of recording findings.

mod checks;
mod findings;
mod objects;
mod pages;
mod rng;
pub mod testing;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use object_alloc::ObjectAlloc;
use serde::{Deserialize, Serialize};

use findings::Findings;

/// One clause of the contract: its stable ID and what it promises, in one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clause {
    /// The stable ID, as in `docs/contract.md` (`"C-PREFILL-1"`).
    pub id: &'static str,
    /// The promise, in one line.
    pub summary: &'static str,
}

/// Every clause of the contract (`docs/contract.md`), in its order.
pub const CLAUSES: &[Clause] = &[
    Clause {
        id: "C-OBJ-1",
        summary: "objects are aligned, at least the configured size, and writable throughout",
    },
    Clause {
        id: "C-OBJ-2",
        summary: "no two live objects overlap, across all threads",
    },
    Clause {
        id: "C-OBJ-3",
        summary: "ZERO yields all-zero objects, even on reused memory",
    },
    Clause {
        id: "C-OBJ-4",
        summary: "objects freed on any thread (remote free) can be allocated again on any thread",
    },
    Clause {
        id: "C-OBJ-5",
        summary: "live objects match stats() at quiescent points; nothing is held after free-all and shrink",
    },
    Clause {
        id: "C-BULK-1",
        summary: "alloc_bulk is all-or-nothing: distinct objects on success, nothing leaked on failure",
    },
    Clause {
        id: "C-BULK-2",
        summary: "free_bulk accepts objects from any mix of slabs and threads",
    },
    Clause {
        id: "C-PREFILL-1",
        summary: "prefill(n) yields a sheaf with size() >= n, or an error",
    },
    Clause {
        id: "C-PREFILL-2",
        summary: "the first n allocs from a sheaf prefilled to n never fail, even with the page source exhausted",
    },
    Clause {
        id: "C-PREFILL-3",
        summary: "alloc on an empty sheaf fails; it never falls back to the cache",
    },
    Clause {
        id: "C-PREFILL-4",
        summary: "each successful sheaf alloc lowers size() by exactly one",
    },
    Clause {
        id: "C-PREFILL-5",
        summary: "oversize prefill (n > capacity) holds n; on return its unused objects go back",
    },
    Clause {
        id: "C-PREFILL-6",
        summary: "a failed prefill (exhausted, or NOWAIT with nothing cached) errs and leaks nothing",
    },
    Clause {
        id: "C-PREFILL-7",
        summary: "prefill(0) succeeds",
    },
    Clause {
        id: "C-PREFILL-8",
        summary: "objects from a sheaf can be freed with free, free_bulk or free_deferred, on any thread",
    },
    Clause {
        id: "C-REFILL-1",
        summary: "refill(n) with size() >= n succeeds and changes nothing",
    },
    Clause {
        id: "C-REFILL-2",
        summary: "refill(n) with n <= capacity() tops the sheaf up in place, losing nothing",
    },
    Clause {
        id: "C-REFILL-3",
        summary: "refill(n) with n > capacity() replaces the sheaf; old objects go back to the cache",
    },
    Clause {
        id: "C-REFILL-4",
        summary: "a failed refill errs and leaves the sheaf exactly as it was; nothing leaks",
    },
    Clause {
        id: "C-RETURN-1",
        summary: "returning a sheaf of any size loses none of its objects",
    },
    Clause {
        id: "C-RETURN-2",
        summary: "returning with NOWAIT never grows the cache",
    },
    Clause {
        id: "C-RETURN-3",
        summary: "the barn never holds more full or empty sheaves than its limits",
    },
    Clause {
        id: "C-RETURN-4",
        summary: "an oversize sheaf is never kept in a CPU slot or the barn",
    },
    Clause {
        id: "C-DEFER-1",
        summary: "a deferred-freed object is not reused while a read-side section that saw it is active",
    },
    Clause {
        id: "C-DEFER-2",
        summary: "deferred objects become reusable: after barrier/shrink accounting holds",
    },
    Clause {
        id: "C-DEFER-3",
        summary: "barrier never waits for an idle or blocked thread to run again; a deferred free's grace period starts within a documented delay",
    },
    Clause {
        id: "C-CONF-1",
        summary: "zero or impossible sizes, alignments and capacities are refused, naming the field",
    },
    Clause {
        id: "C-CONF-2",
        summary: "sheaf_capacity = 0 still honours every prefill clause (all prefills oversize)",
    },
    Clause {
        id: "C-CONF-3",
        summary: "no safe constructor at any layer (cache, slab pool, slab layout) accepts a \
                  configuration with an unusable geometry, and no safe call makes the allocator \
                  touch memory outside what it mapped",
    },
    Clause {
        id: "C-CONF-4",
        summary: "a run-time change of the sheaf capacity or the barn limits makes no allocation \
                  fail and breaks no prefill guarantee",
    },
    Clause {
        id: "C-CONC-1",
        summary: "the clauses hold under 1, 2 and 4 threads, with migration and remote frees",
    },
    Clause {
        id: "C-CONC-2",
        summary: "threads that exit do not strand objects in CPU-local or thread-local sheaves",
    },
    Clause {
        id: "C-CONC-3",
        summary: "after fork, whatever other threads were doing, the child can allocate, free, \
                  prefill, return, shrink, barrier and drop every cache; objects the vanished \
                  threads held may be lost, never handed out twice",
    },
    Clause {
        id: "C-CONC-4",
        summary: "shrink, barrier and accounting reach every live thread's and CPU's sheaves, waiting for no idle thread",
    },
];

/// The outcome of one clause on one design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The check ran and saw no violation.
    Pass,
    /// The check saw a violation (or the design panicked or hung); the detail says how to
    /// reproduce it.
    Fail,
    /// The clause does not apply to the design; the detail says why.
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Status {
    /// The name used in tables and JSON: `pass`, `fail`, `n/a`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "n/a",
        }
    }
}

/// The result of one clause's check on one design.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClauseResult {
    /// The clause ID (`"C-PREFILL-1"`).
    pub id: String,
    /// Pass, fail or not applicable.
    pub status: Status,
    /// What was checked (pass), how to reproduce the violation (fail), or why the clause does
    /// not apply (n/a).
    pub detail: String,
}

/// Every clause's result for one design.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorReport {
    /// The design's [`ObjectAlloc::NAME`].
    pub allocator: String,
    /// One result per clause, in the order of [`CLAUSES`].
    pub clauses: Vec<ClauseResult>,
}

impl AllocatorReport {
    /// Whether some applicable clause failed.
    pub fn has_failures(&self) -> bool {
        self.clauses.iter().any(|c| c.status == Status::Fail)
    }

    /// The result for clause `id`, if it was run.
    pub fn clause(&self, id: &str) -> Option<&ClauseResult> {
        self.clauses.iter().find(|c| c.id == id)
    }
}

/// How thoroughly to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of every random choice (sizes, operation mixes, fault points). A failure's detail
    /// names the seed; rerunning with it (and `only` set to the clause) reproduces the run.
    pub seed: u64,
    /// Seeded fault-injection runs per fault-injected clause (C-PREFILL-6, C-REFILL-4,
    /// C-BULK-1, C-RETURN-1).
    pub fault_runs: usize,
    /// Thread counts of the concurrent scenarios (C-OBJ-2, C-CONC-1, C-CONC-2, ...).
    pub threads: Vec<usize>,
    /// A short smoke run: a tenth of the rounds, same clauses.
    pub quick: bool,
    /// Multiplier of every scenario's rounds and steps (not of `fault_runs`). The default is 1
    /// in debug builds of this crate and 3 in optimised ones, so a run takes about the same
    /// time either way.
    pub scale: usize,
    /// Clause IDs to run; `None` runs all. Clauses left out are not in the report.
    pub only: Option<Vec<String>>,
    /// Longest time one clause's check may take before it is reported as hung.
    pub check_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let optimised = !cfg!(debug_assertions);
        Self {
            seed: 0x5eaf_bec4_2025,
            fault_runs: if optimised { 1000 } else { 300 },
            threads: vec![1, 2, 4],
            quick: false,
            scale: if optimised { 3 } else { 1 },
            only: None,
            check_timeout: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The smoke-run settings: `quick`, 30 fault runs, scale 1, threads 1 and 2.
    pub fn quick() -> Self {
        Self {
            fault_runs: 30,
            threads: vec![1, 2],
            quick: true,
            scale: 1,
            ..Self::default()
        }
    }

    /// Rounds of a repeated scenario step: `full` times the scale, a tenth of it (at least 1)
    /// when quick.
    pub(crate) fn rounds(&self, full: usize) -> usize {
        let full = full * self.scale.max(1);
        if self.quick { (full / 10).max(1) } else { full }
    }

    fn selected(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o.eq_ignore_ascii_case(id)))
    }
}

/// What a check concluded besides its findings.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// It ran; the text says what was covered.
    Ran(String),
    /// The clause does not apply; the text says why.
    NotApplicable(String),
}

/// Runs every selected clause's check on design `A` and reports each clause.
pub fn run<A: ObjectAlloc>(options: &Options) -> AllocatorReport {
    let mut options = options.clone();
    options.threads.retain(|&threads| threads > 0);
    if options.threads.is_empty() {
        options.threads.push(1);
    }
    let options = &options;
    let findings = Arc::new(Findings::default());
    let mut verdicts: Vec<(&'static str, Verdict, Duration)> = Vec::new();
    for clause in CLAUSES {
        if !options.selected(clause.id) {
            continue;
        }
        let start = Instant::now();
        let verdict = match run_one::<A>(clause.id, options, &findings) {
            Ok(verdict) => verdict,
            Err(message) => {
                // A panic or a hang is a violation of the clause being checked, filed like any
                // other so that later scenarios know the clause already fails on its own.
                findings.record(clause.id, None, message);
                Verdict::Ran(String::new())
            }
        };
        verdicts.push((clause.id, verdict, start.elapsed()));
    }
    let clauses = verdicts
        .into_iter()
        .map(|(id, verdict, elapsed)| findings.resolve(id, Ok(verdict), elapsed))
        .collect();
    AllocatorReport {
        allocator: A::NAME.to_owned(),
        clauses,
    }
}

/// Runs the check of clause `id` on its own thread, catching panics and bounding its time.
fn run_one<A: ObjectAlloc>(
    id: &'static str,
    options: &Options,
    findings: &Arc<Findings>,
) -> Result<Verdict, String> {
    let (sender, receiver) = mpsc::channel();
    let thread_options = options.clone();
    let thread_findings = Arc::clone(findings);
    let spawned = std::thread::Builder::new()
        .name(format!("conformance {id}"))
        .spawn(move || {
            let ctx = checks::Ctx {
                clause: id,
                options: &thread_options,
                findings: &thread_findings,
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| checks::run_check::<A>(&ctx)));
            let outcome = outcome.map_err(|payload| panic_message(payload.as_ref()));
            // The receiver may be gone after a time-out; nothing to do then.
            let _ = sender.send(outcome);
        });
    if let Err(error) = spawned {
        return Err(format!("could not start the check's thread: {error}"));
    }
    match receiver.recv_timeout(options.check_timeout) {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(message)) => Err(format!(
            "the design panicked during the check (seed {:#x}): {message}",
            options.seed
        )),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "the check did not finish within {:?} (seed {:#x}): the design hangs or is far too slow; \
             its thread was left running",
            options.check_timeout, options.seed
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err("the check's thread ended without a result (panic while panicking?)".to_owned())
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}
