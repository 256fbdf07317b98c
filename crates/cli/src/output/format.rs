//! Number formatting shared by tables and reports.

/// Operations per second with an SI prefix: `61.2 M/s`.
pub(crate) fn throughput(ops_per_s: f64) -> String {
    let (value, prefix) = if ops_per_s >= 1e9 {
        (ops_per_s / 1e9, "G")
    } else if ops_per_s >= 1e6 {
        (ops_per_s / 1e6, "M")
    } else if ops_per_s >= 1e3 {
        (ops_per_s / 1e3, "k")
    } else {
        (ops_per_s, "")
    };
    format!("{value:.2} {prefix}/s")
}

/// Nanoseconds in the largest unit that keeps the figure at least 1: `840 ns`, `1.25 µs`.
pub(crate) fn nanos(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A ratio: `1.00`, `3.42`.
pub(crate) fn ratio(r: f64) -> String {
    format!("{r:.2}")
}

/// The name of signal `signal` (`SIGSEGV`), for the signals that end a program; `None` for
/// the others.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGHUP => "SIGHUP",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

/// A ratio and its interval where it has one: `1.03 [0.98..1.07]`, `1.03`.
pub(crate) fn ratio_with_interval(estimate: f64, interval: Option<(f64, f64)>) -> String {
    match interval {
        Some((low, high)) => format!("{} [{}..{}]", ratio(estimate), ratio(low), ratio(high)),
        None => ratio(estimate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_naturally() {
        assert_eq!(throughput(61_234_567.0), "61.23 M/s");
        assert_eq!(throughput(950.0), "950.00 /s");
        assert_eq!(nanos(840.0), "840 ns");
        assert_eq!(nanos(1_250.0), "1.25 µs");
        assert_eq!(nanos(3_000_000.0), "3.00 ms");
    }
}
