//! The agent service, `fossa-agent run`: loads its configuration, registers
//! the duties `agent.toml` lists with the [`Driver`], starts the fleet poller
//! and the web UI, tells systemd it is ready once NAT is verified, pings the
//! watchdog, re-reads its configuration on SIGHUP and stops cleanly on
//! SIGTERM. The duties themselves live in [`crate::duties`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fossa_contract::aws::AwsResultExt;
use fossa_contract::ssm;
use tokio::sync::watch;

use crate::duties::config::{ConfigDuty, Followed};
use crate::duties::driver::{chain, Backoff, Board, Driver};
use crate::duties::{self, DutyKind, Registration, Shared};
use crate::events::Events;
use crate::fleet::fargate::FargateBackend;
use crate::fleet::{FleetModel, PollSettings};
use crate::host::exec::Host;
use crate::host::tls;
use crate::host::upgrade::{Layout, Start};
use crate::settings::{load, Settings};
use crate::Error;

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Whether NAT has been verified once: the agent is ready.
fn nat_verified(board: &Board) -> bool {
    board
        .borrow()
        .iter()
        .any(|s| s.component.name == DutyKind::Nat.name() && s.successes > 0)
}

/// The service entry point: `fossa-agent run`.
pub async fn run(config: &Path) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let events = Events::default();
    launch_current(config, &events);
    let settings = load_with_retry(config, &events).await?;
    if let Some(why) = &settings.config_trouble {
        events.push("config", true, why.clone());
    }
    events.push(
        "agent",
        false,
        format!(
            "agent {} started for stack {}",
            env!("CARGO_PKG_VERSION"),
            settings.stack.stack
        ),
    );
    let state_dir = settings.toml.state_dir.clone();
    let shared = Shared::new(Arc::new(Host), events.clone());
    let listed = settings.toml.duties();
    let nat_listed = listed.contains(&DutyKind::Nat);
    // One agent acts for the stack at a time; the lease says which.
    let lease = Arc::new(watch::Sender::new(duties::lease::Lease::Unknown));
    let me = duties::lease::holder_name();
    let mut driver = Driver::new(events.clone(), Backoff::default())
        .count_recoveries_in(shared.recoveries.clone())
        .gate(lease.subscribe());
    driver.register(
        Registration::new(
            "lease",
            "Lease",
            Duration::from_secs(fossa_contract::limits::LEASE_RENEW_SECS),
        ),
        Box::new(duties::lease::LeaseDuty::new(me.clone(), lease.clone())),
    );
    for kind in DutyKind::ALL {
        if listed.contains(&kind) {
            let (reg, duty) = duties::gateway(kind, &shared);
            driver.register(reg, duty);
        } else {
            driver.note(
                kind.name(),
                kind.title(),
                true,
                "not managed by this agent (duties in agent.toml)",
            );
        }
    }
    let (password_tx, password_rx) = watch::channel(String::new());
    let (token_tx, token_rx) = watch::channel(String::new());
    let board = driver.board();
    let backend = Arc::new(FargateBackend::new(
        settings.clients.ecs.clone(),
        settings.clients.logs.clone(),
        settings.stack.clone(),
        &shared,
    ));
    let (history, trouble) =
        crate::history::History::open_or_fallback(&state_dir, settings.toml.history);
    if let Some(t) = trouble {
        events.push("history", true, t);
    }
    let fleet = FleetModel::new(
        backend,
        board.clone(),
        events.clone(),
        settings.stack.stack.as_str(),
        PollSettings::default(),
        history,
    );
    let mut this = crate::fleet::this_agent();
    this.replaced = crate::host::boots::read(&state_dir);
    if let Some(r) = &this.replaced {
        events.push(
            "gateway",
            false,
            format!(
                "this gateway ({}) replaced {} at {}: it came back with the data volume's history, queue, keys and broker data",
                r.current, r.previous, r.at
            ),
        );
    }
    fleet.set_agent(this);
    fleet.follow_lease(lease.subscribe());
    // The UI failing to start (port taken, no password yet) must not take NAT down with it.
    let secrets = (password_rx, token_rx);
    let (web, versions) = match start_web(&settings, fleet.clone(), &events, secrets).await {
        Ok((ui, versions)) => {
            driver.register(
                Registration::new("web", "Web UI", crate::ui::PERIOD),
                Box::new(crate::ui::UiDuty(ui.clone())),
            );
            (Some(ui), versions)
        }
        Err(e) => {
            events.push(
                "web",
                true,
                format!("the web UI is not running: {}", chain(&e)),
            );
            (None, (None, None))
        }
    };
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let settings_tx = Arc::new(settings_tx);
    driver.register(
        Registration::new("config", "Configuration", duties::config::PERIOD),
        Box::new(ConfigDuty::new(
            config.to_owned(),
            settings_tx.clone(),
            vec![
                Followed {
                    key: ssm::UI_PASSWORD,
                    tx: password_tx,
                    version: versions.0,
                },
                Followed {
                    key: ssm::METRICS_TOKEN,
                    tx: token_tx,
                    version: versions.1,
                },
            ],
        )),
    );
    // The stack config's autoscaling, now and after every change.
    crate::fleet::loops::register(
        &mut driver,
        &fleet,
        Box::new(|s: &Settings| s.stack.autoscale),
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tasks = driver.start(settings_rx, shutdown_rx);

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::io("cannot handle SIGHUP", e))?;
    let mut usec = 0u64;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 3));
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(10)));
    let mut ready = board.clone();
    let mut announced = false;
    let started_at = fossa_contract::unix_now();
    let mut said_frozen = false;
    loop {
        if !announced && (!nat_listed || nat_verified(&ready)) {
            announced = true;
            fossa_contract::fault::exit_at_in(
                fossa_contract::fault::Point::BeforeReady,
                &crate::fleet::this_agent().sha256,
            );
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("NAT verified; duties running"),
            ]);
            events.push("agent", false, "ready");
            if let Some(sha) = Layout::new(&state_dir).commit() {
                events.push(
                    "upgrade",
                    false,
                    format!(
                        "the upgraded agent {} is ready; the upgrade is done",
                        sha.get(..12).unwrap_or(&sha)
                    ),
                );
            }
        }
        tokio::select! {
            _ = tick.tick() => {
                let frozen = crate::duties::liveness::frozen(&board.borrow(), started_at, fossa_contract::unix_now());
                match frozen {
                    None if tasks.iter().all(|t| !t.is_finished()) => {
                        if watchdog.is_some() {
                            notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                        said_frozen = false;
                    }
                    Some(f) if !said_frozen => {
                        events.push("agent", true, format!("{f}: the watchdog is no longer fed, so systemd restarts the agent"));
                        said_frozen = true;
                    }
                    _ => {}
                }
            }
            _ = ready.changed(), if !announced => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match load(config).await {
                    Ok(s) => {
                        settings_tx.send_replace(Arc::new(s));
                        events.push("agent", false, "configuration reloaded");
                    }
                    Err(e) => events.push("agent", true, format!("reload failed, keeping the old configuration: {}", chain(&e))),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    events.push("agent", false, "stopping");
    if let Some(ui) = web {
        ui.stop().await;
    }
    shutdown_tx.send_replace(true);
    let stop = futures::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .is_err()
    {
        tracing::warn!("some duties did not stop within 5 s");
    }
    fleet.save_meter();
    // A clean stop hands the stack over at once, not after the lease runs out.
    let last = settings_tx.borrow().clone();
    match tokio::time::timeout(Duration::from_secs(5), duties::lease::release(&last, &me)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot give the lease up: {}", chain(&e)),
        Err(_) => tracing::warn!("cannot give the lease up: no answer within 5 s"),
    }
    Ok(())
}

/// The launcher's part (see [`crate::host::upgrade`]): counts a start of a
/// pending upgrade, rolls back one that never became ready, and execs the
/// current binary when it is not this one. Any failure here leaves this
/// binary running, which is always a working agent.
fn launch_current(config: &Path, events: &Events) {
    let Ok(toml) = fossa_contract::config::AgentToml::load(config) else {
        return;
    };
    let layout = Layout::new(&toml.state_dir);
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    match layout.on_start(&me) {
        Ok(Start::Run) => {}
        Ok(Start::Exec(path)) => {
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&path)
                .args(std::env::args_os().skip(1))
                .exec();
            events.push(
                "upgrade",
                true,
                format!(
                    "cannot start {}: {err}; this agent runs instead",
                    path.display()
                ),
            );
        }
        Err(e) => events.push("upgrade", true, chain(&e)),
    }
}

/// Starts the web UI: TLS certificate (made once, its fingerprint published
/// to SSM), the password and the scraper's token from SSM, the cookie key
/// from the state directory. Returns the versions of the password and the
/// token it started with, which the configuration duty follows from.
async fn start_web(
    settings: &Settings,
    fleet: Arc<FleetModel>,
    events: &Events,
    (password_updates, token_updates): (watch::Receiver<String>, watch::Receiver<String>),
) -> Result<(Arc<crate::ui::UiProcess>, (Option<i64>, Option<i64>)), Error> {
    let stack = &settings.toml.stack;
    let clients = &settings.clients;
    let tls_dir = settings.toml.state_dir.join("tls");
    let mut names = vec!["localhost".to_owned()];
    if !settings.toml.listen.ip().is_unspecified() {
        names.push(settings.toml.listen.ip().to_string());
    }
    let cert = match (&settings.toml.tls_cert, &settings.toml.tls_key) {
        (Some(cert), Some(key)) => tls::load_configured(cert, key),
        _ => tls::load_or_create(&tls_dir, &names),
    }?;
    let cookie_key = tls::cookie_key(&tls_dir)?;
    let fp_name = stack.ssm_parameter(ssm::TLS_FINGERPRINT);
    let current = ssm::get(&clients.ssm, &fp_name, false)
        .await
        .ok()
        .map(|p| p.value);
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
    let ssm::Parameter {
        value: password,
        version: pw_version,
    } = ssm::get(&clients.ssm, &pw_name, true).await?;
    // A stack launched before the scraper's token has none: /metrics then
    // takes the UI's login only, until a re-run of launch makes one.
    let token = ssm::read(&clients.ssm, &stack.ssm_parameter(ssm::METRICS_TOKEN), true).await?;
    if password.is_empty() {
        return Err(Error::Setup(format!(
            "{pw_name} is empty: re-run fossa-bootstrap launch"
        )));
    }
    let spec = crate::ui::UiSpec {
        listen: settings.toml.listen,
        password,
        cookie_key,
        tls: (cert.cert_pem.clone(), cert.key_pem.clone()),
        scrape_token: token.as_ref().map(|t| t.value.clone()),
        session_file: tls_dir.join("session-state"),
    };
    let secrets_updates = (password_updates, token_updates);
    let ui = crate::ui::UiProcess::start(spec, fleet, secrets_updates, events.clone())
        .await
        .map_err(|e| Error::Web {
            listen: settings.toml.listen,
            why: chain(&e),
        })?;
    let listen = settings.toml.listen;
    events.push(
        "web",
        false,
        format!(
            "UI on https://{listen}/ (certificate SHA-256 {})",
            cert.fingerprint
        ),
    );
    Ok((ui, (Some(pw_version), token.map(|t| t.version))))
}

/// `fossa-agent build`: runs the image duty once and returns the image reference.
pub async fn build_once(config: &Path) -> Result<String, Error> {
    let s = load(config).await?;
    let mut cache = duties::image::ModelsCache::default();
    let built = duties::image::build(&s, &mut cache, &Events::default()).await?;
    Ok(built.reference)
}

/// Loads the settings, retrying while SSM is unreachable (e.g. early in boot).
async fn load_with_retry(config: &Path, events: &Events) -> Result<Settings, Error> {
    let mut attempt = 0u32;
    loop {
        match load(config).await {
            Ok(s) => return Ok(s),
            // A bad file will not fix itself.
            Err(e) if e.is_permanent() || attempt >= 5 => return Err(e.into()),
            Err(e) => {
                events.push(
                    "agent",
                    true,
                    format!("cannot load the stack config yet: {}", chain(&e)),
                );
                tokio::time::sleep(Backoff::default().after(attempt)).await;
                attempt += 1;
            }
        }
    }
}
