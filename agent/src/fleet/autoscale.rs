//! Autoscaling: the worker count the fleet should have, from what waits
//! (subtasks in the broker, submissions in the gateway's queue) and what is
//! busy (task slots in use), between a minimum (which may be 0) and a
//! maximum. Plain data in, a decision with its reason out; the fleet model
//! applies it. Up as soon as work waits beyond the slots that are free or
//! starting (after a short cooldown); down to the minimum only after the
//! fleet has been idle for a whole window, so no busy worker is ever the
//! one removed and the count never flaps.

use std::time::{Duration, Instant};

use fossa_contract::config::{Autoscale, AutoscaleError};

/// The bounds and pace of autoscaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Fewest workers (0: none while idle).
    pub min: u32,
    /// Most workers.
    pub max: u32,
    /// How long the fleet must be idle (nothing running, nothing waiting)
    /// before it shrinks to `min`.
    pub idle_window: Duration,
    /// The shortest time between two scale-ups.
    pub up_cooldown: Duration,
}

impl Policy {
    /// The policy of `a`, scaling up at most every `up_cooldown`.
    pub fn of(a: &Autoscale, up_cooldown: Duration) -> Policy {
        Policy {
            min: a.min_workers,
            max: a.max_workers,
            idle_window: Duration::from_secs(a.idle_window_secs),
            up_cooldown,
        }
    }

    /// Checks the bounds against the mode's `limit`.
    pub fn check(&self, limit: u32) -> Result<(), AutoscaleError> {
        Autoscale {
            min_workers: self.min,
            max_workers: self.max,
            idle_window_secs: self.idle_window.as_secs(),
        }
        .check(limit)
    }
}

/// What the fleet looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    /// Subtasks waiting in the broker's task queue (`None`: not known).
    pub broker_waiting: Option<u32>,
    /// Submissions waiting in the gateway's queue.
    pub gateway_queued: u32,
    /// Task slots in use on the answering workers.
    pub busy_slots: u32,
    /// Answering workers running work (kept by scale-in).
    pub busy_workers: u32,
    /// Task slots free on the answering workers.
    pub free_slots: u32,
    /// Slots one worker has (as the last answering worker said).
    pub slots_per_worker: u32,
    /// Workers wanted now.
    pub desired: u32,
    /// Workers answering now.
    pub answering: u32,
}

/// What the autoscaler remembers between looks.
#[derive(Debug, Clone, Default)]
pub struct State {
    last_up: Option<Instant>,
    /// Since when more workers ran than the work needs, nothing waiting.
    idle_since: Option<Instant>,
}

/// A change of the worker count, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The new count.
    pub target: u32,
    /// One line for the event: "3 subtasks waiting, 0 free slots: 2 → 4".
    pub reason: String,
}

/// The decision for `s` under `p`, if the count should change.
pub fn decide(p: &Policy, s: &Signals, st: &mut State, now: Instant) -> Option<Decision> {
    let waiting = s.broker_waiting.unwrap_or(0) + s.gateway_queued;
    let what = || {
        let mut parts = Vec::new();
        if let Some(b) = s.broker_waiting.filter(|b| *b > 0) {
            parts.push(format!("{b} subtasks waiting in the broker"));
        }
        if s.gateway_queued > 0 {
            parts.push(format!("{} tasks queued in the gateway", s.gateway_queued));
        }
        if parts.is_empty() {
            parts.push("nothing waiting".into());
        }
        parts.join(", ")
    };
    if s.desired < p.min || s.desired > p.max {
        let target = s.desired.clamp(p.min, p.max);
        return Some(Decision {
            target,
            reason: format!(
                "the count is outside {}..={}: {} → {target}",
                p.min, p.max, s.desired
            ),
        });
    }
    // The fewest workers that keep every busy one: scale-in goes no lower.
    let floor = p.min.max(s.busy_workers);
    // Work waiting, or no worker to spare: not idle.
    if waiting > 0 || s.desired <= floor {
        st.idle_since = None;
    } else if st.idle_since.is_none() {
        st.idle_since = Some(now);
    }
    let spw = s.slots_per_worker.max(1);
    // Slots of workers asked for but not answering yet are coming.
    let coming = s.desired.saturating_sub(s.answering) * spw;
    if waiting > s.free_slots + coming {
        if s.desired >= p.max {
            return None;
        }
        let needed = (s.busy_slots + waiting).div_ceil(spw);
        let target = needed.max(s.desired + 1).min(p.max);
        let cooled = st
            .last_up
            .is_none_or(|t| now.duration_since(t) >= p.up_cooldown);
        if target > s.desired && cooled {
            st.last_up = Some(now);
            return Some(Decision {
                target,
                reason: format!(
                    "{}, {} free slots: {} → {target}",
                    what(),
                    s.free_slots,
                    s.desired
                ),
            });
        }
        return None;
    }
    if s.desired > floor {
        if let Some(since) = st.idle_since {
            if now.duration_since(since) >= p.idle_window {
                st.idle_since = Some(now);
                let running = match s.busy_workers {
                    0 => "nothing running".to_owned(),
                    n => format!("{n} of {} workers busy", s.desired),
                };
                return Some(Decision {
                    target: floor,
                    reason: format!(
                        "idle for {} s ({running}, nothing waiting): {} → {floor}",
                        p.idle_window.as_secs(),
                        s.desired,
                    ),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: u32, max: u32) -> Policy {
        Policy {
            min,
            max,
            idle_window: Duration::from_secs(60),
            up_cooldown: Duration::from_secs(10),
        }
    }

    fn sig(
        desired: u32,
        answering: u32,
        busy: u32,
        free: u32,
        broker: u32,
        queued: u32,
    ) -> Signals {
        Signals {
            broker_waiting: Some(broker),
            gateway_queued: queued,
            busy_slots: busy,
            busy_workers: busy.div_ceil(2),
            free_slots: free,
            slots_per_worker: 2,
            desired,
            answering,
        }
    }

    #[test]
    fn waiting_work_grows_the_fleet_at_once_within_the_maximum() {
        let p = policy(0, 4);
        let mut st = State::default();
        let t = Instant::now();
        let d = decide(&p, &sig(2, 2, 4, 0, 3, 0), &mut st, t).unwrap();
        assert_eq!(d.target, 4);
        assert_eq!(
            d.reason,
            "3 subtasks waiting in the broker, 0 free slots: 2 → 4"
        );
        // 40 waiting never asks for more than the maximum.
        let mut st = State::default();
        let d = decide(&p, &sig(1, 1, 2, 0, 40, 0), &mut st, t).unwrap();
        assert_eq!(d.target, 4);
        // At the maximum, more waiting work changes nothing.
        let mut st = State::default();
        assert_eq!(decide(&p, &sig(4, 4, 8, 0, 40, 0), &mut st, t), None);
    }

    #[test]
    fn from_zero_a_queued_submission_starts_workers() {
        let p = policy(0, 4);
        let mut st = State::default();
        let d = decide(&p, &sig(0, 0, 0, 0, 0, 1), &mut st, Instant::now()).unwrap();
        assert_eq!(d.target, 1);
        assert!(
            d.reason.contains("1 tasks queued in the gateway"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn starting_workers_count_as_coming_so_it_does_not_overshoot_or_flap() {
        let p = policy(0, 8);
        let mut st = State::default();
        let t = Instant::now();
        // 4 asked for, none answering yet: 8 slots are coming for 6 waiting.
        assert_eq!(decide(&p, &sig(4, 0, 0, 0, 6, 0), &mut st, t), None);
        // A second burst within the cooldown waits for it.
        let mut st = State::default();
        assert!(decide(&p, &sig(2, 2, 4, 0, 10, 0), &mut st, t).is_some());
        assert_eq!(
            decide(
                &p,
                &sig(7, 7, 14, 0, 10, 0),
                &mut st,
                t + Duration::from_secs(5)
            ),
            None
        );
        assert!(decide(
            &p,
            &sig(7, 7, 14, 0, 10, 0),
            &mut st,
            t + Duration::from_secs(11)
        )
        .is_some());
    }

    #[test]
    fn an_idle_fleet_shrinks_to_the_minimum_only_after_the_window() {
        let p = policy(1, 4);
        let mut st = State::default();
        let t = Instant::now();
        let at = |s| t + Duration::from_secs(s);
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, t), None);
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, at(59)), None);
        // Work on every worker in between starts the window again.
        assert_eq!(decide(&p, &sig(4, 4, 8, 0, 0, 0), &mut st, at(30)), None);
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, at(31)), None);
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, at(80)), None);
        let d = decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, at(92)).unwrap();
        assert_eq!(d.target, 1);
        assert_eq!(
            d.reason,
            "idle for 60 s (nothing running, nothing waiting): 4 → 1"
        );
        // Waiting work also starts the window again.
        let mut st = State::default();
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, t), None);
        assert!(decide(&p, &sig(4, 4, 8, 0, 3, 0), &mut st, at(30)).is_none());
        assert_eq!(decide(&p, &sig(4, 4, 0, 8, 0, 0), &mut st, at(70)), None);
    }

    #[test]
    fn scale_in_keeps_every_busy_worker() {
        let p = policy(0, 4);
        let t = Instant::now();
        let at = |s| t + Duration::from_secs(s);
        // One long subtask on one worker, three idle: after the window, 4 → 1.
        let mut st = State::default();
        assert_eq!(decide(&p, &sig(4, 4, 1, 7, 0, 0), &mut st, t), None);
        let d = decide(&p, &sig(4, 4, 1, 7, 0, 0), &mut st, at(60)).unwrap();
        assert_eq!(d.target, 1);
        assert_eq!(
            d.reason,
            "idle for 60 s (1 of 4 workers busy, nothing waiting): 4 → 1"
        );
        // Every worker busy: nothing to take away, however long it runs.
        let mut st = State::default();
        assert_eq!(decide(&p, &sig(2, 2, 3, 1, 0, 0), &mut st, t), None);
        assert_eq!(decide(&p, &sig(2, 2, 3, 1, 0, 0), &mut st, at(600)), None);
        // The minimum holds even when fewer are busy.
        let p = policy(2, 4);
        let mut st = State::default();
        assert_eq!(decide(&p, &sig(4, 4, 1, 7, 0, 0), &mut st, t), None);
        assert_eq!(
            decide(&p, &sig(4, 4, 1, 7, 0, 0), &mut st, at(60)).map(|d| d.target),
            Some(2)
        );
    }

    #[test]
    fn bad_bounds_are_refused_with_what_to_do() {
        assert_eq!(
            policy(3, 2).check(64),
            Err(AutoscaleError::MinAboveMax { min: 3, max: 2 })
        );
        assert!(policy(0, 100)
            .check(64)
            .unwrap_err()
            .to_string()
            .contains("64 or fewer"));
        assert_eq!(policy(0, 0).check(64), Err(AutoscaleError::ZeroMax));
        assert!(policy(0, 4).check(64).is_ok());
        // A count outside the bounds is brought inside.
        let mut st = State::default();
        let d = decide(
            &policy(2, 4),
            &sig(0, 0, 0, 0, 0, 0),
            &mut st,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(d.target, 2);
    }
}
