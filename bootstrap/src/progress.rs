//! Progress output: one line per step with what it did and the elapsed time,
//! with a spinner on a terminal while a step waits.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// What a step did to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It was missing and is now created.
    Created,
    /// It existed as wanted.
    Found,
    /// It existed and was changed.
    Updated,
    /// It was deleted.
    Deleted,
    /// It was not there to delete.
    Absent,
    /// A wait finished.
    Ready,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Found => "exists",
            Outcome::Updated => "updated",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Ready => "ready",
        }
    }
}

/// Reports steps on stderr.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    bar: ProgressBar,
    steps: usize,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Starts the clock. The spinner shows only when stderr is a terminal.
    pub fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}")
                .expect("constant template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            start: Instant::now(),
            bar,
            steps: 0,
        }
    }

    /// Elapsed time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Shows what is being worked on now.
    pub fn working(&self, what: &str) {
        self.bar.set_message(what.to_owned());
    }

    /// Prints one finished step.
    pub fn done(&mut self, outcome: Outcome, what: &str, id: &str) {
        self.steps += 1;
        let line = format!(
            "[{:>6.1}s] {:<8} {what} {id}",
            self.start.elapsed().as_secs_f64(),
            outcome.word()
        );
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        fossa_contract::fault::exit_at(fossa_contract::fault::Point::Step(self.steps));
    }

    /// Prints a note that is not a step.
    pub fn note(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
