//! What local mode's process and container workers share: a slot per worker
//! (index, loopback port, start time, restarts), how a port is picked, and the
//! scale limit.

use fossa_contract::limits::LOCAL_MAX_WORKERS;
use fossa_web::model::Mode;

use crate::fleet::{BackendError, WorkerRef};
use crate::host::procs::free_port;
use crate::Error;

/// One worker's place.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// `local-<index>`.
    pub index: u32,
    /// Its Fossa port on 127.0.0.1.
    pub port: u16,
    /// When it last started, seconds since the epoch.
    pub started_at: i64,
    /// How often it was restarted.
    pub restarts: u32,
}

impl AsRef<Slot> for Slot {
    fn as_ref(&self) -> &Slot {
        self
    }
}

impl AsMut<Slot> for Slot {
    fn as_mut(&mut self) -> &mut Slot {
        self
    }
}

impl Slot {
    /// A new slot with the first free index and a fresh port.
    pub fn next<'a>(
        reserved: &[u16],
        taken: impl Iterator<Item = &'a Slot> + Clone,
    ) -> Result<Slot, Error> {
        let index = (1..)
            .find(|i| taken.clone().all(|s| s.index != *i))
            .expect("a free index");
        Ok(Slot {
            index,
            port: fresh_port(reserved, taken)?,
            started_at: fossa_contract::unix_now(),
            restarts: 0,
        })
    }

    /// The worker as the fleet model lists it.
    pub fn worker_ref(&self) -> WorkerRef {
        WorkerRef {
            id: format!("local-{}", self.index),
            address: format!("127.0.0.1:{}", self.port),
            status: "RUNNING".into(),
            started_at: Some(self.started_at),
            capacity_provider: "local".into(),
            protected: false,
            stopped_reason: None,
        }
    }
}

/// A free loopback port that is not reserved and no slot has.
fn fresh_port<'a>(
    reserved: &[u16],
    taken: impl Iterator<Item = &'a Slot> + Clone,
) -> Result<u16, Error> {
    for _ in 0..64 {
        let port = free_port().map_err(|e| Error::io("no free port", e))?;
        if !reserved.contains(&port) && taken.clone().all(|s| s.port != port) {
            return Ok(port);
        }
    }
    Err(Error::Setup(
        "no free loopback port outside the reserved ones".into(),
    ))
}

/// Before a restart: a port someone else took while the worker was down (its
/// gunicorn would fail with "Address already in use" for good) is given up
/// for a fresh one. Returns what to add to the restart's event.
pub(super) fn move_if_taken<W: AsRef<Slot> + AsMut<Slot>>(
    reserved: &[u16],
    workers: &mut [W],
    i: usize,
) -> String {
    if std::net::TcpListener::bind(("127.0.0.1", workers[i].as_ref().port)).is_ok() {
        return String::new();
    }
    match fresh_port(reserved, workers.iter().map(AsRef::as_ref)) {
        Ok(port) => {
            let old = std::mem::replace(&mut workers[i].as_mut().port, port);
            format!(" on 127.0.0.1:{port}: its port {old} is taken")
        }
        Err(e) => format!(" ({e})"),
    }
}

/// Local mode's scale-in protection, as ECS's for tasks: the workers
/// running work (by index) are stopped last, and only once they are idle.
#[derive(Debug, Default)]
pub(super) struct Protection {
    busy: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    /// The workers last reported as kept above the wanted count.
    kept: std::sync::Mutex<Vec<u32>>,
}

fn index_of(id: &str) -> Option<u32> {
    id.strip_prefix("local-")?.parse().ok()
}

impl Protection {
    /// Marks `busy` as running work and `idle` as not (others keep their mark).
    pub fn set(&self, busy: &[String], idle: &[String]) {
        let mut b = self.busy.lock().expect("lock");
        b.extend(busy.iter().filter_map(|i| index_of(i)));
        for i in idle.iter().filter_map(|i| index_of(i)) {
            b.remove(&i);
        }
    }

    /// Whether worker `index` is kept from scale-in.
    pub fn has(&self, index: u32) -> bool {
        self.busy.lock().expect("lock").contains(&index)
    }

    /// Which of the workers `indexes` to stop to come down to `want`: idle
    /// ones only, the highest index first. Protected ones stay until idle.
    pub fn to_stop(&self, indexes: &[u32], want: usize) -> Vec<u32> {
        let busy = self.busy.lock().expect("lock");
        let mut idle: Vec<u32> = indexes
            .iter()
            .copied()
            .filter(|i| !busy.contains(i))
            .collect();
        idle.sort_unstable_by(|a, b| b.cmp(a));
        idle.truncate(indexes.len().saturating_sub(want));
        idle
    }

    /// An event when the workers kept above `want` changed: which, and why.
    pub fn kept_note(&self, indexes: &[u32], want: usize) -> Option<String> {
        let kept: Vec<u32> = if indexes.len() > want {
            indexes.to_vec()
        } else {
            Vec::new()
        };
        let mut last = self.kept.lock().expect("lock");
        if *last == kept {
            return None;
        }
        *last = kept.clone();
        if kept.is_empty() {
            return None;
        }
        let names: Vec<String> = kept.iter().map(|i| format!("local-{i}")).collect();
        Some(format!(
            "{} wanted, {} running: {} run work and stop once idle",
            want,
            kept.len(),
            names.join(", ")
        ))
    }
}

/// Refuses more workers than local mode runs.
pub(super) fn check_scale(workers: u32) -> Result<(), BackendError> {
    if workers > LOCAL_MAX_WORKERS {
        return Err(BackendError::TooMany {
            mode: Mode::Local,
            max: LOCAL_MAX_WORKERS,
        });
    }
    Ok(())
}

/// Maps local mode's errors into the backend's, saying what was being done.
pub(super) fn local(what: &'static str) -> impl Fn(Error) -> BackendError {
    move |e| BackendError::Local {
        what,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_in_stops_idle_workers_first_and_never_busy_ones() {
        let p = Protection::default();
        p.set(&["local-4".into(), "local-2".into()], &["local-1".into()]);
        // 4 → 2: the two idle ones go, the highest first.
        assert_eq!(p.to_stop(&[1, 2, 3, 4], 2), vec![3, 1]);
        // 4 → 0: still only the idle ones; the busy ones stay until idle.
        assert_eq!(p.to_stop(&[1, 2, 3, 4], 0), vec![3, 1]);
        assert_eq!(
            p.kept_note(&[2, 4], 0).as_deref(),
            Some("0 wanted, 2 running: local-2, local-4 run work and stop once idle")
        );
        assert_eq!(p.kept_note(&[2, 4], 0), None, "said once");
        // local-4 finished: now it may go.
        p.set(&[], &["local-4".into()]);
        assert_eq!(p.to_stop(&[2, 4], 0), vec![4]);
        assert!(p.has(2) && !p.has(4));
        // Ids that are not local workers are ignored.
        p.set(&["sim-1".into(), "local-x".into()], &[]);
        assert_eq!(p.to_stop(&[2, 4], 0), vec![4]);
    }
}
