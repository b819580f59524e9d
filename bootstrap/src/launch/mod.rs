//! `fossa-bootstrap launch`: converge the stack's bootstrap resources.
//!
//! Each step looks its resource up by tag (or by its derived name), creates it
//! only when missing, and repairs the parts a crash could have left half done
//! (an unattached gateway, a missing route or rule). A re-run therefore only
//! reads, and an interrupted launch is finished by running it again.
//!
//! The steps live by resource: `network` (VPC, gateway, subnets, routes,
//! security groups), `iam` (roles, instance profile), `storage` (bucket and
//! uploads), `parameters` (SSM) and `instance`; this module holds the inputs
//! and runs the steps in order.

mod first_boot;
mod iam;
mod instance;
mod lasting;
mod network;
mod parameters;
mod quota;
mod storage;
mod wait;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use fossa_contract::config::{Autoscale, AutoscaleError, StackConfig, STACK_CONFIG_VERSION};
use fossa_contract::names::{AGENT_OBJECT_KEY, MODELS_OBJECT_KEY, UI_USER};
use fossa_contract::{ssm, StackName};
use ipnet::Ipv4Net;
use rand::distr::{Alphanumeric, SampleString};

pub use storage::models_tarball;

use crate::cli::LaunchArgs;
use crate::clients::{Clients, Identity};
use crate::plan::{self, Arch, Scope, SubnetLayout};
use crate::progress::Progress;
use crate::{elf, Error, Result};

/// Environment variable naming the service that tells the caller's public IP
/// (default `https://checkip.amazonaws.com`), for networks that block it.
pub const PUBLIC_IP_URL_ENV: &str = "FOSSA_PUBLIC_IP_URL";

pub use fossa_contract::names::PASSWORD_ENV;

/// Local inputs checked before any AWS call.
struct Inputs {
    layout: SubnetLayout,
    arch: Arch,
    agent: Vec<u8>,
    agent_path: PathBuf,
    models: Option<Vec<u8>>,
}

fn default_agent_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("fossa-agent");
    p.is_file().then_some(p)
}

/// The autoscaling a launch asks for: the flags given over what the stack
/// had. `Err` names a bound that cannot work.
pub fn autoscale_of(
    args: &LaunchArgs,
    previous: Option<&Autoscale>,
) -> std::result::Result<Option<Autoscale>, AutoscaleError> {
    if args.no_autoscale {
        return Ok(None);
    }
    let max = match (args.max_workers, previous) {
        (Some(m), _) => m,
        (None, Some(p)) => p.max_workers,
        (None, None) => {
            return match (args.min_workers, args.idle_window) {
                (None, None) => Ok(None),
                (Some(min), _) => Err(AutoscaleError::MinAboveMax { min, max: 0 }),
                (None, Some(_)) => Err(AutoscaleError::ZeroMax),
            }
        }
    };
    let a = Autoscale {
        min_workers: args
            .min_workers
            .or(previous.map(|p| p.min_workers))
            .unwrap_or(0),
        max_workers: max,
        idle_window_secs: args
            .idle_window
            .or(previous.map(|p| p.idle_window_secs))
            .unwrap_or(fossa_contract::limits::AUTOSCALE_IDLE_WINDOW_SECS),
    };
    a.check(fossa_contract::limits::MAX_WORKERS)?;
    Ok(Some(a))
}

fn check_inputs(args: &LaunchArgs, progress: &Progress) -> Result<Inputs> {
    let plan::Shape { layout, arch } = plan::check_shape(args)?;
    // Before the long arm64 build: Spot cannot run what this gateway builds.
    fossa_contract::fargate::check_spot(arch, args.spot, &args.instance_type)
        .map_err(|e| Error::Usage(e.to_string()))?;
    // Bounds that cannot work fail before anything is made or changed.
    if args.max_workers.is_some() || args.min_workers.is_some() || args.idle_window.is_some() {
        let given = Autoscale {
            min_workers: args.min_workers.unwrap_or(0),
            max_workers: args
                .max_workers
                .unwrap_or(fossa_contract::limits::MAX_WORKERS),
            idle_window_secs: args.idle_window.unwrap_or(1),
        };
        given
            .check(fossa_contract::limits::MAX_WORKERS)
            .map_err(|e| Error::Usage(e.to_string()))?;
    }
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            fossa_contract::limits::check_password(PASSWORD_ENV, &p)
                .map_err(|e| Error::Usage(e.to_string()))?;
        }
    }
    let models = match &args.models {
        Some(dir) if !dir.is_dir() => {
            return Err(Error::Usage(format!(
                "--models {}: not a directory of model files",
                dir.display()
            )))
        }
        Some(dir) => Some(models_tarball(dir)?),
        None => None,
    };
    let source_tree = std::env::current_dir()
        .ok()
        .and_then(|d| crate::agent_build::find_workspace(&d));
    let agent_path = match (&args.agent_binary, source_tree) {
        (Some(p), _) => p.clone(),
        // Inside the source tree: build the static agent for the instance.
        (None, Some(workspace)) => {
            let profile = std::env::var(crate::agent_build::PROFILE_ENV)
                .unwrap_or_else(|_| "release".into());
            let plan = crate::agent_build::BuildPlan::new(
                workspace,
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
                arch,
                std::env::consts::ARCH,
                &profile,
            );
            let started = std::time::Instant::now();
            let built = crate::agent_build::build(&plan, &|s| progress.working(s))?;
            progress.note(&format!(
                "built the {arch} agent {} in {:.1}s",
                built.display(),
                started.elapsed().as_secs_f64()
            ));
            built
        }
        (None, None) => default_agent_path().ok_or_else(|| {
            Error::Usage(
                "no agent binary: run launch inside the fossa-gateway source tree to have it build one, or pass --agent-binary PATH to a static Linux build of fossa-agent"
                    .into(),
            )
        })?,
    };
    let agent = std::fs::read(&agent_path).map_err(|source| Error::Read {
        path: agent_path.clone(),
        source,
    })?;
    let info = elf::check(&agent, arch).map_err(|source| Error::AgentBinary {
        path: agent_path.clone(),
        source,
    })?;
    if info.dynamic {
        progress.note(&format!(
            "warning: {} is dynamically linked; it may not run on the instance's AMI. A static musl build is safer (see README).",
            agent_path.display()
        ));
    }
    Ok(Inputs {
        layout,
        arch,
        agent,
        agent_path,
        models,
    })
}

async fn public_ip_cidr() -> Result<Ipv4Net> {
    let fail = |why: String| {
        Error::Usage(format!(
            "could not find your public IP address ({why}); pass --allow-cidr YOUR.IP.ADDRESS/32 to say who may reach the UI"
        ))
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let url =
        std::env::var(PUBLIC_IP_URL_ENV).unwrap_or_else(|_| "https://checkip.amazonaws.com".into());
    let text = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?
        .text()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let ip: std::net::Ipv4Addr = text
        .trim()
        .parse()
        .map_err(|_| fail(format!("got {:?}", text.trim())))?;
    Ok(Ipv4Net::new(ip, 32).expect("32 is valid"))
}

/// What `launch` found or made, for printing and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Launched {
    /// The stack config written to SSM.
    pub config: StackConfig,
    /// Gateway instance id.
    pub instance_id: String,
    /// Its public IP, once it has one.
    pub public_ip: Option<String>,
}

/// Converges the stack; see the module docs.
pub struct Launcher<'a> {
    c: &'a Clients,
    stack: StackName,
    p: Progress,
    id: Identity,
}

#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Gateway(&'a str),
    Eni(&'a str),
}

/// `launch`: see the module docs.
pub async fn run(args: &LaunchArgs) -> Result<()> {
    let launched = launch(args).await?;
    let stack = &args.stack.stack;
    let mut out = std::io::stdout().lock();
    let ip = launched
        .public_ip
        .as_deref()
        .unwrap_or("<public ip pending>");
    let _ = writeln!(
        out,
        "fossa-gateway stack {stack} is {}.",
        if args.no_wait {
            "launched (not waiting for the agent)"
        } else {
            "up"
        }
    );
    let _ = writeln!(out, "  URL:       https://{ip}/");
    let _ = writeln!(out, "  user:      {UI_USER}");
    let _ = writeln!(out, "  password:  fossa-bootstrap password --stack {stack}");
    let _ = writeln!(
        out,
        "  shell:     aws ssm start-session --target {} --region {}",
        launched.instance_id, launched.config.region
    );
    let _ = writeln!(out, "  status:    fossa-bootstrap status --stack {stack}");
    Ok(())
}

/// Runs every step and returns what the stack holds.
pub async fn launch(args: &LaunchArgs) -> Result<Launched> {
    let progress = Progress::new();
    let inputs = check_inputs(args, &progress)?;
    let c = Clients::new(&args.stack.aws()).await?;
    progress.working("checking AWS credentials");
    let id = c.identity().await?;
    let stack = args.stack.stack.clone();
    let mut l = Launcher {
        c: &c,
        stack: stack.clone(),
        p: progress,
        id,
    };
    let ui = l.ui_sources(args.allow_cidr).await?;
    // A re-run keeps what it is not told to change.
    let previous = l.stack_config().await?;
    let kept =
        |given: Option<u32>, old: Option<u32>, default: u32| given.or(old).unwrap_or(default);
    let workers = kept(
        args.workers,
        previous.as_ref().map(|p| p.workers),
        StackConfig::DEFAULT_WORKERS,
    );
    let cpu = kept(
        args.cpu,
        previous.as_ref().map(|p| p.cpu),
        StackConfig::DEFAULT_CPU,
    );
    let memory = kept(
        args.memory,
        previous.as_ref().map(|p| p.memory),
        StackConfig::DEFAULT_MEMORY,
    );
    // Kept and given values together must be a size Fargate runs: a re-run
    // with --cpu 1024 on a stack at 512 MiB would otherwise be refused by
    // RegisterTaskDefinition, in the agent, after launch.
    fossa_contract::fargate::check_size(cpu, memory).map_err(|e| Error::Usage(e.to_string()))?;
    let has_models = inputs.models.is_some() || previous.as_ref().is_some_and(|p| p.has_models);
    let autoscale = autoscale_of(args, previous.as_ref().and_then(|p| p.autoscale.as_ref()))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let spot = match (args.spot, args.no_spot) {
        (true, _) => true,
        (_, true) => false,
        _ => previous.as_ref().is_some_and(|p| p.spot),
    };
    // A Spot choice kept from the stack, with a Graviton gateway now.
    fossa_contract::fargate::check_spot(inputs.arch, spot, &args.instance_type)
        .map_err(|e| Error::Usage(e.to_string()))?;
    if spot {
        l.p.note(&format!(
            "Fargate Spot: the first worker on Fargate, then {} of every {} on Fargate Spot",
            fossa_contract::config::SPOT_WEIGHT,
            fossa_contract::config::SPOT_WEIGHT + 1
        ));
    }
    if let Some(a) = &autoscale {
        l.p.note(&format!(
            "autoscaling between {} and {} workers (idle window {} s)",
            a.min_workers, a.max_workers, a.idle_window_secs
        ));
    }
    // Every setting is known now: the most workers must fit the account's
    // Fargate vCPU quotas before anything is made or changed.
    let most = autoscale.as_ref().map_or(workers, |a| a.max_workers);
    quota::check(&l, most, cpu, spot).await?;
    // ... and the private subnets' addresses: those a re-run keeps (an older
    // stack's /24s), or those it will make.
    let private: Vec<ipnet::Ipv4Net> = match &previous {
        Some(p) => p
            .private_subnets
            .iter()
            .filter_map(|s| s.cidr.parse().ok())
            .collect(),
        None => inputs.layout.private.to_vec(),
    };
    fossa_contract::addresses::check(most, &private).map_err(|e| Error::Usage(e.to_string()))?;
    if previous.is_some() {
        l.p.note(&format!(
            "settings: {workers} workers of {cpu} CPU units / {memory} MiB, {} models{}",
            if has_models { "your" } else { "the example" },
            if args.workers.is_none()
                && args.cpu.is_none()
                && args.memory.is_none()
                && inputs.models.is_none()
            {
                " (kept from the stack)"
            } else {
                ""
            }
        ));
    }

    l.p.note(&format!(
        "launching stack {stack} in {} (account {}), agent {}",
        c.region,
        l.id.account,
        inputs.agent_path.display()
    ));
    let vpc = l.vpc(&args.vpc_cidr).await?;
    let igw = l.internet_gateway(&vpc).await?;
    let (public, private) = l.subnets(&vpc, &inputs.layout, &args.instance_type).await?;
    l.route_table(&vpc, "public", Target::Gateway(&igw), &[&public.id])
        .await?;
    let (gw_sg, task_sg) = l.security_groups(&vpc, &ui, &inputs.layout).await?;

    let bucket = stack.bucket(&l.id.account, &c.region);
    let scope = Scope {
        stack: &stack,
        partition: &l.id.partition.clone(),
        region: &c.region,
        account: &l.id.account.clone(),
        bucket: &bucket,
    };
    let mut role_arns = Vec::new();
    for role in scope.roles() {
        role_arns.push(l.role(&role, scope.partition).await?);
        if role.name == stack.gateway_role() {
            l.instance_profile().await?;
        }
    }
    l.ecs_service_linked_role().await?;
    let [_, execution_role_arn, task_role_arn] = <[String; 3]>::try_from(role_arns)
        .map_err(|_| Error::Unexpected("the plan has three roles".into()))?;

    l.bucket(&bucket, &plan::storage::bucket_policy(&scope))
        .await?;
    let agent_sha = l
        .artifact(&bucket, AGENT_OBJECT_KEY, &inputs.agent, "agent binary")
        .await?;
    // The hash goes in the config, which only launch may write: the agent
    // checks the archive it downloads against it.
    let models_sha256 = match &inputs.models {
        Some(models) => Some(
            l.artifact(&bucket, MODELS_OBJECT_KEY, models, "models tarball")
                .await?,
        ),
        None => previous.as_ref().and_then(|p| p.models_sha256.clone()),
    };

    let config = StackConfig {
        version: STACK_CONFIG_VERSION,
        stack: stack.clone(),
        region: c.region.clone(),
        account_id: l.id.account.clone(),
        vpc_id: vpc.clone(),
        vpc_cidr: args.vpc_cidr.to_string(),
        public_subnet: public.clone(),
        private_subnets: private.clone(),
        gateway_security_group: gw_sg.clone(),
        task_security_group: task_sg,
        execution_role_arn,
        task_role_arn,
        bucket: bucket.clone(),
        has_models,
        workers,
        cpu,
        memory,
        destroying: false,
        instance_type: Some(args.instance_type.clone()),
        autoscale,
        spot,
        allow_agent_downgrade: args.allow_downgrade,
        models_sha256,
    };
    let config_json = serde_json::to_string_pretty(&config).expect("config serialises");
    let o = l.parameter(ssm::CONFIG, &config_json, false, true).await?;
    l.p.done(o, "SSM parameter", &stack.ssm_parameter(ssm::CONFIG));
    let o = l
        .parameter(ssm::AGENT_SHA256, &agent_sha, false, true)
        .await?;
    l.p.done(o, "SSM parameter", &stack.ssm_parameter(ssm::AGENT_SHA256));
    let (password, overwrite) = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => (p, true),
        _ => (Alphanumeric.sample_string(&mut rand::rng(), 24), false),
    };
    let o = l
        .parameter(ssm::UI_PASSWORD, &password, true, overwrite)
        .await?;
    l.p.done(
        o,
        "SSM SecureString",
        &stack.ssm_parameter(ssm::UI_PASSWORD),
    );
    let token = parameters::new_metrics_token();
    let o = l.parameter(ssm::METRICS_TOKEN, &token, true, false).await?;
    let name = stack.ssm_parameter(ssm::METRICS_TOKEN);
    l.p.done(o, "SSM SecureString", &name);

    let lasting = l.lasting(&public, &gw_sg).await?;
    let private_ids: Vec<&str> = private.iter().map(|s| s.id.as_str()).collect();
    l.route_table(
        &vpc,
        "private",
        Target::Eni(&lasting.interface),
        &private_ids,
    )
    .await?;
    let instance_id = l
        .instance(
            args,
            &inputs,
            &public.id,
            &gw_sg,
            instance::Boot {
                agent_sha: &agent_sha,
                bucket: &bucket,
                lasting: &lasting,
            },
        )
        .await?;
    let public_ip = Some(lasting.public_ip.clone());

    if !args.no_wait {
        wait::wait_for_agent(
            &mut l,
            &instance_id,
            args.ui_address.as_deref().unwrap_or(&lasting.public_ip),
            &agent_sha,
            Duration::from_secs(args.wait_timeout),
        )
        .await?;
    }
    l.p.note(&format!(
        "{} AWS API calls in {:.1}s",
        c.counter.get(),
        l.p.elapsed().as_secs_f64()
    ));
    l.p.finish();
    Ok(Launched {
        config,
        instance_id,
        public_ip,
    })
}

pub use parameters::{print_secret, rotate_metrics_token, rotate_password, scale};
