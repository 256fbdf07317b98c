//! Warnings printed after the table, each kind once: a caveat that applies to several
//! measurements is printed with the list of measurements and the first one's details.

use harness::Measurement;

/// Measurements named per warning before the rest are counted.
const SHOWN_SUBJECTS: usize = 4;

/// One line per kind of warning (the text before the first `:`), in order of appearance.
pub(crate) fn collect(measurements: &[Measurement]) -> Vec<String> {
    collect_by_subject(measurements.iter().map(|m| {
        (
            format!("{}/{}/{}t", m.workload, m.allocator, m.config.threads),
            m.warnings.as_slice(),
        )
    }))
}

/// [`collect`] of the warnings of named subjects.
pub(crate) fn collect_by_subject<'a>(
    subjects: impl Iterator<Item = (String, &'a [String])>,
) -> Vec<String> {
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for (subject, warnings) in subjects {
        for w in warnings {
            let (kind, detail) = w.split_once(": ").unwrap_or((w.as_str(), ""));
            let subject = subject.clone();
            match groups.iter_mut().find(|(k, _, _)| k == kind) {
                Some((_, _, subjects)) => subjects.push(subject),
                None => groups.push((kind.to_owned(), detail.to_owned(), vec![subject])),
            }
        }
    }
    groups
        .into_iter()
        .map(|(kind, detail, subjects)| {
            if kind.starts_with("counters unsupported") {
                format!("{kind}: {detail}")
            } else if subjects.len() == 1 {
                format!("{kind} in {}: {detail}", subjects[0])
            } else {
                let shown = subjects.len().min(SHOWN_SUBJECTS);
                let more = match subjects.len() - shown {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                format!(
                    "{kind} in {} measurements ({}{more}); the first: {detail}",
                    subjects.len(),
                    subjects[..shown].join(", ")
                )
            }
        })
        .collect()
}

/// Prints warnings on stderr, hyperfine-style.
pub(crate) fn print(warnings: &[String]) {
    for w in warnings {
        eprintln!("Warning: {w}");
    }
}
