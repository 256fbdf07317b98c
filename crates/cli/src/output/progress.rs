//! Progress on stderr while measurements run: a bar over the planned time, the measurement
//! in hand (k of N), the elapsed time and an ETA. Hidden when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over `total` measurements whose planned lengths add up to a known time.
///
/// The bar counts planned milliseconds, not measurements, so that a long measurement moves it
/// further than a short one; the ETA is the planned time left, scaled by how fast planned
/// time has been going so far (child start-up and set-up add to every measurement).
pub(crate) struct Progress {
    bar: ProgressBar,
    total: usize,
    done: usize,
}

impl Progress {
    /// Progress over `total` measurements planned to take `planned` in all.
    pub(crate) fn new(total: usize, planned: Duration) -> Self {
        let bar = ProgressBar::new(millis(planned).max(1));
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {msg} · {elapsed} elapsed, ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self {
            bar,
            total,
            done: 0,
        }
    }

    /// Names the measurement starting now.
    pub(crate) fn start(&self, what: &str) {
        self.bar
            .set_message(format!("{}/{} {what}", self.done + 1, self.total));
    }

    /// Counts a measurement of planned length `planned` as done.
    pub(crate) fn finish_one(&mut self, planned: Duration) {
        self.done += 1;
        self.bar.inc(millis(planned));
    }

    /// Runs `f` with the bar out of the way (for lines printed meanwhile).
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
