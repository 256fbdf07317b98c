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

use crate::output::format;

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
    format::signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_owned)
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

/// A spawned process, in a process group of its own.
#[derive(Debug)]
pub(crate) struct Running {
    /// The measured process.
    pid: libc::pid_t,
    /// Its process group (the launcher's pid).
    group: libc::pid_t,
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

/// The launcher: a shell that forks the program's process, writes its pid to a file and
/// exits. The forked process waits at a gate (a FIFO) until this process opens it, then
/// execs the program, with `LD_PRELOAD` for it alone. The gate keeps a quick program from
/// ending while the launcher lives (a shell may reap its children, and its rusage with it).
/// `$1` is the library (or empty), `$2` the pid file, `$3` the gate, the rest the argv.
///
/// A non-interactive shell gives an asynchronous list `/dev/null` for stdin, and `dash` does so
/// before the list's own redirections (so `<&0` there reads `/dev/null` too): the launcher's
/// stdin is kept on descriptor 3 and handed back to the program by `exec`.
const LAUNCHER: &str = r#"lib=$1; pidfile=$2; gate=$3; shift 3
exec 3<&0
{ read go < "$gate" || exit 126; if [ -n "$lib" ]; then export LD_PRELOAD="$lib"; fi; exec "$@" <&3 3<&-; } &
echo $! > "$pidfile""#;

/// How long the gate may take to find its reader.
const GATE_LIMIT: Duration = Duration::from_secs(10);

/// Opens the gate at `path`: waits for its reader (the forked process), then lets it go.
fn open_gate(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(mut gate) => {
                return gate
                    .write_all(b"go\n")
                    .map_err(|e| format!("opening the gate: {e}"));
            }
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && started.elapsed() < GATE_LIMIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("opening the gate {}: {e}", path.display())),
        }
    }
}

/// Makes a FIFO at `path`.
fn make_gate(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let _ = std::fs::remove_file(path);
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    // SAFETY: `name` is a NUL-terminated path that lives across the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "cannot make the gate {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants, so that it can `wait4` the
/// programs its launchers start.
pub(crate) fn become_subreaper() -> Result<(), String> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot become the subreaper of the programs: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Reaps descendants orphaned by finished runs (a program's own background children).
pub(crate) fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is valid for writes; WNOHANG never blocks.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

/// Spawns `spec` in a new process group through [`LAUNCHER`]: the measured process is the
/// launcher's child, reparented to this process (see [`become_subreaper`]) when the launcher
/// exits, and its wall time starts when it passes the gate. A process started by this one directly would report this process's own peak
/// resident set as its own (Linux keeps a process's peak across `exec`, and the child of a
/// `fork` starts with its parent's pages); a child of a small shell starts with the shell's.
pub(crate) fn spawn(spec: &Spec<'_>) -> Result<Running, String> {
    if spec.argv.is_empty() {
        return Err("an empty command".to_owned());
    }
    let pid_file = spec.stdout.with_extension("pid");
    let gate = spec.stdout.with_extension("gate");
    let _ = std::fs::remove_file(&pid_file);
    make_gate(&gate)?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(LAUNCHER)
        .arg("sh")
        .arg(
            spec.preload
                .map_or_else(Default::default, |p| p.as_os_str().to_owned()),
        )
        .arg(&pid_file)
        .arg(&gate)
        .args(spec.argv)
        .env_remove("LD_PRELOAD")
        .current_dir(spec.cwd)
        .stdin(match spec.stdin {
            Some(path) => Stdio::from(file(path, false)?),
            None => Stdio::null(),
        })
        .stdout(file(spec.stdout, true)?)
        .stderr(file(spec.stderr, true)?)
        .process_group(0);
    let mut launcher = command
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh to launch `{}`: {e}", spec.argv[0]))?;
    let group = launcher.id() as libc::pid_t;
    let status = launcher
        .wait()
        .map_err(|e| format!("waiting for the launcher: {e}"))?;
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
        .filter(|_| status.success());
    let _ = std::fs::remove_file(&pid_file);
    let kill_group = || {
        // SAFETY: a signal to the launcher's group; `kill` touches no memory of ours.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    let Some(pid) = pid else {
        kill_group();
        let _ = std::fs::remove_file(&gate);
        return Err(format!(
            "the launcher of `{}` failed ({status})",
            spec.argv[0]
        ));
    };
    // The launcher is gone and its child is this process's: its run starts now.
    let started = Instant::now();
    let opened = open_gate(&gate);
    let _ = std::fs::remove_file(&gate);
    if let Err(e) = opened {
        kill_group();
        // SAFETY: reaping our (killed) child; the status pointer is valid for writes.
        unsafe { libc::waitpid(pid, &mut 0, 0) };
        return Err(e);
    }
    Ok(Running {
        pid,
        group,
        started,
    })
}

impl Running {
    /// Waits for the process, killing its process group at `timeout` after its start.
    pub(crate) fn wait(self, timeout: Duration) -> Result<Finished, String> {
        let (done, watch) = mpsc::channel::<()>();
        let (pid, group) = (self.pid, self.group);
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
                unsafe { libc::kill(-group, libc::SIGKILL) };
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
        unsafe { libc::kill(-group, libc::SIGKILL) };
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
            libc::kill(-self.group, libc::SIGKILL);
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
        sh_with_stdin(script, dir, None, timeout)
    }

    fn sh_with_stdin(
        script: &str,
        dir: &Path,
        stdin: Option<&Path>,
        timeout: Duration,
    ) -> Finished {
        become_subreaper().unwrap();
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        run(
            &Spec {
                argv: &argv,
                cwd: dir,
                preload: None,
                stdin,
                stdout: &dir.join("out"),
                stderr: &dir.join("err"),
            },
            timeout,
        )
        .unwrap()
    }

    #[test]
    fn the_peak_resident_set_is_the_programs_not_this_processs() {
        // This process holds 64 MiB; a shell that does nothing must not report them.
        let held = vec![1u8; 64 << 20];
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(20);
        let small = sh("true", dir.path(), t);
        assert!(
            small.peak_rss_bytes < 16 << 20,
            "{} bytes for `true`",
            small.peak_rss_bytes
        );
        assert!(small.peak_rss_bytes > 0);
        std::hint::black_box(&held);
        // A program that touches 48 MiB reports them.
        if on_path("python3").is_some() {
            let big = sh(
                "python3 -c 'b = bytearray(48 << 20); print(len(b))'",
                dir.path(),
                t,
            );
            assert_eq!(big.failure(t), None);
            assert!(big.peak_rss_bytes >= 48 << 20, "{}", big.peak_rss_bytes);
        }
    }

    #[test]
    fn the_program_reads_the_stdin_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "one\ntwo\n").unwrap();
        let t = Duration::from_secs(20);
        let done = sh_with_stdin("wc -l", dir.path(), Some(&input), t);
        assert_eq!(done.failure(t), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out"))
                .unwrap()
                .trim(),
            "2"
        );
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
