//! Runs one measurement in a child process: the binary re-executes itself with the hidden
//! `__measure` subcommand, which prints the measurement as JSON on stdout. Global allocator
//! state, peak RSS and crashes stay in the child; the parent enforces a time-out and keeps
//! the child's stderr for the report.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Measurement, Workload};

use crate::output::format;

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

/// Another build of sheafbench that measures in place of this binary (`sheafbench ab`): its
/// name in the results (`ALLOCATOR@NAME`), its path and what identifies it.
#[derive(Clone, Debug)]
pub(crate) struct Build {
    /// Its name: `old` or `new`.
    pub(crate) name: String,
    /// The executable.
    pub(crate) exe: std::path::PathBuf,
    /// The executable's SHA-256, in hex: two builds with the same digest are one build.
    pub(crate) sha256: String,
    /// What `--version` printed.
    pub(crate) version: String,
}

impl Build {
    /// Checks that `exe` is a sheafbench binary that runs here, and identifies it.
    pub(crate) fn probe(name: &str, exe: &Path) -> Result<Self, String> {
        use sha2::{Digest, Sha256};
        let exe = exe
            .canonicalize()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let bytes = std::fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let output = Command::new(&exe)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: cannot run it: {e}", exe.display()))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || !version.starts_with("sheafbench ") {
            return Err(format!(
                "{}: not a sheafbench binary (`--version` printed {version:?})",
                exe.display()
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            exe,
            sha256,
            version,
        })
    }

    /// How results name `allocator` measured by this build.
    pub(crate) fn label(&self, allocator: &str) -> String {
        format!("{allocator}@{}", self.name)
    }
}

/// Stderr kept for a failure report.
const STDERR_TAIL: usize = 4000;

/// Measures `workload` on `allocator` with `threads` worker threads in a child process: of
/// `exe`, another build of sheafbench (`sheafbench ab`), or of this binary (`None`).
pub(crate) fn run_child(
    exe: Option<&Path>,
    workload: &Workload,
    allocator: &str,
    threads: u32,
    timeout: Duration,
) -> Outcome {
    let failed = |error: String, stderr: String| Outcome::Failed { error, stderr };
    let exe = match exe.map_or_else(std::env::current_exe, |p| Ok(p.to_owned())) {
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
        return failed(exit_error(status), err_text);
    }
    match serde_json::from_slice::<Measurement>(&out) {
        Ok(m) => Outcome::Measured(Box::new(m)),
        Err(e) => failed(
            format!("the measuring process printed no valid measurement: {e}"),
            err_text,
        ),
    }
}

/// What a failed exit status says.
fn exit_error(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the measuring process exited with status {code}"),
        (None, Some(signal)) => {
            let name = format::signal_name(signal).map_or_else(String::new, |n| format!(" ({n})"));
            format!("the measuring process was killed by signal {signal}{name}")
        }
        _ => "the measuring process ended abnormally".to_owned(),
    }
}

/// The `__measure` command of one process of a gated measurement: `allocator` with
/// `threads` worker threads, as task `task` of `tasks` (`None`: the process is alone).
pub(crate) fn measure_command(
    workload: &Workload,
    allocator: &str,
    threads: u32,
    task: Option<(usize, usize)>,
) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("__measure")
        .arg("--alloc")
        .arg(allocator)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--workload-json")
        .arg(serde_json::to_string(workload).expect("a workload serializes"))
        .arg("--start-gate")
        .env("RUST_BACKTRACE", "0")
        .env(
            crate::commands::measure::PARENT_PID_ENV,
            std::process::id().to_string(),
        );
    if let Some((index, tasks)) = task {
        command
            .arg("--task")
            .arg(index.to_string())
            .arg("--tasks")
            .arg(tasks.to_string());
    }
    Ok(command)
}

/// What one process of [`run_together`] printed.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its process id.
    pub(crate) pid: u32,
    /// Its stdout after the ready line.
    pub(crate) stdout: Vec<u8>,
}

/// How [`run_together`] failed: which process, what happened, the end of its stderr.
#[derive(Debug)]
pub(crate) struct TogetherFailure {
    /// Index of the process in the commands given.
    pub(crate) index: usize,
    /// What happened.
    pub(crate) error: String,
    /// The end of its stderr.
    pub(crate) stderr: String,
}

/// One process of [`run_together`] and the threads draining its pipes.
struct Started {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
    exited: Option<std::process::ExitStatus>,
}

/// Runs `commands` as processes measured together, behind a start gate: each prints
/// [`READY`](crate::commands::measure::READY) on stdout once it is set up; when all have,
/// each is sent [`GO`](crate::commands::measure::GO) on stdin, so that their measured runs
/// overlap. Stdout after the ready line is returned per process. A process that exits
/// before it is ready, fails, or is still running at `timeout` (counted from the start) is
/// reported with the end of its stderr; every other process is then killed, so that nothing
/// is left running and the caller never waits past `timeout`.
pub(crate) fn run_together(
    commands: Vec<Command>,
    timeout: Duration,
) -> Result<Vec<Finished>, TogetherFailure> {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;

    let start = Instant::now();
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, bool)>();
    let mut started: Vec<Started> = Vec::new();
    let kill_all = |started: &mut Vec<Started>| {
        for s in started.iter_mut() {
            if s.exited.is_none() {
                let _ = s.child.kill();
                s.exited = s.child.wait().ok();
            }
        }
    };
    let stderr_of = |s: Started| -> String {
        let _ = s.out.join();
        let err = s.err.join().unwrap_or_default();
        tail(&String::from_utf8_lossy(&err), STDERR_TAIL)
    };
    // Kills every process and reports process `index`.
    let fail = |mut started: Vec<Started>, index: usize, error: String| {
        kill_all(&mut started);
        let stderr = started
            .into_iter()
            .nth(index)
            .map(stderr_of)
            .unwrap_or_default();
        Err(TogetherFailure {
            index,
            error,
            stderr,
        })
    };
    for (index, mut command) in commands.into_iter().enumerate() {
        let spawned = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return fail(
                    started,
                    index,
                    format!("cannot start the measuring process: {e}"),
                );
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let ready = ready_tx.clone();
        let out = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let said = reader.read_line(&mut first).is_ok()
                && first.trim_end() == crate::commands::measure::READY;
            let _ = ready.send((index, said));
            let mut buf = Vec::new();
            if said {
                let _ = reader.read_to_end(&mut buf);
            } else {
                // Whatever else it printed, drained so that it never blocks on a full pipe.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        started.push(Started {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            exited: None,
        });
    }
    drop(ready_tx);
    let total = started.len();
    let overdue = |what: &str| {
        format!(
            "timed out after {:.0} s {what} and was killed (raise --timeout if the workload is meant to take this long)",
            timeout.as_secs_f64()
        )
    };
    // Every process set up and waiting at its gate.
    let mut ready = vec![false; total];
    while ready.iter().any(|r| !r) {
        if crate::output::interrupt::requested() {
            let first = ready.iter().position(|r| !r).unwrap_or(0);
            return fail(started, first, "interrupted".into());
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            let first = ready.iter().position(|r| !r).unwrap_or(0);
            return fail(started, first, overdue("before it was ready to start"));
        }
        match ready_rx.recv_timeout(left.min(Duration::from_millis(50))) {
            Ok((index, true)) => ready[index] = true,
            Ok((index, false)) => {
                // Its stdout closed without the ready line: it failed while setting up.
                let s = &mut started[index];
                let grace = (Instant::now() + Duration::from_secs(2)).min(start + timeout);
                let status = wait_until(&mut s.child, grace);
                let error = match status {
                    Some(status) if !status.success() => exit_error(status),
                    Some(_) => "the measuring process ended before it was ready to start".into(),
                    None => overdue("after closing its output"),
                };
                s.exited = status;
                return fail(started, index, error);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for s in &mut started {
        // A process that died since it said ready is found below by its exit status.
        if let Some(mut stdin) = s.stdin.take() {
            let _ = writeln!(stdin, "{}", crate::commands::measure::GO);
        }
    }
    // Every process measured and exited; the first to fail stops the others.
    loop {
        let mut running = false;
        for index in 0..total {
            let s = &mut started[index];
            if s.exited.is_some() {
                continue;
            }
            match s.child.try_wait() {
                Ok(Some(status)) => {
                    s.exited = Some(status);
                    if !status.success() {
                        return fail(started, index, exit_error(status));
                    }
                }
                Ok(None) => running = true,
                Err(e) => {
                    return fail(
                        started,
                        index,
                        format!("waiting for the measuring process failed: {e}"),
                    );
                }
            }
        }
        if !running {
            break;
        }
        let first = started.iter().position(|s| s.exited.is_none()).unwrap_or(0);
        if crate::output::interrupt::requested() {
            return fail(started, first, "interrupted".into());
        }
        if start.elapsed() >= timeout {
            return fail(started, first, overdue("while measuring"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started
        .into_iter()
        .map(|s| {
            let pid = s.child.id();
            let _ = s.err.join();
            Finished {
                pid,
                stdout: s.out.join().unwrap_or_default(),
            }
        })
        .collect())
}

/// Waits for `child` until `deadline`; `None` if it is still running then.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a gated measuring process: a shell script.
    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    /// Says ready, waits for go, prints its pid and what it heard.
    const GOOD: &str = "echo ready; read go; echo \"$$ $go\"";

    #[test]
    fn processes_start_together_and_each_returns_its_output() {
        let finished = run_together(vec![sh(GOOD), sh(GOOD)], Duration::from_secs(60)).unwrap();
        assert_eq!(finished.len(), 2);
        for f in &finished {
            let out = String::from_utf8_lossy(&f.stdout);
            // Each heard the start signal, and the pid reported is its own.
            assert_eq!(out.trim(), format!("{} go", f.pid), "{out}");
        }
        assert_ne!(finished[0].pid, finished[1].pid);
    }

    #[test]
    fn a_process_that_crashes_is_reported_and_the_others_are_killed_not_waited_for() {
        // The second would run for a minute; the first crashes once started. The time-out is
        // longer than the crash needs and shorter than the sleeper's minute: waiting for the
        // sleeper would end in a time-out instead of the crash.
        let crash = "echo ready; read go; echo 'about to crash' >&2; kill -SEGV $$";
        let sleeper = "echo ready; read go; exec sleep 60";
        let failure =
            run_together(vec![sh(crash), sh(sleeper)], Duration::from_secs(30)).unwrap_err();
        assert_eq!(failure.index, 0);
        assert!(
            failure.error.contains("signal 11 (SIGSEGV)"),
            "{}",
            failure.error
        );
        assert!(
            failure.stderr.contains("about to crash"),
            "{}",
            failure.stderr
        );
    }

    #[test]
    fn a_process_that_never_gets_ready_is_killed_at_the_time_out() {
        let failure = run_together(
            vec![sh(GOOD), sh("exec sleep 60")],
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert_eq!(failure.index, 1);
        assert!(
            failure.error.contains("before it was ready to start"),
            "{}",
            failure.error
        );
    }

    #[test]
    fn a_process_that_fails_while_setting_up_is_reported_with_its_status_and_stderr() {
        let failure = run_together(
            vec![sh(GOOD), sh("echo 'no such workload' >&2; exit 3")],
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert_eq!(failure.index, 1);
        assert!(failure.error.contains("status 3"), "{}", failure.error);
        assert_eq!(failure.stderr, "no such workload");
    }
}
