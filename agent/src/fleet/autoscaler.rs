//! The autoscaler's state: whether autoscaling is on and with which bounds
//! (configured, or set in the UI and kept in the history database), and
//! what [`autoscale::decide`] remembers between looks. The fleet model
//! gathers the signals and applies the decisions.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fossa_contract::config::Autoscale;
use fossa_web::model::{ControlError, FleetSnapshot, Mode};

use super::autoscale::{self, Decision, Policy, Signals, State};
use super::poll::{busy_and_idle, working_slots};
use crate::events::Events;
use crate::history::History;

/// The history setting that keeps autoscaling set in the UI.
const AUTOSCALE_SETTING: &str = "autoscale";

/// Autoscaling set in the UI, over what was configured then.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AutoscaleOverride {
    /// The configured autoscaling it replaced.
    configured: Option<Autoscale>,
    /// What the UI set (`None`: off).
    set: Option<Autoscale>,
}

/// Autoscaling, on or off, and what it remembers.
pub struct Autoscaler {
    mode: Mode,
    /// The most workers the backend runs: the bound on what the UI sets.
    most: u32,
    history: Arc<History>,
    events: Events,
    /// When on: its policy and what it remembers.
    on: Mutex<Option<(Policy, State)>>,
    /// Autoscaling as configured (the stack config or local mode's flags).
    configured: Mutex<Option<Autoscale>>,
    /// Task slots of one worker, as the last answering worker said.
    slots_per_worker: AtomicU32,
}

impl Autoscaler {
    /// Off, for a fleet in `mode`, keeping what the UI sets in `history`.
    pub fn new(mode: Mode, most: u32, history: Arc<History>, events: Events) -> Self {
        Autoscaler {
            mode,
            most,
            history,
            events,
            on: Mutex::new(None),
            configured: Mutex::new(None),
            slots_per_worker: AtomicU32::new(0),
        }
    }

    /// Its bounds now, when on.
    pub fn bounds(&self) -> Option<Autoscale> {
        self.on
            .lock()
            .expect("lock")
            .as_ref()
            .map(|(p, _)| Autoscale {
                min_workers: p.min,
                max_workers: p.max,
                idle_window_secs: p.idle_window.as_secs(),
            })
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.on.lock().expect("lock").is_some()
    }

    /// The policy of `a` in this fleet's mode (its scale-up cooldown).
    fn policy_of(&self, a: &Autoscale) -> Policy {
        let secs = match self.mode {
            Mode::Local => fossa_contract::limits::LOCAL_AUTOSCALE_UP_COOLDOWN_SECS,
            Mode::Fargate => fossa_contract::limits::AUTOSCALE_UP_COOLDOWN_SECS,
        };
        Policy::of(a, Duration::from_secs(secs))
    }

    /// Follows the configured autoscaling: on, off or new bounds. Bounds
    /// set in the UI since (kept in the history database) win until the
    /// configured ones change. Returns what changed, said as an event.
    pub fn follow(&self, configured: Option<Autoscale>, desired: u32) -> Option<String> {
        let kept = self
            .history
            .setting(AUTOSCALE_SETTING)
            .and_then(|v| serde_json::from_str::<AutoscaleOverride>(&v).ok());
        let (wanted, why) = match kept {
            Some(o) if o.configured == configured => (o.set, "as set in the UI"),
            Some(_) => {
                // The configuration changed since: it wins, and the UI's goes.
                let _ = self.history.set_setting(AUTOSCALE_SETTING, None);
                (configured, "as configured")
            }
            None => (configured, "as configured"),
        };
        *self.configured.lock().expect("lock") = configured;
        self.apply(wanted, why, desired)
    }

    /// Autoscaling from the UI or API: checked against the mode's limit,
    /// applied, and kept over the configured bounds until those change.
    pub fn set(&self, wanted: Option<Autoscale>, desired: u32) -> Result<String, ControlError> {
        if let Some(a) = &wanted {
            a.check(self.most)
                .map_err(|e| ControlError::Invalid(e.to_string()))?;
        }
        let configured = *self.configured.lock().expect("lock");
        let kept = AutoscaleOverride {
            configured,
            set: wanted,
        };
        let json = serde_json::to_string(&kept).expect("serialises");
        self.history
            .set_setting(AUTOSCALE_SETTING, Some(&json))
            .map_err(|e| ControlError::Failed(Box::new(e)))?;
        Ok(self
            .apply(wanted, "as set in the UI", desired)
            .unwrap_or_else(|| "autoscaling unchanged".into()))
    }

    /// Turns autoscaling on with `wanted` or off, keeping what it remembers
    /// while the bounds stay the same. Says so once, with `why`.
    fn apply(&self, wanted: Option<Autoscale>, why: &str, desired: u32) -> Option<String> {
        let wanted = wanted.map(|a| self.policy_of(&a));
        let mut a = self.on.lock().expect("lock");
        if a.as_ref().map(|x| x.0) == wanted {
            return None;
        }
        let msg = match &wanted {
            Some(p) => format!(
                "autoscaling between {} and {} workers (idle window {} s), {why}",
                p.min,
                p.max,
                p.idle_window.as_secs()
            ),
            None => format!("autoscaling off, {why}: {desired} workers run until changed"),
        };
        *a = wanted.map(|p| (p, State::default()));
        drop(a);
        self.events.push("autoscale", false, msg.clone());
        Some(msg)
    }

    /// The signals in `snap` (and the broker's waiting subtasks); the slots
    /// of `stuck` parents are not busy.
    pub fn signals(
        &self,
        snap: &FleetSnapshot,
        broker_waiting: Option<u32>,
        stuck: &HashSet<String>,
    ) -> Signals {
        let mut s = Signals {
            gateway_queued: snap.queue.len() as u32,
            desired: snap.desired_workers,
            broker_waiting,
            ..Default::default()
        };
        for w in snap.workers.iter().filter(|w| w.takes_work()) {
            if let Some(n) = &w.node {
                s.answering += 1;
                s.free_slots += n.available_processing_capacity;
                s.busy_slots += working_slots(n, stuck);
                self.slots_per_worker
                    .store(n.max_concurrent_tasks, Ordering::Relaxed);
            }
        }
        s.slots_per_worker = self.slots_per_worker.load(Ordering::Relaxed);
        s.busy_workers = busy_and_idle(&snap.workers, stuck).0.len() as u32;
        s
    }

    /// A decision on `signals`, when on and one is due.
    pub fn decide(&self, signals: &Signals) -> Option<Decision> {
        let mut a = self.on.lock().expect("lock");
        let (p, st) = a.as_mut()?;
        autoscale::decide(p, signals, st, Instant::now())
    }
}
