//! One run of a program: spawned in a process group of its own, its wall time taken around
//! spawn and wait, its CPU times and peak resident set from the `rusage` that `wait4` returns,
//! and the whole group killed past a deadline.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a process ended, with its resource usage.
#[derive(Clone, Debug)]
pub(crate) struct Finished {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Whether it was killed at the deadline.
    pub(crate) timed_out: bool,
    /// From spawn to its exit.
    pub(crate) wall: Duration,
    /// User CPU time (seconds).
    pub(crate) user_seconds: f64,
    /// System CPU time (seconds).
    pub(crate) sys_seconds: f64,
    /// Peak resident set (bytes).
    pub(crate) peak_rss_bytes: u64,
}

impl Finished {
    /// Why the run failed (`None`: exit status 0), e.g. `exit status 3`, `killed by SIGSEGV`,
    /// `timed out after 120 s (killed)`.
    pub(crate) fn failure(&self, timeout: Duration) -> Option<String> {
        if self.timed_out {
            return Some(format!(
                "timed out after {} s (killed)",
                timeout.as_secs_f64()
            ));
        }
        if let Some(signal) = self.status.signal() {
            return Some(format!("killed by {}", signal_name(signal)));
        }
        match self.status.code() {
            Some(0) => None,
            Some(code) => Some(format!("exit status {code}")),
            None => Some(format!("ended with {}", self.status)),
        }
    }
}

/// The name of signal `signal` (`SIGSEGV`), or its number.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
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
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// What to run and where its streams go.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The argv.
    pub(crate) argv: &'a [String],
    /// Its working directory.
    pub(crate) cwd: &'a Path,
    /// The library to preload (`None`: nothing).
    pub(crate) preload: Option<&'a Path>,
    /// A file for stdin (`None`: `/dev/null`).
    pub(crate) stdin: Option<&'a Path>,
    /// Where stdout goes.
    pub(crate) stdout: &'a Path,
    /// Where stderr goes.
    pub(crate) stderr: &'a Path,
}

/// A spawned process, the leader of its own process group.
#[derive(Debug)]
pub(crate) struct Running {
    pid: libc::pid_t,
    started: Instant,
}

fn file(path: &Path, write: bool) -> Result<File, String> {
    let opened = if write {
        File::create(path)
    } else {
        File::open(path)
    };
    opened.map_err(|e| format!("{}: {e}", path.display()))
}

/// Spawns `spec` in a new process group, with `LD_PRELOAD` set to its library only (and
/// removed otherwise, so that no preload of sheafbench's own environment leaks in).
pub(crate) fn spawn(spec: &Spec<'_>) -> Result<Running, String> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| "an empty command".to_owned())?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(spec.cwd)
        .stdin(match spec.stdin {
            Some(path) => Stdio::from(file(path, false)?),
            None => Stdio::null(),
        })
        .stdout(file(spec.stdout, true)?)
        .stderr(file(spec.stderr, true)?)
        .process_group(0);
    match spec.preload {
        Some(library) => command.env("LD_PRELOAD", library),
        None => command.env_remove("LD_PRELOAD"),
    };
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    // The child is reaped by `wait4` below, never through `Child`.
    let pid = child.id() as libc::pid_t;
    drop(child);
    Ok(Running { pid, started })
}

impl Running {
    /// Waits for the process, killing its process group at `timeout` after its start.
    pub(crate) fn wait(self, timeout: Duration) -> Result<Finished, String> {
        let (done, watch) = mpsc::channel::<()>();
        let pid = self.pid;
        let deadline = timeout.saturating_sub(self.started.elapsed());
        let watchdog = std::thread::spawn(move || {
            // Checked in steps, so that Ctrl-C stops the run too (the child is in a process
            // group of its own and does not get the terminal's signal).
            let started = Instant::now();
            let step = Duration::from_millis(100);
            let expired = loop {
                let left = deadline.saturating_sub(started.elapsed());
                if left.is_zero() || crate::output::interrupt::requested() {
                    break true;
                }
                match watch.recv_timeout(left.min(step)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break false,
                }
            };
            if expired {
                // SAFETY: `kill` touches no memory of ours. The group is the child's, not yet
                // reaped: the waiter stops this thread as soon as `wait4` returns.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                true
            } else {
                false
            }
        });
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = loop {
            // SAFETY: `status` and `usage` are valid for writes for the call; `pid` is our
            // child.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break r;
        };
        let wall = self.started.elapsed();
        let _ = done.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        if reaped != pid {
            return Err(format!(
                "waiting for process {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The group's other processes (a shell's children) do not outlive the run.
        // SAFETY: a signal to a process group; ESRCH when none is left is ignored.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Finished {
            status: ExitStatus::from_raw(status),
            timed_out,
            wall,
            user_seconds: seconds(usage.ru_utime),
            sys_seconds: seconds(usage.ru_stime),
            // Linux gives kilobytes.
            peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        })
    }

    /// Kills the process group and reaps the leader.
    pub(crate) fn kill(self) {
        // SAFETY: signalling the group this process leads, then reaping it; `status` is valid
        // for writes.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// Runs `spec` to its end within `timeout`.
pub(crate) fn run(spec: &Spec<'_>, timeout: Duration) -> Result<Finished, String> {
    spawn(spec)?.wait(timeout)
}

/// A loopback TCP port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Waits until `port` accepts TCP connections on the loopback, at most `limit`.
pub(crate) fn wait_for_port(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The last `lines` lines of a file, for a failure report.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether an executable `name` is on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path, timeout: Duration) -> Finished {
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        run(
            &Spec {
                argv: &argv,
                cwd: dir,
                preload: None,
                stdin: None,
                stdout: &dir.join("out"),
                stderr: &dir.join("err"),
            },
            timeout,
        )
        .unwrap()
    }

    #[test]
    fn a_run_reports_status_signal_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(20);
        let ok = sh("echo hi; echo oops >&2", dir.path(), t);
        assert_eq!(ok.failure(t), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "hi\n"
        );
        assert_eq!(tail(&dir.path().join("err"), 5), "oops");
        assert!(ok.peak_rss_bytes > 0);
        assert_eq!(
            sh("exit 3", dir.path(), t).failure(t).as_deref(),
            Some("exit status 3")
        );
        assert_eq!(
            sh("kill -SEGV $$", dir.path(), t).failure(t).as_deref(),
            Some("killed by SIGSEGV")
        );
        // At the deadline the whole group is killed, the shell's background child too.
        let short = Duration::from_millis(300);
        let slow = sh("sleep 30 & sleep 30", dir.path(), short);
        assert!(slow.timed_out && slow.wall < Duration::from_secs(10));
        assert_eq!(
            slow.failure(short).as_deref(),
            Some("timed out after 0.3 s (killed)")
        );
    }
}
