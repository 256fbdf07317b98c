//! Runs one measurement in a child process: the binary re-executes itself with the hidden
//! `__measure` subcommand, which prints the measurement as JSON on stdout. Global allocator
//! state, peak RSS and crashes stay in the child; the parent enforces a time-out and keeps
//! the child's stderr for the report.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Measurement, Workload};

/// How a child measurement ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It produced a measurement.
    Measured(Box<Measurement>),
    /// It crashed, timed out, refused the workload or printed no measurement.
    Failed {
        /// What happened.
        error: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// Stderr kept for a failure report.
const STDERR_TAIL: usize = 4000;

/// Measures `workload` on `allocator` with `threads` worker threads in a child process.
pub(crate) fn run_child(
    workload: &Workload,
    allocator: &str,
    threads: u32,
    timeout: Duration,
) -> Outcome {
    let failed = |error: String, stderr: String| Outcome::Failed { error, stderr };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("cannot find this executable: {e}"), String::new()),
    };
    let workload_json = serde_json::to_string(workload).expect("a workload serializes");
    let mut child = match Command::new(exe)
        .arg("__measure")
        .arg("--alloc")
        .arg(allocator)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--workload-json")
        .arg(workload_json)
        .env("RUST_BACKTRACE", "0")
        .env(
            crate::commands::measure::PARENT_PID_ENV,
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return failed(
                format!("cannot start the measuring process: {e}"),
                String::new(),
            );
        }
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if crate::output::interrupt::requested() => {
                let _ = child.kill();
                let _ = child.wait();
                break Err("interrupted".to_owned());
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "timed out after {:.0} s and was killed (raise --timeout if the workload is meant to take this long)",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("waiting for the measuring process failed: {e}")),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let err_text = tail(&String::from_utf8_lossy(&err), STDERR_TAIL);
    let status = match status {
        Ok(status) => status,
        Err(error) => return failed(error, err_text),
    };
    if !status.success() {
        let error = match (status.code(), status.signal()) {
            (Some(code), _) => format!("the measuring process exited with status {code}"),
            (None, Some(signal)) => {
                format!(
                    "the measuring process was killed by signal {signal}{}",
                    signal_name(signal)
                )
            }
            _ => "the measuring process ended abnormally".to_owned(),
        };
        return failed(error, err_text);
    }
    match serde_json::from_slice::<Measurement>(&out) {
        Ok(m) => Outcome::Measured(Box::new(m)),
        Err(e) => failed(
            format!("the measuring process printed no valid measurement: {e}"),
            err_text,
        ),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        _ => "",
    }
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}
