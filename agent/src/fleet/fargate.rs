//! The Fargate worker backend: workers are the ECS tasks of the stack's
//! service, listed with pagination and described in batches of 100, each
//! addressed by the private IP of its ENI attachment. Scaling changes the
//! service's desiredCount; a rebuild wakes the image duty.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::StackConfig;
use fossa_contract::limits::MAX_WORKERS;
use fossa_contract::names::{worker_log_stream, DEFAULT_INSTANCE_TYPE, FOSSA_PORT};
use fossa_contract::prices;
use fossa_web::model::{Cost, CostPart, LogLine, LogQuery};
use futures::StreamExt;
use tokio::sync::watch;

use super::{BackendError, WorkerBackend, WorkerRef};
use crate::duties::{cluster, Shared, WorkerImage};

/// ECS tasks of the stack's service.
pub struct FargateBackend {
    ecs: aws_sdk_ecs::Client,
    config: StackConfig,
    desired: Arc<watch::Sender<Option<u32>>>,
    running: AtomicU32,
    image: watch::Receiver<Option<WorkerImage>>,
    rebuild: Arc<watch::Sender<u64>>,
    nat_traffic: watch::Receiver<crate::duties::nat_traffic::NatTraffic>,
    logs: aws_sdk_cloudwatchlogs::Client,
    secrets: watch::Receiver<Vec<String>>,
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
            secrets: shared.secrets.subscribe(),
            ecs,
            config,
            desired: shared.desired.clone(),
            running: AtomicU32::new(0),
            image: shared.image.subscribe(),
            rebuild: shared.rebuild.clone(),
            nat_traffic: shared.nat_traffic.subscribe(),
        }
    }
}

/// A task's worker view: id, address from its ENI attachment, status, start, capacity provider.
pub fn worker_ref(t: &aws_sdk_ecs::types::Task) -> Option<WorkerRef> {
    let arn = t.task_arn()?;
    let ip = t
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())?;
    Some(WorkerRef {
        id: arn.rsplit('/').next().unwrap_or(arn).to_owned(),
        address: format!("{ip}:{FOSSA_PORT}"),
        status: t.last_status().unwrap_or("UNKNOWN").to_owned(),
        started_at: t.started_at().map(|d| d.secs()),
        capacity_provider: t.capacity_provider_name().unwrap_or("FARGATE").to_owned(),
    })
}

#[async_trait]
impl WorkerBackend for FargateBackend {
    fn mode(&self) -> &'static str {
        "fargate"
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, BackendError> {
        let cluster = self.config.stack.cluster();
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ecs
                .list_tasks()
                .cluster(&cluster)
                .service_name(self.config.stack.service())
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .aws("ecs:ListTasks", &cluster)?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        // DescribeTasks takes at most 100 tasks; a few batches run at once.
        let batches: Vec<Vec<String>> = arns.chunks(100).map(<[String]>::to_vec).collect();
        let batches: Vec<_> = futures::stream::iter(batches)
            .map(|batch| {
                self.ecs
                    .describe_tasks()
                    .cluster(&cluster)
                    .set_tasks(Some(batch))
                    .send()
            })
            .buffered(4)
            .collect()
            .await;
        let mut out = Vec::new();
        for d in batches {
            let d = d.aws("ecs:DescribeTasks", &cluster)?;
            out.extend(d.tasks().iter().filter_map(worker_ref));
        }
        self.running.store(
            out.iter().filter(|w| w.status == "RUNNING").count() as u32,
            Ordering::Relaxed,
        );
        Ok(out)
    }

    fn desired(&self) -> u32 {
        self.desired.borrow().unwrap_or(self.config.workers)
    }

    async fn scale(&self, workers: u32) -> Result<String, BackendError> {
        if workers > MAX_WORKERS {
            return Err(BackendError::TooMany {
                mode: self.mode(),
                max: MAX_WORKERS,
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

    async fn broker_waiting(&self) -> Option<u32> {
        // The broker duty's first secret is the broker's URL.
        let url = self.secrets.borrow().first().cloned()?;
        super::backend::broker_waiting_at(&url).await
    }

    async fn logs(&self, id: &str, q: &LogQuery) -> Result<Vec<LogLine>, BackendError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(Vec::new());
        }
        let group = self.config.stack.log_group();
        let stream = worker_log_stream(id);
        let mut req = self
            .logs
            .get_log_events()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .limit(q.limit.clamp(1, 10_000) as i32);
        req = match q.since_ms {
            Some(s) => req.start_time(s.saturating_add(1)).start_from_head(true),
            None => req.start_from_head(false),
        };
        if let Some(u) = q.until_ms {
            // endTime is exclusive.
            req = req.end_time(u.saturating_add(1));
        }
        let out = match req.send().await.aws("logs:GetLogEvents", &stream) {
            Ok(o) => o,
            // The stream is made with the task's first line.
            Err(e) if e.is_code("ResourceNotFoundException") => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let secrets = self.secrets.borrow().clone();
        Ok(out
            .events()
            .iter()
            .map(|e| LogLine {
                at: e.timestamp().unwrap_or_default(),
                text: crate::fleet::logs::redact(e.message().unwrap_or_default(), &secrets),
            })
            .collect())
    }

    fn cost(&self) -> Option<Cost> {
        let n = self.running.load(Ordering::Relaxed).max(self.desired());
        let instance = self
            .config
            .instance_type
            .as_deref()
            .unwrap_or(DEFAULT_INSTANCE_TYPE);
        let q = prices::quote(
            &self.config.region,
            instance,
            n,
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
