//! The suite checks itself: a correct reference design passes every clause, and each
//! deliberately broken variant is caught by exactly the clauses its bug violates.

mod minimal;
mod reference;

use std::collections::BTreeSet;

use conformance::{AllocatorReport, CLAUSES, Options, Status};
use object_alloc::ObjectAlloc;
use reference::{
    BulkLeak, Correct, EmptyFallback, HugeObjects, KeepOversize, Overlap, PanicInRefill, Reference,
    RefillLoses, ShortPrefill, SlowBarrier, StrandedDeferrals, ZeroIgnored,
};

/// Options small enough for a debug test run, large enough to exercise every path.
fn options() -> Options {
    Options {
        fault_runs: 25,
        threads: vec![1, 2, 4],
        ..Options::quick()
    }
}

fn failing(report: &AllocatorReport) -> BTreeSet<String> {
    report
        .clauses
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id.clone())
        .collect()
}

fn dump(report: &AllocatorReport) -> String {
    report
        .clauses
        .iter()
        .map(|c| format!("{} {}: {}", c.id, c.status.as_str(), c.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

fn caught_exactly<A: ObjectAlloc>(expected: &[&str]) {
    let report = conformance::run::<A>(&options());
    let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        failing(&report),
        expected,
        "{} was not caught by exactly the expected clauses:\n{}",
        A::NAME,
        dump(&report)
    );
    for clause in &report.clauses {
        if clause.status == Status::Fail {
            assert!(
                clause.detail.contains("seed"),
                "a failure detail must name the seed: {}",
                clause.detail
            );
        }
    }
}

#[test]
fn the_reference_design_passes_every_clause() {
    let report = conformance::run::<Reference<Correct>>(&options());
    assert_eq!(report.allocator, "reference");
    let ids: Vec<&str> = report.clauses.iter().map(|c| c.id.as_str()).collect();
    let all: Vec<&str> = CLAUSES.iter().map(|c| c.id).collect();
    assert_eq!(ids, all, "every clause is reported, in order");
    for clause in &report.clauses {
        // The reference design fixes its limits when it is created.
        let expected = if clause.id == "C-CONF-4" {
            Status::NotApplicable
        } else {
            Status::Pass
        };
        assert_eq!(
            clause.status,
            expected,
            "{} is not {}:\n{}",
            clause.id,
            expected.as_str(),
            dump(&report)
        );
    }
}

#[test]
fn a_short_prefill_is_caught_by_prefill_1_only() {
    caught_exactly::<Reference<ShortPrefill>>(&["C-PREFILL-1"]);
}

#[test]
fn an_empty_sheaf_falling_back_is_caught_by_prefill_3_only() {
    caught_exactly::<Reference<EmptyFallback>>(&["C-PREFILL-3"]);
}

#[test]
fn a_bulk_allocation_leaking_on_failure_is_caught_by_bulk_1_only() {
    caught_exactly::<Reference<BulkLeak>>(&["C-BULK-1"]);
}

#[test]
fn overlapping_objects_are_caught_by_obj_2_only() {
    caught_exactly::<Reference<Overlap>>(&["C-OBJ-2"]);
}

#[test]
fn zero_ignored_on_reuse_is_caught_by_obj_3_only() {
    caught_exactly::<Reference<ZeroIgnored>>(&["C-OBJ-3"]);
}

#[test]
fn a_refill_losing_its_objects_is_caught_by_refill_2_only() {
    caught_exactly::<Reference<RefillLoses>>(&["C-REFILL-2"]);
}

#[test]
fn a_kept_oversize_sheaf_is_caught_by_return_4_only() {
    caught_exactly::<Reference<KeepOversize>>(&["C-RETURN-4"]);
}

#[test]
fn accepting_objects_no_slab_can_hold_is_caught_by_conf_1_and_conf_3() {
    caught_exactly::<Reference<HugeObjects>>(&["C-CONF-1", "C-CONF-3"]);
}

#[test]
fn a_panicking_design_fails_the_clauses_it_panics_in_and_the_run_goes_on() {
    let report = conformance::run::<Reference<PanicInRefill>>(&options());
    let expected: BTreeSet<String> = ["C-REFILL-1", "C-REFILL-2", "C-REFILL-3", "C-REFILL-4"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(failing(&report), expected, "{}", dump(&report));
    let refill = report.clause("C-REFILL-2").unwrap();
    assert!(
        refill.detail.contains("panicked") && refill.detail.contains("broken on purpose"),
        "{}",
        refill.detail
    );
    assert_eq!(report.clauses.len(), CLAUSES.len());
}

#[test]
fn deferred_frees_stranded_in_an_idle_thread_are_caught_by_defer_3_only() {
    caught_exactly::<Reference<StrandedDeferrals>>(&["C-DEFER-3"]);
}

#[test]
fn a_check_that_takes_too_long_is_reported_as_hung() {
    let options = Options {
        only: Some(vec!["C-DEFER-2".to_owned()]),
        check_timeout: std::time::Duration::from_millis(500),
        ..options()
    };
    let report = conformance::run::<Reference<SlowBarrier>>(&options);
    let clause = report.clause("C-DEFER-2").unwrap();
    assert_eq!(clause.status, Status::Fail);
    assert!(
        clause.detail.contains("did not finish"),
        "{}",
        clause.detail
    );
}

#[test]
fn a_design_without_capabilities_passes_what_applies_and_says_why_the_rest_does_not() {
    let report = conformance::run::<minimal::Minimal>(&options());
    assert!(failing(&report).is_empty(), "{}", dump(&report));
    let not_applicable: BTreeSet<&str> = report
        .clauses
        .iter()
        .filter(|c| c.status == Status::NotApplicable)
        .map(|c| c.id.as_str())
        .collect();
    let expected: BTreeSet<&str> = [
        "C-OBJ-5",
        "C-PREFILL-6",
        "C-REFILL-4",
        "C-RETURN-2",
        "C-RETURN-3",
        "C-RETURN-4",
        "C-DEFER-2",
        "C-CONF-4",
        "C-CONC-4",
    ]
    .into_iter()
    .collect();
    assert_eq!(not_applicable, expected, "{}", dump(&report));
    for clause in &report.clauses {
        assert!(!clause.detail.is_empty(), "{} has no detail", clause.id);
    }
    // Clauses that apply to every design were run, not skipped.
    for id in [
        "C-PREFILL-1",
        "C-PREFILL-2",
        "C-REFILL-1",
        "C-REFILL-2",
        "C-BULK-1",
        "C-OBJ-3",
    ] {
        assert_eq!(
            report.clause(id).map(|c| c.status),
            Some(Status::Pass),
            "{id}"
        );
    }
}

#[test]
fn only_runs_the_selected_clauses() {
    let options = Options {
        only: Some(vec!["C-CONF-1".to_owned(), "c-prefill-7".to_owned()]),
        ..options()
    };
    let report = conformance::run::<Reference<Correct>>(&options);
    let ids: Vec<&str> = report.clauses.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["C-PREFILL-7", "C-CONF-1"]);
}

#[test]
fn reports_serialise_to_the_documented_json_shape() {
    let report = AllocatorReport {
        allocator: "sheaf".to_owned(),
        clauses: vec![
            conformance::ClauseResult {
                id: "C-PREFILL-1".to_owned(),
                status: Status::Pass,
                detail: "ok".to_owned(),
            },
            conformance::ClauseResult {
                id: "C-RETURN-3".to_owned(),
                status: Status::NotApplicable,
                detail: "no barn".to_owned(),
            },
            conformance::ClauseResult {
                id: "C-OBJ-2".to_owned(),
                status: Status::Fail,
                detail: "overlap".to_owned(),
            },
        ],
    };
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"allocator": "sheaf", "clauses": [
            {"id": "C-PREFILL-1", "status": "pass", "detail": "ok"},
            {"id": "C-RETURN-3", "status": "n/a", "detail": "no barn"},
            {"id": "C-OBJ-2", "status": "fail", "detail": "overlap"}
        ]})
    );
    let back: AllocatorReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn clause_ids_are_unique_and_summarised() {
    let ids: BTreeSet<&str> = CLAUSES.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), CLAUSES.len());
    assert_eq!(CLAUSES.len(), 34);
    for clause in CLAUSES {
        assert!(clause.id.starts_with("C-") && !clause.summary.is_empty());
    }
}
