//! Test fakes for the host, kept out of the shipped binary: only built with
//! the `testkit` feature, which the agent's own tests, examples and benches
//! switch on through a dev-dependency on this crate.

pub mod simnode;
