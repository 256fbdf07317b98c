//! Violations seen by the checks, and how they become a status per clause.
//!
//! A finding names the clause it violates and, optionally, the context clause whose setting
//! exposed it (see the crate documentation for the attribution rule). Only the first few
//! details per clause are kept: one reproducible case is what a reader needs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::{ClauseResult, Status, Verdict};

/// Details kept per (clause, context) pair.
const KEPT_PER_KEY: usize = 3;

#[derive(Debug, Default)]
struct Entry {
    count: u64,
    details: Vec<String>,
}

/// Every finding of one run, by (clause, context).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    entries: Mutex<BTreeMap<(&'static str, Option<&'static str>), Entry>>,
}

impl Findings {
    /// Records a violation of `clause`, seen in the setting of `context` if any.
    pub(crate) fn record(
        &self,
        clause: &'static str,
        context: Option<&'static str>,
        detail: String,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry((clause, context)).or_default();
        entry.count += 1;
        if entry.details.len() < KEPT_PER_KEY {
            entry.details.push(detail);
        }
    }

    /// Whether `clause` has a finding seen outside every context.
    pub(crate) fn fails_on_its_own(&self, clause: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .any(|((c, context), _)| *c == clause && context.is_none())
    }

    /// The result of clause `id`, given its check's verdict.
    pub(crate) fn resolve(
        &self,
        id: &'static str,
        verdict: Result<Verdict, String>,
        elapsed: Duration,
    ) -> ClauseResult {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let own_clauses: Vec<&str> = entries
            .keys()
            .filter(|(_, context)| context.is_none())
            .map(|(clause, _)| *clause)
            .collect();
        let mut failures = Vec::new();
        for ((clause, context), entry) in entries.iter() {
            let counts = *clause == id || (*context == Some(id) && !own_clauses.contains(clause));
            if counts {
                let setting = match context {
                    Some(context) if *clause == id => format!(" (seen under {context})"),
                    Some(_) => format!(" (violates {clause}, which holds outside {id})"),
                    None => String::new(),
                };
                failures.push(format!(
                    "{} violation(s){setting}; first: {}",
                    entry.count,
                    entry.details.join(" | ")
                ));
            }
        }
        let (status, detail) = match verdict {
            Err(message) => {
                failures.insert(0, message);
                (Status::Fail, failures.join("; "))
            }
            Ok(_) if !failures.is_empty() => (Status::Fail, failures.join("; ")),
            Ok(Verdict::Ran(text)) => (
                Status::Pass,
                format!("{text} [{:.1} s]", elapsed.as_secs_f64()),
            ),
            Ok(Verdict::NotApplicable(reason)) => (Status::NotApplicable, reason),
        };
        ClauseResult {
            id: id.to_owned(),
            status,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(findings: &Findings, id: &'static str) -> Status {
        findings
            .resolve(id, Ok(Verdict::Ran("ran".to_owned())), Duration::ZERO)
            .status
    }

    #[test]
    fn a_finding_fails_the_clause_it_names() {
        let findings = Findings::default();
        findings.record("C-OBJ-2", None, "overlap".to_owned());
        assert_eq!(status(&findings, "C-OBJ-2"), Status::Fail);
        assert_eq!(status(&findings, "C-OBJ-1"), Status::Pass);
        assert!(findings.fails_on_its_own("C-OBJ-2"));
    }

    #[test]
    fn a_violation_seen_only_in_a_context_fails_the_context_too() {
        let findings = Findings::default();
        findings.record(
            "C-OBJ-2",
            Some("C-CONC-1"),
            "overlap under 4 threads".to_owned(),
        );
        assert_eq!(status(&findings, "C-OBJ-2"), Status::Fail);
        assert_eq!(status(&findings, "C-CONC-1"), Status::Fail);
        assert!(!findings.fails_on_its_own("C-OBJ-2"));
    }

    #[test]
    fn a_violation_seen_everywhere_does_not_fail_the_context() {
        let findings = Findings::default();
        findings.record("C-OBJ-2", None, "overlap".to_owned());
        findings.record(
            "C-OBJ-2",
            Some("C-CONC-1"),
            "overlap under 4 threads".to_owned(),
        );
        assert_eq!(status(&findings, "C-CONC-1"), Status::Pass);
    }

    #[test]
    fn a_panic_fails_and_not_applicable_keeps_its_reason() {
        let findings = Findings::default();
        let failed = findings.resolve("C-OBJ-1", Err("boom".to_owned()), Duration::ZERO);
        assert_eq!(
            (failed.status, failed.detail.as_str()),
            (Status::Fail, "boom")
        );
        let skipped = findings.resolve(
            "C-RETURN-3",
            Ok(Verdict::NotApplicable("no barn".to_owned())),
            Duration::ZERO,
        );
        assert_eq!(
            (skipped.status, skipped.detail.as_str()),
            (Status::NotApplicable, "no barn")
        );
    }

    #[test]
    fn only_the_first_details_are_kept_but_all_are_counted() {
        let findings = Findings::default();
        for i in 0..10 {
            findings.record("C-OBJ-3", None, format!("case {i}"));
        }
        let result = findings.resolve("C-OBJ-3", Ok(Verdict::Ran(String::new())), Duration::ZERO);
        assert!(
            result.detail.starts_with("10 violation(s)"),
            "{}",
            result.detail
        );
        assert!(result.detail.contains("case 2") && !result.detail.contains("case 3"));
    }
}
