//! The agent service: loads its configuration, runs each duty in its own
//! reconcile loop (a failed duty is retried with backoff and reported without
//! stopping the others), tells systemd it is ready once NAT is verified,
//! pings the watchdog, re-reads its configuration on SIGHUP and stops cleanly
//! on SIGTERM.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fossa_web::model::Event;

use aws_config::SdkConfig;
use fossa_contract::aws::{sdk_config, AwsResultExt, AwsSettings};
use fossa_contract::config::{AgentToml, Duty, StackConfig};
use fossa_contract::ssm;
use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::exec::{Executor, Host};
use crate::{nat, Error};

/// Everything a duty needs, replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `/etc/fossa/agent.toml`.
    pub toml: AgentToml,
    /// The stack config from SSM.
    pub stack: StackConfig,
    /// AWS configuration every client is built from.
    pub sdk: SdkConfig,
}

/// Loads the TOML file, the AWS configuration and the stack config from SSM.
pub async fn load(config: &Path) -> Result<Settings, Error> {
    let toml = AgentToml::load(config)?;
    let sdk = sdk_config(&AwsSettings {
        region: Some(toml.region.clone()),
        profile: None,
        endpoint_url: toml.endpoint_url.clone(),
    })
    .await?;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let name = toml.stack.ssm_parameter(ssm::CONFIG);
    let out = client
        .get_parameter()
        .name(&name)
        .send()
        .await
        .aws("ssm:GetParameter", &name)?;
    let json = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    let stack = StackConfig::parse(&name, json)?;
    Ok(Settings { toml, stack, sdk })
}

/// The stack's private CIDRs, for `fossa-agent nat` without `--private-cidr`.
pub async fn private_cidrs(config: &Path) -> Result<Vec<Ipv4Net>, Error> {
    let s = load(config).await?;
    s.stack
        .private_cidrs()
        .iter()
        .map(|c| {
            c.parse().map_err(|_| {
                Error::Other(format!(
                    "stack config holds a bad CIDR {c:?}; re-run fossa-bootstrap launch"
                ))
            })
        })
        .collect()
}

/// The recent events, newest last, at most [`Events::CAPACITY`].
#[derive(Debug, Clone, Default)]
pub struct Events(Arc<Mutex<VecDeque<Event>>>);

impl Events {
    /// How many events are kept.
    pub const CAPACITY: usize = 500;

    /// Records an event and logs it.
    pub fn push(&self, source: &str, error: bool, message: impl Into<String>) {
        let message = message.into();
        if error {
            tracing::error!(source, "{message}");
        } else {
            tracing::info!(source, "{message}");
        }
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut q = self.0.lock().expect("events lock");
        if q.len() == Self::CAPACITY {
            q.pop_front();
        }
        q.push_back(Event {
            at,
            source: source.to_owned(),
            error,
            message,
        });
    }

    /// A copy of the events.
    pub fn list(&self) -> Vec<Event> {
        self.0
            .lock()
            .expect("events lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// A duty's reconcile step: returns a one-line summary or the error chain.
pub type Reconcile =
    Arc<dyn Fn(Arc<Settings>) -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// How often a healthy duty is reconciled again.
pub fn interval(duty: Duty) -> Duration {
    match duty {
        Duty::Nat => Duration::from_secs(30),
        _ => Duration::from_secs(60),
    }
}

/// Backoff after the `n`-th consecutive failure: 5 s doubling to 5 min, with ±20% jitter.
pub fn backoff(n: u32) -> Duration {
    let base = 5u64.saturating_mul(1 << n.min(6)).min(300);
    let jitter = rand::random_range(0.8..1.2);
    Duration::from_secs_f64(base as f64 * jitter)
}

fn nat_reconcile(exec: Arc<dyn Executor>) -> Reconcile {
    Arc::new(move |s: Arc<Settings>| {
        let exec = exec.clone();
        Box::pin(async move {
            let cidrs: Vec<Ipv4Net> = s
                .stack
                .private_cidrs()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect();
            tokio::task::spawn_blocking(move || {
                let plan = nat::plan(exec.as_ref(), &cidrs, None)?;
                let applied = nat::apply(exec.as_ref(), &plan)?;
                Ok::<_, nat::NatError>(if applied.added.is_empty() {
                    format!("NAT verified via {} for {}", plan.egress, cidrs.len())
                } else {
                    format!(
                        "NAT applied via {}: added {}",
                        plan.egress,
                        applied.added.join(", ")
                    )
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        })
    })
}

/// Runs `step` until shutdown: on success again after `every`, on failure
/// after a growing backoff; a settings change triggers a run at once.
pub async fn duty_loop(
    name: &'static str,
    step: Reconcile,
    every: Duration,
    mut settings: watch::Receiver<Arc<Settings>>,
    events: Events,
    ready: Option<watch::Sender<bool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut last = String::new();
    loop {
        let current = settings.borrow_and_update().clone();
        let wait = match step(current).await {
            Ok(summary) => {
                if failures > 0 || summary != last {
                    events.push(name, false, &summary);
                }
                failures = 0;
                last = summary;
                if let Some(r) = &ready {
                    r.send_replace(true);
                }
                every
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures - 1);
                events.push(
                    name,
                    true,
                    format!("{e} (retry {failures} in {}s)", wait.as_secs()),
                );
                last.clear();
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = settings.changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// The service entry point: `fossa-agent run`.
pub async fn run(config: &Path) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let events = Events::default();
    let settings = load_with_retry(config, &events).await?;
    events.push(
        "agent",
        false,
        format!(
            "agent {} started for stack {}",
            env!("CARGO_PKG_VERSION"),
            settings.stack.stack
        ),
    );
    let duties = settings.toml.duties();
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = watch::channel(!duties.contains(&Duty::Nat));
    let exec: Arc<dyn Executor> = Arc::new(Host);

    let mut tasks = Vec::new();
    for duty in duties {
        let (name, step, ready) = match duty {
            Duty::Nat => ("nat", nat_reconcile(exec.clone()), Some(ready_tx.clone())),
            other => {
                events.push(
                    "agent",
                    true,
                    format!("duty {other:?} is not part of this agent build; it is skipped"),
                );
                continue;
            }
        };
        tasks.push(tokio::spawn(duty_loop(
            name,
            step,
            interval(duty),
            settings_rx.clone(),
            events.clone(),
            ready,
            shutdown_rx.clone(),
        )));
    }
    drop(ready_tx);

    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::Other(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::Other(format!("cannot handle SIGINT: {e}")))?;
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| Error::Other(format!("cannot handle SIGHUP: {e}")))?;
    let mut usec = 0u64;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 3));
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(10)));
    let mut announced = false;
    loop {
        if !announced && *ready_rx.borrow() {
            announced = true;
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("NAT verified; duties running"),
            ]);
            events.push("agent", false, "ready");
        }
        tokio::select! {
            _ = tick.tick() => {
                if tasks.iter().all(|t| !t.is_finished()) && watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = ready_rx.changed(), if !announced => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match load(config).await {
                    Ok(s) => {
                        settings_tx.send_replace(Arc::new(s));
                        events.push("agent", false, "configuration reloaded");
                    }
                    Err(e) => events.push("agent", true, format!("reload failed, keeping the old configuration: {:#}", anyhow::Error::from(e))),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    events.push("agent", false, "stopping");
    shutdown_tx.send_replace(true);
    let stop = futures::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .is_err()
    {
        tracing::warn!("some duties did not stop within 5 s");
    }
    Ok(())
}

/// Loads the settings, retrying while SSM is unreachable (e.g. early in boot).
async fn load_with_retry(config: &Path, events: &Events) -> Result<Settings, Error> {
    let mut attempt = 0u32;
    loop {
        match load(config).await {
            Ok(s) => return Ok(s),
            // A bad file will not fix itself.
            Err(e @ Error::Config(_)) | Err(e @ Error::Settings(_)) => return Err(e),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                events.push(
                    "agent",
                    true,
                    format!(
                        "cannot load the stack config yet: {:#}",
                        anyhow::Error::from(e)
                    ),
                );
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        }
    }
}
