//! The agent's recent events: what each duty did or why it failed, shown on
//! the UI's Events page and logged as they happen.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use fossa_web::model::Event;

/// The recent events, newest last, at most [`Events::CAPACITY`].
#[derive(Debug, Clone, Default)]
pub struct Events(Arc<Mutex<VecDeque<Event>>>);

impl Events {
    /// How many events are kept.
    pub const CAPACITY: usize = 500;

    /// Records an event and logs it.
    pub fn push(&self, source: &str, error: bool, message: impl Into<String>) {
        let message = message.into();
        if error {
            tracing::error!(source, "{message}");
        } else {
            tracing::info!(source, "{message}");
        }
        let at = fossa_contract::unix_now();
        let mut q = self.0.lock().expect("events lock");
        if q.len() == Self::CAPACITY {
            q.pop_front();
        }
        q.push_back(Event {
            at,
            source: source.to_owned(),
            error,
            message,
        });
    }

    /// Records a failure: `what` went wrong, then the whole `#[source]`
    /// chain of `e`, rendered here and nowhere else in the fleet.
    pub fn failed(&self, source: &str, what: impl std::fmt::Display, e: &dyn std::error::Error) {
        self.push(
            source,
            true,
            format!("{what}: {}", fossa_contract::aws::chain(e)),
        );
    }

    /// A copy of the events.
    pub fn list(&self) -> Vec<Event> {
        self.0
            .lock()
            .expect("events lock")
            .iter()
            .cloned()
            .collect()
    }
}
