//! Privilege separation, as OpenSSH does it: the process that serves the
//! internet-facing UI holds no privilege, and asks the agent's core for
//! everything through a narrow, typed set of requests ([`wire::Call`]).
//!
//! - [`client::RemoteFleet`] is the [`crate::model::Fleet`] the UI process
//!   serves: each call is a request, and the snapshot and events are copies
//!   refreshed from the core.
//! - [`server::serve`] is the core's side: it answers those requests from
//!   the real fleet, bounding what it reads.
//!
//! How the UI process is started and confined is the agent's business
//! (`fossa_agent::ui`).

pub mod client;
pub mod server;
pub mod wire;
