//! The contract between `fossa-bootstrap` and `fossa-agent`.
//!
//! One place for every fact both sides must agree on: how resources are named
//! from the stack name ([`names`]), how they are tagged ([`tags`]), which SSM
//! parameters carry the hand-over ([`ssm`]), the configuration those
//! parameters and the agent's TOML file hold ([`config`]), and how every AWS
//! client is built ([`aws`]), plus the fault-injection points the
//! reliability suite uses on both ([`fault`]).

pub mod addresses;
pub mod aws;
pub mod config;
pub mod elf;
pub mod fargate;
pub mod fault;
pub mod history_limits;
pub mod limits;
pub mod names;
pub mod networks;
pub mod prices;
pub mod ssm;
pub mod tags;
pub mod timeouts;

pub use names::StackName;

/// Seconds since the Unix epoch (0 if the clock is before it), the one clock
/// every timestamp the agent and the UI show is read from.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The UTC date and time of `epoch` (seconds since the Unix epoch), the one
/// calendar every date the agent and the UI show is read from. Beyond the
/// years it holds (-9999 to 9999) it is clamped to the nearest end.
pub fn utc(epoch: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(if epoch < 0 {
        time::macros::datetime!(-9999-01-01 00:00:00 UTC)
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}

/// Milliseconds since the Unix epoch, for log lines (CloudWatch's unit).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod clock_tests {
    use super::utc;

    #[test]
    fn dates_and_their_bounds() {
        assert_eq!(utc(86_399).to_string(), "1970-01-01 23:59:59.0 +00:00:00");
        assert_eq!(utc(-1).year(), 1969);
        assert_eq!(utc(i64::MAX).year(), 9999);
        assert_eq!(utc(i64::MIN).year(), -9999);
    }
}
