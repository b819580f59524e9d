//! Whether the agent is alive, for the systemd watchdog: it is fed only
//! while every duty loop is being run and the fleet's poller finishes its
//! rounds. A loop whose run outlived its give-up time by
//! [`GRACE_SECS`] is not being polled at all (a thread wedged in a lock or
//! a blocking call), since the driver itself drops a run at that time; a
//! poller with no finished round in
//! [`POLLER_STALE_SECS`](fossa_contract::limits::POLLER_STALE_SECS) is
//! frozen (`/healthz` says `stale` at the same age). Then systemd restarts
//! the agent. Plain data in, a verdict out.

use super::driver::DutyStatus;

/// Past its give-up time, how long a run may still show as going on before
/// its loop counts as frozen.
pub const GRACE_SECS: i64 = 30;

/// The duty loop that polls the fleet.
pub const POLLER: &str = "fleet";

/// What is frozen, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frozen {
    /// A duty loop is not being run: its run started `secs` ago.
    Duty {
        /// The duty.
        name: String,
        /// Since its run started.
        secs: i64,
    },
    /// The fleet's poller has finished no round for `secs`.
    Poller {
        /// Since its last round ended (or the agent started).
        secs: i64,
    },
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frozen::Duty { name, secs } => write!(
                f,
                "the {name} duty's loop has not been run for {secs} s (past its give-up time)"
            ),
            Frozen::Poller { secs } => write!(
                f,
                "the fleet's poller has finished no round for {secs} s (limit {} s)",
                fossa_contract::limits::POLLER_STALE_SECS
            ),
        }
    }
}

/// What is frozen on `board` at `now`, for an agent started at `started_at`
/// (all seconds since the epoch); `None`: alive, feed the watchdog.
pub fn frozen(board: &[DutyStatus], started_at: i64, now: i64) -> Option<Frozen> {
    for s in board {
        if let Some(since) = s.running_since {
            let secs = now - since;
            if secs > s.give_up_secs as i64 + GRACE_SECS {
                return Some(Frozen::Duty {
                    name: s.component.name.clone(),
                    secs,
                });
            }
        }
    }
    let poller = board.iter().find(|s| s.component.name == POLLER)?;
    let secs = now - poller.last_result_at.unwrap_or(started_at);
    (secs > fossa_contract::limits::POLLER_STALE_SECS).then_some(Frozen::Poller { secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duty(name: &str, running_since: Option<i64>, last_result_at: Option<i64>) -> DutyStatus {
        DutyStatus {
            component: fossa_web::model::Component {
                name: name.into(),
                ..Default::default()
            },
            running_since,
            last_result_at,
            give_up_secs: 240,
            ..Default::default()
        }
    }

    #[test]
    fn alive_while_runs_end_in_time_and_the_poller_finishes_rounds() {
        let now = 10_000;
        let board = [
            duty("nat", Some(now - 200), Some(now - 400)),
            duty("fleet", None, Some(now - 3)),
        ];
        assert_eq!(frozen(&board, now - 1000, now), None);
        // Before the first round, the agent's start counts.
        let board = [duty("fleet", Some(now - 5), None)];
        assert_eq!(frozen(&board, now - 60, now), None);
    }

    #[test]
    fn a_run_past_its_give_up_time_is_a_frozen_loop() {
        let now = 10_000;
        let board = [
            duty("image", Some(now - 240 - GRACE_SECS - 1), None),
            duty("fleet", None, Some(now - 1)),
        ];
        assert_eq!(
            frozen(&board, 0, now),
            Some(Frozen::Duty {
                name: "image".into(),
                secs: 271
            })
        );
    }

    #[test]
    fn a_poller_without_a_round_is_frozen_even_if_its_loop_looks_busy() {
        let now = 10_000;
        let board = [duty("fleet", Some(now - 125), Some(now - 125))];
        let f = frozen(&board, 0, now).unwrap();
        assert_eq!(f, Frozen::Poller { secs: 125 });
        assert!(f.to_string().contains("no round for 125 s"), "{f}");
        // Local mode's board without a poller, or a fresh agent: alive.
        assert_eq!(frozen(&[duty("nat", None, None)], 0, now), None);
        assert_eq!(frozen(&[duty("fleet", None, None)], now - 100, now), None);
    }
}
