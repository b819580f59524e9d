//! The Fargate worker backend: workers are the ECS tasks of the stack's
//! service, listed with pagination and described in batches of 100, each
//! addressed by the private IP of its ENI attachment. Scaling changes the
//! service's desiredCount; a rebuild wakes the image duty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::StackConfig;
use fossa_contract::limits::{
    TASK_PROTECTION_BATCH, TASK_PROTECTION_MINUTES, TASK_PROTECTION_RENEW_MINUTES,
};
use fossa_contract::names::{worker_log_stream, DEFAULT_INSTANCE_TYPE, FOSSA_PORT};
use fossa_contract::prices;
use fossa_web::model::{Cost, CostPart, LogLine, LogQuery, Mode};

use super::log_pages;
use tokio::sync::watch;

use super::{BackendError, WorkerBackend, WorkerRef};
use crate::duties::{cluster, Shared, WorkerImage};

/// ECS tasks of the stack's service.
pub struct FargateBackend {
    ecs: aws_sdk_ecs::Client,
    config: StackConfig,
    desired: Arc<watch::Sender<Option<u32>>>,
    running: AtomicU32,
    /// Of those, on Fargate Spot.
    running_spot: AtomicU32,
    image: watch::Receiver<Option<WorkerImage>>,
    rebuild: Arc<watch::Sender<u64>>,
    nat_traffic: watch::Receiver<crate::duties::nat::traffic::NatTraffic>,
    logs: aws_sdk_cloudwatchlogs::Client,
    /// Log reads reused a while and made a few at a time.
    log_reads: super::log_cache::LogCache,
    secrets: watch::Receiver<Vec<String>>,
    interrupted: watch::Receiver<Vec<crate::duties::cluster::stopped_tasks::StoppedTask>>,
    /// Scale-in protection as last set, by task id: on until the instant, or off.
    protection: Mutex<HashMap<String, Option<Instant>>>,
    /// The ARNs of the tasks last listed, by id. A task ECS is stopping
    /// leaves the RUNNING listing at once but may run its tasks for its whole
    /// stop window (a worker drains): it is described by ARN, and listed as
    /// stopping, until ECS says it is STOPPED. Only then are the subtasks it
    /// ran lost, so none is put back while it still runs.
    listed: Mutex<HashMap<String, String>>,
}

impl FargateBackend {
    /// A backend for `config`'s service, on the duties' channels in `shared`.
    pub fn new(
        ecs: aws_sdk_ecs::Client,
        logs: aws_sdk_cloudwatchlogs::Client,
        config: StackConfig,
        shared: &Shared,
    ) -> Self {
        FargateBackend {
            logs,
            log_reads: Default::default(),
            secrets: shared.secrets.subscribe(),
            ecs,
            config,
            desired: shared.desired.clone(),
            running: AtomicU32::new(0),
            running_spot: AtomicU32::new(0),
            image: shared.image.subscribe(),
            rebuild: shared.rebuild.clone(),
            nat_traffic: shared.nat_traffic.subscribe(),
            protection: Mutex::new(HashMap::new()),
            listed: Mutex::new(HashMap::new()),
            interrupted: shared.interrupted.subscribe(),
        }
    }

    /// Reads worker `id`'s CloudWatch stream, with the secrets replaced.
    async fn read_log(&self, id: &str, q: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        let group = self.config.stack.log_group();
        let stream = worker_log_stream(id);
        let limit = q.limit.clamp(1, 10_000);
        let from_head = q.since_ms.is_some();
        let secrets = self.secrets.borrow().clone();
        let page = |token: Option<String>| {
            let mut req = self
                .logs
                .get_log_events()
                .log_group_name(&group)
                .log_stream_name(&stream)
                .limit(limit as i32)
                .start_from_head(from_head)
                .set_next_token(token);
            if let Some(s) = q.since_ms {
                req = req.start_time(s.saturating_add(1));
            }
            if let Some(u) = q.until_ms {
                // endTime is exclusive.
                req = req.end_time(u.saturating_add(1));
            }
            let (stream, secrets) = (stream.clone(), secrets.clone());
            async move {
                let out = req.send().await.aws("logs:GetLogEvents", &stream)?;
                Ok::<_, fossa_contract::aws::AwsError>(log_pages::Page {
                    lines: out
                        .events()
                        .iter()
                        .map(|e| LogLine {
                            at: e.timestamp().unwrap_or_default(),
                            text: crate::fleet::logs::redact(
                                e.message().unwrap_or_default(),
                                &secrets,
                            ),
                        })
                        .collect(),
                    forward: out.next_forward_token().map(str::to_owned),
                    backward: out.next_backward_token().map(str::to_owned),
                })
            }
        };
        match log_pages::follow(
            from_head,
            limit as usize,
            fossa_contract::limits::LOG_READ_PAGES,
            page,
        )
        .await
        {
            Ok(lines) => Ok(lines),
            // The stream is made with the task's first line.
            Err(e) if e.is_code("ResourceNotFoundException") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets scale-in protection on `ids`, 10 a call; returns the ids ECS
    /// took (a task that stopped meanwhile is a failure it reports, not an error).
    async fn set_protection(&self, ids: &[String], on: bool) -> Result<Vec<String>, BackendError> {
        let cluster = self.config.stack.cluster();
        let mut done = Vec::new();
        for batch in ids.chunks(TASK_PROTECTION_BATCH) {
            let mut req = self
                .ecs
                .update_task_protection()
                .cluster(&cluster)
                .set_tasks(Some(batch.to_vec()))
                .protection_enabled(on);
            if on {
                req = req.expires_in_minutes(TASK_PROTECTION_MINUTES as i32);
            }
            let out = req.send().await.aws("ecs:UpdateTaskProtection", &cluster)?;
            done.extend(
                out.protected_tasks()
                    .iter()
                    .filter_map(|t| t.task_arn())
                    .map(|a| fossa_contract::aws::arn_resource_id(a).to_owned()),
            );
        }
        Ok(done)
    }
}

/// Which of `busy` and `idle` need a call, given what was `set`: busy tasks
/// not protected or due for renewal, idle tasks protected or not known.
fn protection_changes(
    set: &HashMap<String, Option<Instant>>,
    busy: &[String],
    idle: &[String],
    now: Instant,
) -> (Vec<String>, Vec<String>) {
    let renew = Duration::from_secs(u64::from(TASK_PROTECTION_RENEW_MINUTES) * 60);
    let protect = busy
        .iter()
        .filter(|id| !matches!(set.get(*id), Some(Some(until)) if *until > now + renew))
        .cloned()
        .collect();
    let release = idle
        .iter()
        .filter(|id| !matches!(set.get(*id), Some(None)))
        .cloned()
        .collect();
    (protect, release)
}

/// A task ECS is stopping but that has not stopped, as a worker on its way
/// out: still polled, given no work, with ECS's reason. `None` once STOPPED.
pub fn stopping_ref(t: &aws_sdk_ecs::types::Task) -> Option<WorkerRef> {
    let status = t.last_status().unwrap_or("STOPPING");
    if status == fossa_web::model::STOPPED {
        return None;
    }
    let mut w = worker_ref(t)?;
    // ECS may still say RUNNING a moment after the stop was asked for.
    if !fossa_web::model::STOPPING_STATUSES.contains(&status) {
        w.status = "STOPPING".into();
    }
    w.stopped_reason = Some(format!(
        "stopping ({}): finishing its running tasks within its stop window",
        t.stopped_reason()
            .or(t.stop_code().map(|c| c.as_str()))
            .unwrap_or("stop requested")
    ));
    Some(w)
}

/// A task's id: the last part of its ARN.
fn task_id(t: &aws_sdk_ecs::types::Task) -> Option<&str> {
    t.task_arn().map(fossa_contract::aws::arn_resource_id)
}

/// A task's worker view: id, address from its ENI attachment, status, start, capacity provider.
pub fn worker_ref(t: &aws_sdk_ecs::types::Task) -> Option<WorkerRef> {
    let ip = t
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())?;
    Some(WorkerRef {
        id: task_id(t)?.to_owned(),
        address: format!("{ip}:{FOSSA_PORT}"),
        status: t.last_status().unwrap_or("UNKNOWN").to_owned(),
        started_at: t.started_at().map(|d| d.secs()),
        capacity_provider: t.capacity_provider_name().unwrap_or("FARGATE").to_owned(),
        protected: false,
        stopped_reason: None,
    })
}

#[async_trait]
impl WorkerBackend for FargateBackend {
    fn mode(&self) -> Mode {
        Mode::Fargate
    }

    fn most_workers(&self) -> u32 {
        // The Fargate limit, or what the private subnets hold with a
        // deployment's surge, if fewer.
        self.config.most_workers()
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError> {
        let tasks = cluster::tasks::service_tasks(
            &self.ecs,
            &self.config.stack,
            aws_sdk_ecs::types::DesiredStatus::Running,
            usize::MAX,
        )
        .await?;
        let mut out: Vec<WorkerRef> = tasks.iter().filter_map(worker_ref).collect();
        let left: Vec<String> = {
            let listed = self.listed.lock().expect("lock");
            listed
                .iter()
                .filter(|(id, _)| out.iter().all(|w| w.id != **id))
                .map(|(_, arn)| arn.clone())
                .collect()
        };
        let leaving = if left.is_empty() {
            Vec::new()
        } else {
            cluster::tasks::describe(&self.ecs, &self.config.stack, &left).await?
        };
        let stopping: Vec<WorkerRef> = leaving.iter().filter_map(stopping_ref).collect();
        *self.listed.lock().expect("lock") = tasks
            .iter()
            .chain(
                leaving
                    .iter()
                    .filter(|t| stopping.iter().any(|w| Some(w.id.as_str()) == task_id(t))),
            )
            .filter_map(|t| Some((task_id(t)?.to_owned(), t.task_arn()?.to_owned())))
            .collect();
        out.extend(stopping);
        let running = out.iter().filter(|w| w.status == "RUNNING");
        self.running
            .store(running.clone().count() as u32, Ordering::Relaxed);
        self.running_spot.store(
            running
                .filter(|w| w.capacity_provider == fossa_contract::config::FARGATE_SPOT)
                .count() as u32,
            Ordering::Relaxed,
        );
        // Tasks Spot took back lately stay listed, stopped, with the reason.
        for t in self.interrupted.borrow().iter() {
            if out.iter().all(|w| w.id != t.id) {
                out.push(WorkerRef {
                    id: t.id.clone(),
                    address: "-".into(),
                    status: fossa_web::model::STOPPED.into(),
                    started_at: None,
                    capacity_provider: fossa_contract::config::FARGATE_SPOT.into(),
                    protected: false,
                    stopped_reason: Some(format!("interrupted by Fargate Spot: {}", t.reason)),
                });
            }
        }
        let now = Instant::now();
        let mut protection = self.protection.lock().expect("lock");
        let listed: std::collections::HashSet<&str> = out.iter().map(|w| w.id.as_str()).collect();
        protection.retain(|id, _| listed.contains(id.as_str()));
        for w in &mut out {
            w.protected = matches!(protection.get(&w.id), Some(Some(until)) if *until > now);
        }
        Ok(out)
    }

    fn desired(&self) -> u32 {
        self.desired.borrow().unwrap_or(self.config.workers)
    }

    async fn scale(&self, workers: u32) -> Result<String, BackendError> {
        let most = self.most_workers();
        if workers > most {
            return Err(BackendError::TooMany {
                mode: self.mode(),
                max: most,
            });
        }
        cluster::scale(&self.ecs, &self.config.stack, workers).await?;
        let before = self.desired();
        self.desired.send_replace(Some(workers));
        Ok(format!("desired workers {before} → {workers}"))
    }

    async fn rebuild(&self) -> Result<String, BackendError> {
        self.rebuild.send_modify(|n| *n += 1);
        Ok("image rebuild requested: the models are read again and a new image is built if anything changed".into())
    }

    fn models(&self) -> Vec<String> {
        self.image
            .borrow()
            .as_ref()
            .map(|i| i.models.clone())
            .unwrap_or_default()
    }

    async fn protect(&self, busy: &[String], idle: &[String]) -> Result<(), BackendError> {
        let (protect, release) = {
            let set = self.protection.lock().expect("lock");
            protection_changes(&set, busy, idle, Instant::now())
        };
        if !protect.is_empty() {
            let until =
                Instant::now() + Duration::from_secs(u64::from(TASK_PROTECTION_MINUTES) * 60);
            let done = self.set_protection(&protect, true).await?;
            let mut set = self.protection.lock().expect("lock");
            for id in done {
                set.insert(id, Some(until));
            }
        }
        if !release.is_empty() {
            let done = self.set_protection(&release, false).await?;
            let mut set = self.protection.lock().expect("lock");
            for id in done {
                set.insert(id, None);
            }
        }
        Ok(())
    }

    fn nat(&self) -> Option<fossa_web::nat::NatFigures> {
        Some(self.nat_traffic.borrow().figures())
    }

    fn broker_url(&self) -> Option<String> {
        // The broker duty's first secret is the broker's URL.
        self.secrets.borrow().first().cloned()
    }

    async fn logs(&self, id: &str, q: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(Vec::new());
        }
        self.log_reads.read(id, *q, || self.read_log(id, q)).await
    }

    fn cost(&self) -> Option<Cost> {
        let running = self.running.load(Ordering::Relaxed);
        let n = running.max(self.desired());
        // Spot as placed, or as the strategy will place the tasks still to come.
        let spot = if running >= n {
            self.running_spot.load(Ordering::Relaxed)
        } else {
            self.config.spot_share(n)
        };
        let instance = self
            .config
            .instance_type
            .as_deref()
            .unwrap_or(DEFAULT_INSTANCE_TYPE);
        let q = prices::quote_with_spot(
            &self.config.region,
            instance,
            n,
            spot,
            self.config.cpu,
            self.config.memory,
        );
        let (nat_hour, nat_gb) = q.nat_gateway.unwrap_or_default();
        let mut basis = format!(
            "{} in {}, as of {}",
            prices::PRICES_SOURCE,
            self.config.region,
            prices::PRICES_DATE
        );
        if self.config.instance_type.is_none() {
            basis += &format!("; the stack config names no instance type, so {DEFAULT_INSTANCE_TYPE} is assumed (re-run launch to record it)");
        }
        for m in &q.missing {
            basis += &format!("; not priced: {m}");
        }
        let traffic = self.nat_traffic.borrow().clone();
        Some(Cost {
            stack_hourly: q.hourly(),
            nat_gateway_hourly: nat_hour,
            nat_gateway_per_gb: nat_gb,
            gateway_hourly: q.gateway_hourly(),
            basis,
            parts: q
                .parts
                .into_iter()
                .map(|p| CostPart {
                    what: p.what,
                    hourly: p.hourly,
                })
                .collect(),
            month: traffic.month,
            nat_bytes: traffic.month_bytes,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(last: &str) -> aws_sdk_ecs::types::Task {
        use aws_sdk_ecs::types::{Attachment, KeyValuePair, Task, TaskStopCode};
        Task::builder()
            .task_arn("arn:aws:ecs:eu-west-2:1:task/fossa-s/abc123")
            .last_status(last)
            .desired_status("STOPPED")
            .stop_code(TaskStopCode::SpotInterruption)
            .stopped_reason("Your Spot Task was interrupted.")
            .capacity_provider_name("FARGATE_SPOT")
            .attachments(
                Attachment::builder()
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv4Address")
                            .value("10.0.1.9")
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    #[test]
    fn a_task_on_its_way_out_is_polled_but_takes_no_work_until_it_stopped() {
        // ECS still says RUNNING a moment after the stop was asked for.
        let w = stopping_ref(&task("RUNNING")).unwrap();
        assert_eq!((w.id.as_str(), w.status.as_str()), ("abc123", "STOPPING"));
        assert_eq!(w.address, format!("10.0.1.9:{FOSSA_PORT}"));
        assert!(w
            .stopped_reason
            .unwrap()
            .contains("Your Spot Task was interrupted."));
        assert_eq!(
            stopping_ref(&task("DEACTIVATING")).unwrap().status,
            "DEACTIVATING"
        );
        assert!(stopping_ref(&task("STOPPED")).is_none(), "stopped: lost");
    }

    #[test]
    fn protection_calls_only_what_changed_and_renews_before_it_runs_out() {
        let now = Instant::now();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut set = HashMap::new();
        // Unknown (the agent restarted): every busy task is protected and
        // every idle one released, whatever ECS had.
        let (p, r) = protection_changes(&set, &ids(&["a", "b"]), &ids(&["c"]), now);
        assert_eq!((p, r), (ids(&["a", "b"]), ids(&["c"])));
        set.insert("a".to_owned(), Some(now + Duration::from_secs(3600)));
        set.insert("b".to_owned(), Some(now + Duration::from_secs(600)));
        set.insert("c".to_owned(), None);
        // a is protected for an hour: no call. b runs out in 10 min: renewed.
        let (p, r) = protection_changes(&set, &ids(&["a", "b"]), &ids(&["c"]), now);
        assert_eq!((p, r), (ids(&["b"]), ids(&[])));
        // a went idle: released once.
        let (p, r) = protection_changes(&set, &ids(&[]), &ids(&["a", "c"]), now);
        assert_eq!((p, r), (ids(&[]), ids(&["a"])));
    }
}
