//! The cluster's AWS resources, each converged on its own: the log group,
//! the cluster, the task definition (a new revision only when its spec hash
//! changed), the service and its desired count, and the service's tasks.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, HealthCheck,
    KeyValuePair, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode, PortMapping,
    PropagateTags, Secret, Tag, TaskDefinitionField, TransportProtocol,
};
use aws_sdk_ecs::types::{CpuArchitecture, OsFamily, RuntimePlatform};
use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::config::{CapacityShare, StackConfig};
use fossa_contract::elf::Arch;
use fossa_contract::names::{FOSSA_PORT, WORKER_CONTAINER};
use fossa_contract::{ssm, tags, StackName};
use sha2::{Digest, Sha256};

use super::{rollout, service_events};

/// Log retention of the workers' log group.
pub const LOG_RETENTION_DAYS: i32 = 7;

/// Why the cluster duty failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A request could not be built.
    #[error("cannot build the {what} request")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: aws_smithy_types::error::operation::BuildError,
    },
}

fn build_err(
    what: &'static str,
) -> impl Fn(aws_smithy_types::error::operation::BuildError) -> ClusterError {
    move |source| ClusterError::Request { what, source }
}

/// The worker task definition as plain data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskSpec {
    /// Family.
    pub family: String,
    /// Image reference.
    pub image: String,
    /// CPU units.
    pub cpu: u32,
    /// Memory, MiB.
    pub memory: u32,
    /// Execution role ARN.
    pub execution_role: String,
    /// Task role ARN.
    pub task_role: String,
    /// SSM parameter with the broker URL (an ECS secret).
    pub broker_secret: String,
    /// Log group.
    pub log_group: String,
    /// Region (for awslogs).
    pub region: String,
    /// The worker image's architecture, the gateway's own (it builds the
    /// image): the task definition's `runtimePlatform`, without which
    /// Fargate runs X86_64. Left out of the hash on X86_64, so a stack
    /// made before it was recorded rolls no new revision for it.
    #[serde(skip_serializing_if = "is_x86_64")]
    pub arch: Arch,
    /// Seconds between the worker's SIGTERM and its SIGKILL (`stopTimeout`),
    /// and the part of them it waits for its running tasks (`FOSSA_DRAIN_SECS`).
    pub stop_timeout: u32,
    /// See [`TaskSpec::stop_timeout`].
    pub drain: u32,
}

fn is_x86_64(a: &Arch) -> bool {
    *a == Arch::X86_64
}

impl TaskSpec {
    /// The spec for `stack` running `image`.
    pub fn new(cfg: &StackConfig, image: &str) -> TaskSpec {
        TaskSpec {
            family: cfg.stack.task_family(),
            image: image.to_owned(),
            cpu: cfg.cpu,
            memory: cfg.memory,
            execution_role: cfg.execution_role_arn.clone(),
            task_role: cfg.task_role_arn.clone(),
            broker_secret: cfg.stack.ssm_parameter(ssm::BROKER_URL),
            log_group: cfg.stack.log_group(),
            region: cfg.region.clone(),
            arch: Arch::this().unwrap_or(Arch::X86_64),
            stop_timeout: fossa_contract::fargate::STOP_TIMEOUT_SECS,
            drain: fossa_contract::fargate::DRAIN_SECS,
        }
    }

    /// Hash of the spec, kept as [`tags::SPEC_HASH`].
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).expect("serialises"),
        ))[..32]
            .to_owned()
    }
}

fn ecs_tags(stack: &StackName) -> Vec<Tag> {
    tags::standard(stack, tags::BY_AGENT)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Ensures the log group exists with its retention; sets the retention of one
/// that exists without it (a crash can fall between creating and setting).
/// Returns whether it created the group.
pub async fn ensure_log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    stack: &StackName,
) -> Result<bool, ClusterError> {
    let name = stack.log_group();
    let found = logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .aws("logs:DescribeLogGroups", &name)?;
    let existing = found
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name.as_str()));
    let created = existing.is_none();
    match existing {
        Some(g) if g.retention_in_days() == Some(LOG_RETENTION_DAYS) => return Ok(false),
        Some(_) => {}
        None => {
            let mut req = logs.create_log_group().log_group_name(&name);
            for (k, v) in tags::standard(stack, tags::BY_AGENT) {
                req = req.tags(k, v);
            }
            req.send().await.aws("logs:CreateLogGroup", &name)?;
            fossa_contract::fault::exit_at(fossa_contract::fault::Point::LogGroupCreated);
        }
    }
    logs.put_retention_policy()
        .log_group_name(&name)
        .retention_in_days(LOG_RETENTION_DAYS)
        .send()
        .await
        .aws("logs:PutRetentionPolicy", &name)?;
    Ok(created)
}

/// Ensures the cluster is active with both Fargate capacity providers.
pub async fn ensure_cluster(
    ecs: &aws_sdk_ecs::Client,
    stack: &StackName,
) -> Result<bool, ClusterError> {
    let name = stack.cluster();
    let found = ecs
        .describe_clusters()
        .clusters(&name)
        .send()
        .await
        .aws("ecs:DescribeClusters", &name)?;
    if found
        .clusters()
        .iter()
        .any(|c| c.status() == Some("ACTIVE"))
    {
        return Ok(false);
    }
    ecs.create_cluster()
        .cluster_name(&name)
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .default_capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE")
                .weight(1)
                .build()
                .map_err(build_err("cluster"))?,
        )
        .set_tags(Some(ecs_tags(stack)))
        .send()
        .await
        .aws("ecs:CreateCluster", &name)?;
    Ok(true)
}

/// The ARN of the latest revision when its spec hash matches, else a newly registered revision's.
pub async fn ensure_task_definition(
    ecs: &aws_sdk_ecs::Client,
    stack: &StackName,
    spec: &TaskSpec,
) -> Result<(String, bool), ClusterError> {
    let hash = spec.hash();
    match ecs
        .describe_task_definition()
        .task_definition(&spec.family)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .aws("ecs:DescribeTaskDefinition", &spec.family)
    {
        Ok(out) => {
            let same = out
                .tags()
                .iter()
                .any(|t| t.key() == Some(tags::SPEC_HASH) && t.value() == Some(hash.as_str()));
            let active = out
                .task_definition()
                .and_then(|d| d.status())
                .is_none_or(|s| s.as_str() == "ACTIVE");
            if same && active {
                let arn = out
                    .task_definition()
                    .and_then(|d| d.task_definition_arn())
                    .unwrap_or_default()
                    .to_owned();
                return Ok((arn, false));
            }
        }
        Err(e)
            if e.is_code("ClientException")
                || e.detail.contains("Unable to describe task definition") => {}
        Err(e) => return Err(e.into()),
    }
    let health = format!(
        "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{FOSSA_PORT}/api/0.01/', timeout=4)\""
    );
    let container = ContainerDefinition::builder()
        .name(WORKER_CONTAINER)
        .image(&spec.image)
        .essential(true)
        .memory(spec.memory as i32)
        .port_mappings(
            PortMapping::builder()
                .container_port(FOSSA_PORT.into())
                .protocol(TransportProtocol::Tcp)
                .build(),
        )
        .environment(
            KeyValuePair::builder()
                .name("FOSSA_HTTP_PORT")
                .value(FOSSA_PORT.to_string())
                .build(),
        )
        .environment(
            KeyValuePair::builder()
                .name("FOSSA_DRAIN_SECS")
                .value(spec.drain.to_string())
                .build(),
        )
        .stop_timeout(spec.stop_timeout as i32)
        .secrets(
            Secret::builder()
                .name("RABBITMQ_URL")
                .value_from(&spec.broker_secret)
                .build()
                .map_err(build_err("secret"))?,
        )
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", &spec.log_group)
                .options("awslogs-region", &spec.region)
                .options(
                    "awslogs-stream-prefix",
                    fossa_contract::names::LOG_STREAM_PREFIX,
                )
                .build()
                .map_err(build_err("log configuration"))?,
        )
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command(health)
                .interval(30)
                .timeout(5)
                .retries(3)
                .start_period(60)
                .build()
                .map_err(build_err("health check"))?,
        )
        .build();
    let mut tags = ecs_tags(stack);
    tags.push(Tag::builder().key(tags::SPEC_HASH).value(&hash).build());
    let out = ecs
        .register_task_definition()
        .family(&spec.family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .runtime_platform(
            RuntimePlatform::builder()
                .operating_system_family(OsFamily::Linux)
                .cpu_architecture(match spec.arch {
                    Arch::X86_64 => CpuArchitecture::X8664,
                    Arch::Arm64 => CpuArchitecture::Arm64,
                })
                .build(),
        )
        .cpu(spec.cpu.to_string())
        .memory(spec.memory.to_string())
        .execution_role_arn(&spec.execution_role)
        .task_role_arn(&spec.task_role)
        .container_definitions(container)
        .set_tags(Some(tags))
        .send()
        .await
        .aws("ecs:RegisterTaskDefinition", &spec.family)?;
    fossa_contract::fault::exit_at(fossa_contract::fault::Point::TaskDefinitionRegistered);
    let arn = out
        .task_definition()
        .and_then(|d| d.task_definition_arn())
        .unwrap_or_default()
        .to_owned();
    Ok((arn, true))
}

/// What [`ensure_service`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceChange {
    /// Nothing.
    None,
    /// Created with the config's worker count.
    Created,
    /// Moved to a new task definition.
    Updated,
    /// Moved to the configured capacity providers (a new deployment), and
    /// to a new task definition too if `revision`.
    Providers {
        /// The task definition changed as well.
        revision: bool,
    },
    /// A new deployment of the same task definition, after one failed and
    /// something changed since.
    Redeployed,
}

/// What [`ensure_service`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSeen {
    /// What it changed.
    pub change: ServiceChange,
    /// The service's desiredCount.
    pub desired: i32,
    /// Its running tasks, as ECS counts them (0 for a new service).
    pub running: i32,
    /// Its events, as ECS reports them (newest first; none for a new service).
    pub events: Vec<service_events::ServiceEvent>,
    /// Why its deployment failed (or was rolled back), while nothing changed
    /// to start another.
    pub failed: Option<String>,
}

/// Creates the service, or points it at `task_definition`; never touches
/// desiredCount of an existing service. A deployment that failed is started
/// again only when its cause may have changed (`rollout::decide`).
pub async fn ensure_service(
    ecs: &aws_sdk_ecs::Client,
    cfg: &StackConfig,
    task_definition: &str,
    tracker: &mut rollout::Tracker,
) -> Result<ServiceSeen, ClusterError> {
    let wanted = rollout::Cause {
        task_definition: task_definition.to_owned(),
        recoveries: tracker.recoveries,
    };
    let (cluster, name) = (cfg.stack.cluster(), cfg.stack.service());
    let found = ecs
        .describe_services()
        .cluster(&cluster)
        .services(&name)
        .send()
        .await
        .aws("ecs:DescribeServices", &name)?;
    let strategy = strategy_items(cfg)?;
    if let Some(s) = found
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
    {
        let same_td = s.task_definition() == Some(task_definition);
        // A service always reports its strategy; moto drops it (and reports
        // none), which is taken as unknown rather than as a change.
        let reported = s.capacity_provider_strategy();
        let same_strategy = reported.is_empty() || same_shares(reported, &cfg.capacity_strategy());
        let events: Vec<_> = s
            .events()
            .iter()
            .map(service_events::ServiceEvent::of)
            .collect();
        let step = rollout::decide(
            &wanted,
            s.task_definition().unwrap_or_default(),
            rollout::Rollout::of(s).as_ref(),
            tracker.started.as_ref(),
            rollout::failed_event(&events),
        );
        let mut seen = ServiceSeen {
            change: ServiceChange::None,
            desired: s.desired_count(),
            running: s.running_count(),
            events,
            failed: None,
        };
        match (&step, same_strategy) {
            (rollout::Step::Fine, true) => return Ok(seen),
            (rollout::Step::Failed { reason }, true) => {
                seen.failed = Some(reason.clone());
                return Ok(seen);
            }
            _ => {}
        }
        let mut update = ecs
            .update_service()
            .cluster(&cluster)
            .service(&name)
            .task_definition(task_definition);
        if !same_strategy {
            // A new strategy takes effect through a new deployment.
            update = update.set_capacity_provider_strategy(Some(strategy));
        }
        let redeploy = step == rollout::Step::Redeploy;
        if !same_strategy || redeploy {
            update = update.force_new_deployment(true);
        }
        update.send().await.aws("ecs:UpdateService", &name)?;
        tracker.started = Some(wanted);
        seen.change = if !same_strategy {
            ServiceChange::Providers { revision: !same_td }
        } else if redeploy {
            ServiceChange::Redeployed
        } else {
            ServiceChange::Updated
        };
        return Ok(seen);
    }
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(
            cfg.private_subnets.iter().map(|s| s.id.clone()).collect(),
        ))
        .security_groups(&cfg.task_security_group)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .map_err(build_err("network configuration"))?;
    ecs.create_service()
        .cluster(&cluster)
        .service_name(&name)
        .task_definition(task_definition)
        .desired_count(cfg.workers as i32)
        .set_capacity_provider_strategy(Some(strategy))
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(network)
                .build(),
        )
        .deployment_configuration(deployment_configuration())
        .propagate_tags(PropagateTags::Service)
        .set_tags(Some(ecs_tags(&cfg.stack)))
        .send()
        .await
        .aws("ecs:CreateService", &name)?;
    tracker.started = Some(wanted);
    Ok(ServiceSeen {
        change: ServiceChange::Created,
        desired: cfg.workers as i32,
        running: 0,
        events: Vec::new(),
        failed: None,
    })
}

/// The config's capacity provider strategy, as ECS takes it.
fn strategy_items(cfg: &StackConfig) -> Result<Vec<CapacityProviderStrategyItem>, ClusterError> {
    cfg.capacity_strategy()
        .iter()
        .map(|s| {
            CapacityProviderStrategyItem::builder()
                .capacity_provider(s.provider)
                .base(s.base as i32)
                .weight(s.weight as i32)
                .build()
                .map_err(build_err("service"))
        })
        .collect()
}

/// Whether the strategy ECS reports is `wanted` (in any order; base 0 unsaid).
fn same_shares(reported: &[CapacityProviderStrategyItem], wanted: &[CapacityShare]) -> bool {
    reported.len() == wanted.len()
        && wanted.iter().all(|w| {
            reported.iter().any(|r| {
                r.capacity_provider() == w.provider
                    && r.base() as u32 == w.base
                    && r.weight() as u32 == w.weight
            })
        })
}

/// Sets the service's desiredCount.
pub async fn scale(
    ecs: &aws_sdk_ecs::Client,
    stack: &StackName,
    workers: u32,
) -> Result<(), ClusterError> {
    ecs.update_service()
        .cluster(stack.cluster())
        .service(stack.service())
        .desired_count(workers as i32)
        .send()
        .await
        .aws("ecs:UpdateService", stack.service())?;
    Ok(())
}

/// How the service deploys: ECS's deployment circuit breaker on, with
/// rollback (see `rollout.rs` for what the agent does with its state).
pub fn deployment_configuration() -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(true)
                .rollback(true)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_contract::config::Subnet;

    fn cfg() -> StackConfig {
        let sub = |id: &str| Subnet {
            id: id.into(),
            cidr: "192.168.2.0/24".into(),
            az: "a".into(),
        };
        StackConfig {
            version: 1,
            stack: StackName::new("dev").unwrap(),
            region: "eu-west-2".into(),
            account_id: "1".into(),
            vpc_id: "v".into(),
            vpc_cidr: "192.168.0.0/16".into(),
            public_subnet: sub("p"),
            private_subnets: vec![sub("a"), sub("b")],
            gateway_security_group: "g".into(),
            task_security_group: "t".into(),
            execution_role_arn: "e".into(),
            task_role_arn: "r".into(),
            bucket: "b".into(),
            has_models: false,
            workers: 4,
            cpu: 256,
            memory: 512,
            destroying: false,
            instance_type: None,
            autoscale: None,
            spot: false,
            allow_agent_downgrade: false,
            models_sha256: None,
        }
    }

    #[test]
    fn the_spec_hash_changes_only_with_the_spec() {
        let a = TaskSpec::new(&cfg(), "reg/repo:ctx-1");
        assert_eq!(a.hash(), TaskSpec::new(&cfg(), "reg/repo:ctx-1").hash());
        assert_ne!(a.hash(), TaskSpec::new(&cfg(), "reg/repo:ctx-2").hash());
        let mut c = cfg();
        c.memory = 1024;
        assert_ne!(a.hash(), TaskSpec::new(&c, "reg/repo:ctx-1").hash());
        c = cfg();
        c.workers = 9;
        assert_eq!(
            a.hash(),
            TaskSpec::new(&c, "reg/repo:ctx-1").hash(),
            "scaling is not a new revision"
        );
        assert_eq!(a.broker_secret, "/fossa/dev/broker-url");
    }

    #[test]
    fn the_architecture_is_in_the_hash_only_when_arm64() {
        let mut x86 = TaskSpec::new(&cfg(), "reg/repo:ctx-1");
        x86.arch = Arch::X86_64;
        // What the hash covered before the architecture was recorded: the
        // same, so an x86_64 stack rolls nothing when its agent is upgraded.
        let json = serde_json::to_string(&x86).unwrap();
        assert!(!json.contains("arch"), "{json}");
        let mut arm = x86.clone();
        arm.arch = Arch::Arm64;
        assert_ne!(x86.hash(), arm.hash());
    }
}
