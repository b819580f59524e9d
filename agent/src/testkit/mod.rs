//! Test fakes for the host, kept out of the shipped binary: only built with
//! the `testkit` feature, which the agent's own tests, examples and benches
//! switch on through a dev-dependency on this crate.

pub mod simnode;

/// A task history in a fresh directory under the system's temp dir.
pub fn scratch_history() -> std::sync::Arc<crate::history::History> {
    let dir = std::env::temp_dir().join(format!(
        "fossa-history-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    crate::history::History::open(&dir, fossa_contract::config::HistoryLimits::default())
        .expect("a history in the temp dir")
}
