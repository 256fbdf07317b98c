//! Ctrl-C (SIGINT) or SIGTERM during a run: the first asks the run to stop after killing the
//! measurement in hand, so that it can say what it kept and where; a second one ends the
//! process at once, as if no handler were installed.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if REQUESTED.swap(true, Ordering::Relaxed) {
        // SAFETY: `signal` and `raise` are async-signal-safe; with the default action back in
        // place the re-raised signal ends the process as it would have without the handler.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Installs the handler for SIGINT and SIGTERM (idempotent). A signal the process inherited
/// as ignored (SIGINT in a background job of a non-interactive shell) stays ignored.
pub(crate) fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic, or restores the default and re-raises
        // (both async-signal-safe); replacing a disposition has no other effect.
        unsafe {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            if libc::signal(signal, handler) == libc::SIG_IGN {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
    }
}

/// Whether an interrupt asked the run to stop.
pub(crate) fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
