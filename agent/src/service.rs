//! The agent service: loads its configuration, runs each duty in its own
//! reconcile loop (a failed duty is retried with backoff and reported without
//! stopping the others), tells systemd it is ready once NAT is verified,
//! pings the watchdog, re-reads its configuration on SIGHUP and stops cleanly
//! on SIGTERM.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::Duty;
use fossa_contract::ssm;
use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::events::Events;
use crate::exec::{Executor, Host};
use crate::fargate::{DutyState, FargateBackend};
use crate::fleet::{FleetModel, PollSettings};
use crate::settings::{load, Clients, Settings};
use crate::{broker, cluster, image, nat, tls, Error};

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

fn nat_reconcile(exec: Arc<dyn Executor>, state: Arc<DutyState>) -> Reconcile {
    Arc::new(move |s: Arc<Settings>| {
        let exec = exec.clone();
        let state = state.clone();
        Box::pin(async move {
            let cidrs: Vec<Ipv4Net> = s
                .stack
                .private_cidrs()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect();
            let result = tokio::task::spawn_blocking(move || {
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
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
            match &result {
                Ok(summary) => {
                    let target = nat::egress_target(&s.toml);
                    let (ok, test) = nat::egress_self_test(&target).await;
                    DutyState::set(
                        &state.nat,
                        ok,
                        format!("{summary}; egress self-test: {test}"),
                    );
                }
                Err(e) => DutyState::set(&state.nat, false, e.clone()),
            }
            result
        })
    })
}

fn report(slot: &Mutex<fossa_web::model::Component>, result: &Result<String, String>) {
    match result {
        Ok(m) => DutyState::set(slot, true, m.clone()),
        Err(e) => DutyState::set(slot, false, e.clone()),
    }
}

fn chain(e: impl Into<anyhow::Error>) -> String {
    format!("{:#}", e.into())
}

fn broker_reconcile(state: Arc<DutyState>, exec: Arc<dyn Executor>) -> Reconcile {
    Arc::new(move |s: Arc<Settings>| {
        let (state, exec) = (state.clone(), exec.clone());
        Box::pin(async move {
            let result = async {
                let address = match s.toml.broker_address {
                    Some(a) => a,
                    None => {
                        let routes = exec.read("/proc/net/route".as_ref()).map_err(chain)?;
                        broker::default_address(&routes)
                            .ok_or_else(|| chain(broker::BrokerError::NoAddress))?
                    }
                };
                let c = Clients::new(&s.sdk);
                let creds = broker::ensure_url(&c.ssm, &s.toml.stack, address)
                    .await
                    .map_err(chain)?;
                let docker = image::docker().await.map_err(chain)?;
                let img = s
                    .toml
                    .broker_image
                    .as_deref()
                    .unwrap_or(broker::DEFAULT_IMAGE);
                broker::reconcile(&docker, img, address, &creds)
                    .await
                    .map_err(chain)
            }
            .await;
            report(&state.broker, &result);
            result
        })
    })
}

fn image_reconcile(state: Arc<DutyState>, events: Events) -> Reconcile {
    let cache = Arc::new(tokio::sync::Mutex::new(image::ModelsCache::default()));
    Arc::new(move |s: Arc<Settings>| {
        let (state, events, cache) = (state.clone(), events.clone(), cache.clone());
        Box::pin(async move {
            let result = async {
                let c = Clients::new(&s.sdk);
                let built = build_image(&s, &c, &mut *cache.lock().await, &events)
                    .await
                    .map_err(chain)?;
                *state.models.lock().expect("lock") = built.models.clone();
                let changed = state
                    .image_ref
                    .lock()
                    .expect("lock")
                    .replace(built.reference.clone())
                    .as_ref()
                    != Some(&built.reference);
                if changed {
                    state.image_changed.notify_one();
                }
                Ok(if built.built {
                    format!("built and pushed {}", built.reference)
                } else {
                    format!("{} is up to date", built.reference)
                })
            }
            .await;
            report(&state.image, &result);
            result
        })
    })
}

fn cluster_reconcile(state: Arc<DutyState>, backend: Arc<FargateBackend>) -> Reconcile {
    Arc::new(move |s: Arc<Settings>| {
        let (state, backend) = (state.clone(), backend.clone());
        Box::pin(async move {
            let image = state
                .image_ref
                .lock()
                .expect("lock")
                .clone()
                .ok_or_else(|| "waiting for the worker image".to_owned())?;
            let c = Clients::new(&s.sdk);
            let (summary, desired) = cluster::reconcile(&c.ecs, &c.logs, &s.stack, &image)
                .await
                .map_err(chain)?;
            backend.set_desired(desired.max(0) as u32);
            Ok(summary)
        })
    })
}

/// One duty's reconcile loop.
pub struct DutyLoop {
    /// Name in events and logs.
    pub name: &'static str,
    /// The reconcile step.
    pub step: Reconcile,
    /// Time between successful runs.
    pub every: Duration,
    /// Told `true` after the first success (readiness).
    pub ready: Option<watch::Sender<bool>>,
    /// Runs the step at once when notified.
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

/// Runs the duty until shutdown: on success again after `every`, on failure
/// after a growing backoff; a settings change or a wake-up runs it at once.
pub async fn duty_loop(
    duty: DutyLoop,
    mut settings: watch::Receiver<Arc<Settings>>,
    events: Events,
    mut shutdown: watch::Receiver<bool>,
) {
    let DutyLoop {
        name,
        step,
        every,
        ready,
        wake,
    } = duty;
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
        let woken = async {
            match &wake {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = settings.changed() => {}
            _ = woken => {}
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
    let state = Arc::new(DutyState::default());
    let clients = Clients::new(&settings.sdk);
    let backend = Arc::new(FargateBackend::new(
        clients.ecs.clone(),
        settings.stack.clone(),
        state.clone(),
    ));
    let fleet = FleetModel::new(
        backend.clone(),
        events.clone(),
        settings.stack.stack.as_str(),
        PollSettings::default(),
    );
    // The UI failing to start (port taken, no password yet) must not take NAT down with it.
    let web = match start_web(&settings, &clients, fleet.clone(), &events).await {
        Ok(shutdown) => Some(shutdown),
        Err(e) => {
            events.push(
                "web",
                true,
                format!("the web UI is not running: {:#}", anyhow::Error::from(e)),
            );
            None
        }
    };
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = watch::channel(!duties.contains(&Duty::Nat));
    let exec: Arc<dyn Executor> = Arc::new(Host);
    if !duties.contains(&Duty::Nat) {
        DutyState::set(
            &state.nat,
            true,
            "not managed by this agent (duties in agent.toml)",
        );
    }

    let mut tasks = vec![tokio::spawn(fleet.clone().run(shutdown_rx.clone()))];
    for duty in duties {
        let (name, step, ready, wake) = match duty {
            Duty::Nat => (
                "nat",
                nat_reconcile(exec.clone(), state.clone()),
                Some(ready_tx.clone()),
                None,
            ),
            Duty::Broker => (
                "broker",
                broker_reconcile(state.clone(), exec.clone()),
                None,
                None,
            ),
            Duty::Image => (
                "image",
                image_reconcile(state.clone(), events.clone()),
                None,
                Some(state.rebuild.clone()),
            ),
            Duty::Cluster => (
                "cluster",
                cluster_reconcile(state.clone(), backend.clone()),
                None,
                Some(state.image_changed.clone()),
            ),
        };
        let duty = DutyLoop {
            name,
            step,
            every: interval(duty),
            ready,
            wake,
        };
        tasks.push(tokio::spawn(duty_loop(
            duty,
            settings_rx.clone(),
            events.clone(),
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
    if let Some(web) = web {
        web.notify();
    }
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

/// Starts the web UI: TLS certificate (made once, its fingerprint published
/// to SSM), the password from SSM, the cookie key from the state directory.
async fn start_web(
    settings: &Settings,
    clients: &Clients,
    fleet: Arc<FleetModel>,
    events: &Events,
) -> Result<fossa_web::Shutdown, Error> {
    let stack = &settings.toml.stack;
    let tls_dir = settings.toml.state_dir.join("tls");
    let mut names = vec!["localhost".to_owned()];
    if !settings.toml.listen.ip().is_unspecified() {
        names.push(settings.toml.listen.ip().to_string());
    }
    let cert = match (&settings.toml.tls_cert, &settings.toml.tls_key) {
        (Some(cert), Some(key)) => tls::load_configured(cert, key),
        _ => tls::load_or_create(&tls_dir, &names),
    }
    .map_err(|e| Error::Other(chain(e)))?;
    let cookie_key = tls::cookie_key(&tls_dir).map_err(|e| Error::Other(chain(e)))?;
    let fp_name = stack.ssm_parameter(ssm::TLS_FINGERPRINT);
    let current = clients
        .ssm
        .get_parameter()
        .name(&fp_name)
        .send()
        .await
        .ok()
        .and_then(|p| p.parameter().and_then(|p| p.value()).map(str::to_owned));
    if current.as_deref() != Some(cert.fingerprint.as_str()) {
        clients
            .ssm
            .put_parameter()
            .name(&fp_name)
            .value(&cert.fingerprint)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .aws("ssm:PutParameter", &fp_name)?;
    }
    let pw_name = stack.ssm_parameter(ssm::UI_PASSWORD);
    let pw = clients
        .ssm
        .get_parameter()
        .name(&pw_name)
        .with_decryption(true)
        .send()
        .await
        .aws("ssm:GetParameter", &pw_name)?;
    let password = pw
        .parameter()
        .and_then(|p| p.value())
        .unwrap_or_default()
        .to_owned();
    if password.is_empty() {
        return Err(Error::Other(format!(
            "{pw_name} is empty: re-run fossa-bootstrap launch"
        )));
    }
    let config = fossa_web::WebConfig {
        listen: settings.toml.listen,
        password,
        cookie_key,
        tls: Some((cert.cert_pem.clone(), cert.key_pem.clone())),
        session_state_file: Some(tls_dir.join("session-state")),
        after_hashing: Some(crate::memory::release),
    };
    let rocket = fossa_web::build(config, fleet)
        .ignite()
        .await
        .map_err(|e| {
            Error::Other(format!(
                "cannot start the web UI on {}: {}",
                settings.toml.listen,
                fossa_web::explain(&e)
            ))
        })?;
    let shutdown = rocket.shutdown();
    let web_events = events.clone();
    let listen = settings.toml.listen;
    tokio::spawn(async move {
        if let Err(e) = rocket.launch().await {
            web_events.push(
                "web",
                true,
                format!("the web UI on {listen} stopped: {}", fossa_web::explain(&e)),
            );
        }
    });
    events.push(
        "web",
        false,
        format!(
            "UI on https://{listen}/ (certificate SHA-256 {})",
            cert.fingerprint
        ),
    );
    Ok(shutdown)
}

/// The image duty's work: models from the bucket, then build and push unless the registry has the tag.
async fn build_image(
    s: &Settings,
    c: &Clients,
    cache: &mut image::ModelsCache,
    events: &Events,
) -> Result<image::Built, image::ImageError> {
    let models = cache
        .load(&c.s3, &s.stack.bucket, s.stack.has_models)
        .await?;
    let docker = image::docker().await?;
    let base = s
        .toml
        .base_image
        .as_deref()
        .unwrap_or(image::DEFAULT_BASE_IMAGE);
    image::reconcile(
        &docker,
        &c.ecr,
        &s.toml.stack,
        s.toml.registry.as_deref(),
        base,
        &models,
        events,
    )
    .await
}

/// `fossa-agent build`: runs the image duty once and returns the image reference.
pub async fn build_once(config: &Path) -> Result<String, Error> {
    let s = load(config).await?;
    let c = Clients::new(&s.sdk);
    let mut cache = image::ModelsCache::default();
    let built = build_image(&s, &c, &mut cache, &Events::default())
        .await
        .map_err(|e| Error::Other(chain(e)))?;
    Ok(built.reference)
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
