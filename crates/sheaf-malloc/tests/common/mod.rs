//! What the preload tests share: the library cargo built for them, and running a child
//! under a deadline.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The library cargo built for this test, beside it in `target/<profile>/deps` (the copy in
/// `target/<profile>` is refreshed only by `cargo build`).
pub(crate) fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let deps = exe.parent().expect("target/<profile>/deps/<test>");
    let lib = deps.join("libsheaf_malloc.so");
    assert!(
        lib.exists(),
        "{} is missing: cargo builds it with this package's tests",
        lib.display()
    );
    lib
}

/// Runs `command` to completion within `deadline`, killing it past that (the test fails).
pub(crate) fn run(command: &mut Command, deadline: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let started = Instant::now();
    // Read the pipes on other threads so that a chatty child never blocks on them.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).map(|_| bytes)
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut bytes).map(|_| bytes)
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {deadline:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("reader").expect("stdout"),
        stderr: err.join().expect("reader").expect("stderr"),
    }
}

/// Fails the test, with the child's output, unless it exited with status 0.
pub(crate) fn check_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
