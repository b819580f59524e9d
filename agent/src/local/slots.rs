//! What local mode's process and container workers share: a slot per worker
//! (index, loopback port, start time, restarts), how a port is picked, and the
//! scale limit.

use fossa_contract::limits::LOCAL_MAX_WORKERS;

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
        }
    }
}

/// A free loopback port that is not reserved and no slot has.
fn fresh_port<'a>(
    reserved: &[u16],
    taken: impl Iterator<Item = &'a Slot> + Clone,
) -> Result<u16, Error> {
    for _ in 0..64 {
        let port = free_port().map_err(|e| Error::Other(format!("no free port: {e}")))?;
        if !reserved.contains(&port) && taken.clone().all(|s| s.port != port) {
            return Ok(port);
        }
    }
    Err(Error::Other(
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

/// Refuses more workers than local mode runs.
pub(super) fn check_scale(workers: u32) -> Result<(), BackendError> {
    if workers > LOCAL_MAX_WORKERS {
        return Err(BackendError::TooMany {
            mode: "local",
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
