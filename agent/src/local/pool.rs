//! Local mode's one worker pool: a slot per worker (index, loopback port,
//! start time, restarts), scaled by starting and stopping workers, idle ones
//! first; supervised (a worker that ends is started again, on a fresh port if
//! its own was taken meanwhile); every worker's output in the log ring and
//! the rotated file; the broker's queue as the autoscaler's signal. How a
//! worker is started is the [`Launcher`]'s: a process group
//! ([`super::processes`]) or a container of the worker image
//! ([`super::containers`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use fossa_contract::unix_now as now;
use fossa_web::model::{LogLine, LogQuery, Mode};
use tokio::sync::Mutex;

use super::slots::{check_scale, local, move_if_taken, Protection, Slot};
use crate::events::Events;
use crate::fleet::logs::LocalLogs;
use crate::fleet::{BackendError, WorkerBackend, WorkerRef};
use crate::Error;

/// What a launcher made anew: the model classes the workers accept, and
/// whether the running workers must start again to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Model classes.
    pub models: Vec<String>,
    /// The running workers run something older.
    pub restart: bool,
    /// What was made, for the event.
    pub what: String,
}

/// How the pool's workers are started, checked and stopped.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// The worker in events, naming its id (`worker local-1`,
    /// `container fossa-local-7-1 of local-1`).
    fn name(&self, index: u32) -> String;
    /// Starts worker `index` on 127.0.0.1:`port`; its output goes to `logs`
    /// as `local-<index>`.
    async fn launch(&self, index: u32, port: u16, logs: &LocalLogs) -> Result<(), Error>;
    /// `Some(how)` once worker `index` no longer runs.
    async fn ended(&self, index: u32) -> Option<String>;
    /// Stops worker `index` (given a few seconds to finish).
    async fn stop(&self, index: u32);
    /// Makes the workers' code again (the models list; the image).
    async fn rebuild(&self) -> Result<Rebuilt, Error>;
    /// What the workers run, for the overview's Image line.
    async fn describe(&self) -> String;
}

/// The pool; see the module docs.
pub struct Pool {
    launcher: Box<dyn Launcher>,
    reserved_ports: Vec<u16>,
    broker_url: String,
    api_token: String,
    workers: Mutex<Vec<Slot>>,
    desired: AtomicU32,
    models: StdMutex<Vec<String>>,
    events: Events,
    logs: LocalLogs,
    protection: Protection,
}

/// What the workers share that is secret: the broker's URL (read for the
/// autoscaler's signal and replaced in the logs) and their API token.
pub struct PoolSecrets {
    /// The broker URL, with the workers' credentials.
    pub broker_url: String,
    /// The token the workers require on their Fossa API.
    pub api_token: String,
}

impl Pool {
    /// Starts `n` workers with `launcher`. No worker gets a port of
    /// `reserved_ports` (the UI's); `broker_url` is read for the
    /// autoscaler's signal and replaced in the logs.
    pub async fn start(
        launcher: Box<dyn Launcher>,
        n: u32,
        models: Vec<String>,
        events: Events,
        logs_dir: std::path::PathBuf,
        reserved_ports: Vec<u16>,
        PoolSecrets {
            broker_url,
            api_token,
        }: PoolSecrets,
    ) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(&logs_dir)
            .map_err(|e| Error::io(format!("cannot create {}", logs_dir.display()), e))?;
        let mut secrets = vec![broker_url.clone(), api_token.clone()];
        secrets.extend(crate::duties::broker::parse_url(&broker_url).map(|(c, _)| c.password));
        let pool = Arc::new(Pool {
            launcher,
            reserved_ports,
            broker_url,
            api_token,
            workers: Mutex::new(Vec::new()),
            desired: AtomicU32::new(n),
            models: StdMutex::new(models),
            events,
            logs: LocalLogs::new(logs_dir, secrets),
            protection: Protection::default(),
        });
        pool.converge().await?;
        Ok(pool)
    }

    /// What the workers run.
    pub async fn describe(&self) -> String {
        self.launcher.describe().await
    }

    /// Starts or stops workers until there are as many as desired.
    async fn converge(&self) -> Result<(), Error> {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        while ws.len() < want {
            let slot = Slot::next(&self.reserved_ports, ws.iter())?;
            self.launcher
                .launch(slot.index, slot.port, &self.logs)
                .await?;
            self.events.push(
                "workers",
                false,
                format!(
                    "started {} on 127.0.0.1:{}",
                    self.launcher.name(slot.index),
                    slot.port
                ),
            );
            ws.push(slot);
        }
        ws.sort_by_key(|w| w.index);
        self.shrink(&mut ws, want).await;
        Ok(())
    }

    /// Stops idle workers until `want` run; busy ones stay until idle.
    async fn shrink(&self, ws: &mut Vec<Slot>, want: usize) {
        let indexes: Vec<u32> = ws.iter().map(|w| w.index).collect();
        for index in self.protection.to_stop(&indexes, want) {
            ws.retain(|w| w.index != index);
            self.launcher.stop(index).await;
            self.events.push(
                "workers",
                false,
                format!("stopped {} (idle)", self.launcher.name(index)),
            );
        }
        let indexes: Vec<u32> = ws.iter().map(|w| w.index).collect();
        if let Some(note) = self.protection.kept_note(&indexes, want) {
            self.events.push("workers", false, note);
        }
    }

    /// One look of the supervisor: starts again the workers that ended
    /// (each an event), then stops the workers kept above the wanted count
    /// once they are idle.
    pub async fn supervise(&self) {
        let mut ws = self.workers.lock().await;
        for i in 0..ws.len() {
            let Some(how) = self.launcher.ended(ws[i].index).await else {
                continue;
            };
            let moved = move_if_taken(&self.reserved_ports, &mut ws, i);
            let w = &mut ws[i];
            w.restarts += 1;
            let name = self.launcher.name(w.index);
            self.events.push(
                "workers",
                true,
                format!(
                    "{name} {how}; starting it again (restart {}){moved}",
                    w.restarts
                ),
            );
            match self.launcher.launch(w.index, w.port, &self.logs).await {
                Ok(()) => w.started_at = now(),
                Err(e) => self
                    .events
                    .push("workers", true, format!("cannot restart {name}: {e}")),
            }
        }
        let want = self.desired.load(Ordering::SeqCst) as usize;
        if ws.len() > want {
            self.shrink(&mut ws, want).await;
        }
    }

    /// Stops every worker.
    pub async fn stop_all(&self) {
        let mut ws = self.workers.lock().await;
        let stops = ws.iter().map(|w| self.launcher.stop(w.index));
        futures::future::join_all(stops).await;
        ws.clear();
    }
}

#[async_trait]
impl WorkerBackend for Pool {
    fn mode(&self) -> Mode {
        Mode::Local
    }

    fn worker_token(&self) -> Option<String> {
        Some(self.api_token.clone())
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError> {
        let ws = self.workers.lock().await;
        Ok(ws
            .iter()
            .map(|w| WorkerRef {
                protected: self.protection.has(w.index),
                ..w.worker_ref()
            })
            .collect())
    }

    async fn protect(&self, busy: &[String], idle: &[String]) -> Result<(), BackendError> {
        self.protection.set(busy, idle);
        Ok(())
    }

    fn desired(&self) -> u32 {
        self.desired.load(Ordering::SeqCst)
    }

    async fn scale(&self, workers: u32) -> Result<String, BackendError> {
        check_scale(workers)?;
        let before = self.desired.swap(workers, Ordering::SeqCst);
        self.converge()
            .await
            .map_err(local("cannot start the workers"))?;
        Ok(format!("scaled local workers from {before} to {workers}"))
    }

    async fn rebuild(&self) -> Result<String, BackendError> {
        let built = self
            .launcher
            .rebuild()
            .await
            .map_err(local("cannot rebuild the workers"))?;
        *self.models.lock().expect("lock") = built.models.clone();
        if !built.restart {
            return Ok(format!("{} is up to date", built.what));
        }
        self.stop_all().await;
        self.converge()
            .await
            .map_err(local("cannot restart the workers"))?;
        Ok(format!(
            "restarted {} local workers with {}",
            self.desired(),
            built.what
        ))
    }

    fn models(&self) -> Vec<String> {
        self.models.lock().expect("lock").clone()
    }

    async fn logs(&self, id: &str, query: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        Ok(self.logs.query(id, query))
    }

    fn broker_url(&self) -> Option<String> {
        Some(self.broker_url.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// A launcher in memory: what runs, and what a test marks as ended.
    #[derive(Default)]
    struct Fake {
        running: StdMutex<BTreeSet<u32>>,
        dead: StdMutex<BTreeSet<u32>>,
        launches: AtomicU32,
    }

    #[async_trait]
    impl Launcher for Arc<Fake> {
        fn name(&self, index: u32) -> String {
            format!("fake local-{index}")
        }
        async fn launch(&self, index: u32, _port: u16, logs: &LocalLogs) -> Result<(), Error> {
            self.launches.fetch_add(1, Ordering::SeqCst);
            self.dead.lock().unwrap().remove(&index);
            self.running.lock().unwrap().insert(index);
            logs.push(&format!("local-{index}"), "booted");
            Ok(())
        }
        async fn ended(&self, index: u32) -> Option<String> {
            self.dead
                .lock()
                .unwrap()
                .contains(&index)
                .then(|| "exited (killed)".into())
        }
        async fn stop(&self, index: u32) {
            self.running.lock().unwrap().remove(&index);
        }
        async fn rebuild(&self) -> Result<Rebuilt, Error> {
            Ok(Rebuilt {
                models: vec!["Etl".into()],
                restart: false,
                what: "fake".into(),
            })
        }
        async fn describe(&self) -> String {
            "fake workers".into()
        }
    }

    /// A log directory removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn pool(n: u32) -> (Arc<Pool>, Arc<Fake>, Events, Dir) {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let fake = Arc::new(Fake::default());
        let events = Events::default();
        let dir = Dir(std::env::temp_dir().join(format!(
            "fossa-pool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        )));
        let p = Pool::start(
            Box::new(fake.clone()),
            n,
            vec![],
            events.clone(),
            dir.0.clone(),
            vec![],
            PoolSecrets {
                broker_url: "amqp://u:secret@127.0.0.1:1/%2F".into(),
                api_token: "token".into(),
            },
        )
        .await
        .unwrap();
        (p, fake, events, dir)
    }

    #[tokio::test]
    async fn an_ended_worker_is_started_again_and_said() {
        let (p, fake, events, _dir) = pool(2).await;
        assert_eq!(p.list().await.unwrap().len(), 2);
        fake.dead.lock().unwrap().insert(1);
        p.supervise().await;
        assert_eq!(fake.launches.load(Ordering::SeqCst), 3);
        let said: Vec<_> = events.list().into_iter().map(|e| e.message).collect();
        assert!(
            said.iter()
                .any(|m| m
                    .starts_with("fake local-1 exited (killed); starting it again (restart 1)")),
            "{said:?}"
        );
        p.supervise().await;
        assert_eq!(
            fake.launches.load(Ordering::SeqCst),
            3,
            "a running worker is left alone"
        );
        let q = LogQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            p.logs("local-1", &q).await.unwrap().len(),
            2,
            "both boots logged"
        );
    }

    #[tokio::test]
    async fn scale_in_stops_idle_workers_and_keeps_busy_ones_until_idle() {
        let (p, fake, _events, _dir) = pool(3).await;
        p.protect(&["local-2".into(), "local-3".into()], &["local-1".into()])
            .await
            .unwrap();
        p.scale(1).await.unwrap();
        let ids: Vec<String> = p.list().await.unwrap().into_iter().map(|w| w.id).collect();
        assert_eq!(ids, ["local-2", "local-3"], "the busy ones stay");
        assert_eq!(*fake.running.lock().unwrap(), BTreeSet::from([2, 3]));
        p.protect(&[], &["local-3".into()]).await.unwrap();
        p.supervise().await;
        let ids: Vec<String> = p.list().await.unwrap().into_iter().map(|w| w.id).collect();
        assert_eq!(ids, ["local-2"], "idle now, local-3 goes");
        p.stop_all().await;
        assert!(fake.running.lock().unwrap().is_empty());
    }
}
