//! The contract between `fossa-bootstrap` and `fossa-agent`.
//!
//! One place for every fact both sides must agree on: how resources are named
//! from the stack name ([`names`]), how they are tagged ([`tags`]), which SSM
//! parameters carry the hand-over ([`ssm`]), the configuration those
//! parameters and the agent's TOML file hold ([`config`]), and how every AWS
//! client is built ([`aws`]), plus the fault-injection points the
//! reliability suite uses on both ([`fault`]).

pub mod aws;
pub mod config;
pub mod elf;
pub mod fault;
pub mod limits;
pub mod names;
pub mod prices;
pub mod ssm;
pub mod tags;

pub use names::StackName;

/// Seconds since the Unix epoch (0 if the clock is before it), the one clock
/// every timestamp the agent and the UI show is read from.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, for log lines (CloudWatch's unit).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
