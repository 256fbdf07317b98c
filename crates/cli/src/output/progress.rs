//! Progress on stderr while measurements run: a bar over the planned time, the measurement
//! in hand (k of N), the elapsed time and an ETA. Hidden when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over `total` measurements whose planned lengths add up to a known time.
///
/// The bar counts planned milliseconds, not measurements, so that a long measurement moves it
/// further than a short one; the ETA is the planned time left, scaled by how fast planned
/// time has gone so far (child start-up and set-up add to every measurement), and the planned
/// time itself before the first measurement ends.
pub(crate) struct Progress {
    bar: ProgressBar,
    started: Instant,
    total: usize,
    done: usize,
    planned: Duration,
    planned_done: Duration,
}

impl Progress {
    /// Progress over `total` measurements planned to take `planned` in all.
    pub(crate) fn new(total: usize, planned: Duration) -> Self {
        let bar = ProgressBar::new(millis(planned).max(1));
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {msg} · {elapsed} elapsed")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self {
            bar,
            started: Instant::now(),
            total,
            done: 0,
            planned,
            planned_done: Duration::ZERO,
        }
    }

    /// Names the measurement starting now.
    pub(crate) fn start(&self, what: &str) {
        let eta = eta(
            self.started.elapsed(),
            self.planned_done,
            self.planned.saturating_sub(self.planned_done),
        );
        self.bar.set_message(format!(
            "{}/{} {what} · ETA {}s",
            self.done + 1,
            self.total,
            eta.as_secs()
        ));
    }

    /// Counts a measurement of planned length `planned` as done.
    pub(crate) fn finish_one(&mut self, planned: Duration) {
        self.done += 1;
        self.planned_done += planned;
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

/// The time left: `left` planned, scaled by the elapsed time over the planned time `done` so
/// far (`left` itself before anything is done).
fn eta(elapsed: Duration, done: Duration, left: Duration) -> Duration {
    if done.is_zero() {
        left
    } else {
        left.mul_f64(elapsed.as_secs_f64() / done.as_secs_f64())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_planned_time_left_at_the_pace_so_far() {
        let s = Duration::from_secs;
        assert_eq!(eta(s(0), s(0), s(30)), s(30));
        assert_eq!(eta(s(12), s(10), s(20)), s(24));
        assert_eq!(eta(s(12), s(10), s(0)), s(0));
    }
}
