//! The Fargate worker backend: workers are the ECS tasks of the stack's
//! service, listed with pagination and described in batches of 100, each
//! addressed by the private IP of its ENI attachment. Duties report their
//! state here for the UI.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::StackConfig;
use fossa_contract::names::FOSSA_PORT;
use fossa_web::model::{Component, Cost};
use futures::StreamExt;
use tokio::sync::Notify;

use crate::cluster;
use crate::fleet::{WorkerBackend, WorkerRef};

/// State the duties share with the UI.
#[derive(Debug, Default)]
pub struct DutyState {
    /// The broker's status.
    pub broker: Mutex<Component>,
    /// NAT's status.
    pub nat: Mutex<Component>,
    /// The image's status.
    pub image: Mutex<Component>,
    /// The current worker image reference, once built or found.
    pub image_ref: Mutex<Option<String>>,
    /// Model classes in the image.
    pub models: Mutex<Vec<String>>,
    /// Wakes the image duty (the UI's rebuild button).
    pub rebuild: Arc<Notify>,
    /// Wakes the cluster duty when the image reference changes.
    pub image_changed: Arc<Notify>,
}

impl DutyState {
    /// Sets a component's status.
    pub fn set(slot: &Mutex<Component>, ok: bool, detail: impl Into<String>) {
        *slot.lock().expect("lock") = Component {
            ok,
            detail: detail.into(),
        };
    }
}

/// Hourly list prices (us-east-1, on demand) used for the cost estimate.
pub mod prices {
    /// Fargate, per vCPU-hour.
    pub const FARGATE_VCPU_HOUR: f64 = 0.040_48;
    /// Fargate, per GB-hour.
    pub const FARGATE_GB_HOUR: f64 = 0.004_445;
    /// A t3.small gateway instance.
    pub const T3_SMALL_HOUR: f64 = 0.020_8;
    /// A managed NAT Gateway, before data processing charges.
    pub const NAT_GATEWAY_HOUR: f64 = 0.045;
}

/// ECS tasks of the stack's service.
pub struct FargateBackend {
    ecs: aws_sdk_ecs::Client,
    config: StackConfig,
    desired: AtomicU32,
    running: AtomicU32,
    state: Arc<DutyState>,
}

impl FargateBackend {
    /// A backend for `config`'s service.
    pub fn new(ecs: aws_sdk_ecs::Client, config: StackConfig, state: Arc<DutyState>) -> Self {
        let desired = AtomicU32::new(config.workers);
        FargateBackend {
            ecs,
            config,
            desired,
            running: AtomicU32::new(0),
            state,
        }
    }

    /// Records the service's desiredCount as the cluster duty last saw it.
    pub fn set_desired(&self, n: u32) {
        self.desired.store(n, Ordering::SeqCst);
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

    async fn list(&self) -> Result<Vec<WorkerRef>, String> {
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
                .aws("ecs:ListTasks", &cluster)
                .map_err(|e| e.to_string())?;
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
            let d = d
                .aws("ecs:DescribeTasks", &cluster)
                .map_err(|e| e.to_string())?;
            out.extend(d.tasks().iter().filter_map(worker_ref));
        }
        self.running.store(
            out.iter().filter(|w| w.status == "RUNNING").count() as u32,
            Ordering::Relaxed,
        );
        Ok(out)
    }

    fn desired(&self) -> u32 {
        self.desired.load(Ordering::SeqCst)
    }

    async fn scale(&self, workers: u32) -> Result<String, String> {
        if workers > 1000 {
            return Err("at most 1000 workers".into());
        }
        cluster::scale(&self.ecs, &self.config.stack, workers)
            .await
            .map_err(|e| e.to_string())?;
        let before = self.desired.swap(workers, Ordering::SeqCst);
        Ok(format!("desired workers {before} → {workers}"))
    }

    async fn rebuild(&self) -> Result<String, String> {
        self.state.rebuild.notify_one();
        Ok("image rebuild requested: the models are read again and a new image is built if anything changed".into())
    }

    fn models(&self) -> Vec<String> {
        self.state.models.lock().expect("lock").clone()
    }

    fn components(&self) -> [Component; 3] {
        let get = |m: &Mutex<Component>| m.lock().expect("lock").clone();
        [
            get(&self.state.broker),
            get(&self.state.nat),
            get(&self.state.image),
        ]
    }

    fn cost(&self) -> Option<Cost> {
        let n = f64::from(self.running.load(Ordering::Relaxed).max(self.desired()));
        let per_worker = prices::FARGATE_VCPU_HOUR * f64::from(self.config.cpu) / 1024.0
            + prices::FARGATE_GB_HOUR * f64::from(self.config.memory) / 1024.0;
        Some(Cost {
            stack_hourly: prices::T3_SMALL_HOUR + n * per_worker,
            nat_gateway_hourly: prices::NAT_GATEWAY_HOUR,
            basis: format!("us-east-1 on-demand list prices: t3.small gateway + {n} Fargate workers of {} CPU / {} MiB", self.config.cpu, self.config.memory),
        })
    }
}
