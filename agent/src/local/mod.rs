//! Local mode: the same fleet model and UI over Fossa workers that run as
//! processes on this machine, with a private RabbitMQ. For trying models
//! without AWS, for the README's demo and for end-to-end tests.
//!
//! `python` prepares the venv and node module, `broker` runs the private
//! RabbitMQ, `backend` supervises the workers; this module runs them all
//! and serves the UI.

mod broker;
mod containers;
mod leftovers;
mod pool;
mod processes;
mod python;
mod slots;

pub use broker::{BrokerDuty, LocalBroker};
pub use containers::{ContainerSpec, Containers};
pub use pool::{Launcher, Pool, Rebuilt};
pub use processes::{Processes, WorkerSpec};
pub use python::{ensure_python, install_requirements, list_models, prepare_files};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fossa_contract::names::PASSWORD_ENV;
use fossa_web::model::{Fleet, Health};
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::watch;

use crate::cli::LocalArgs;
use crate::duties::driver::{Backoff, Driver};
use crate::duties::{Duty, DutyError, DutyKind, Outcome, Registration};
use crate::events::Events;
use crate::fleet::{FleetModel, PollSettings};
use crate::host::tls;
use crate::Error;

/// How often the local workers are looked at.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

pub(crate) fn setup(msg: impl Into<String>) -> Error {
    Error::Setup(msg.into())
}

/// The supervisor of local workers, as a duty: a worker that exits is
/// started again, each restart an event.
struct Supervise(Arc<Pool>);

#[async_trait::async_trait]
impl Duty<()> for Supervise {
    async fn reconcile(&mut self, _: &()) -> Result<Outcome, DutyError> {
        self.0.supervise().await;
        Ok(Outcome::done("a worker that exits is started again"))
    }
}

/// Default state directory of local mode.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/fossa/local")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/state/fossa-gateway")
    }
}

/// `fossa-agent local`.
pub async fn run(args: &LocalArgs) -> Result<(), Error> {
    let started = Instant::now();
    // A broker password on the command line is in `ps` for every user.
    if let Some(url) = &args.broker_url {
        let on_command_line = std::env::var("FOSSA_BROKER_URL").ok().as_ref() != Some(url);
        if on_command_line
            && crate::duties::broker::parse_url(url).is_some_and(|(c, _)| !c.password.is_empty())
        {
            return Err(setup(
                "--broker-url holds a password, which every user of this machine can read in `ps`: \
                 set FOSSA_BROKER_URL=amqp://user:pass@host:port in the environment instead"
                    .to_owned(),
            ));
        }
    }
    // A weak chosen password fails before anything starts.
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            fossa_contract::limits::check_password(PASSWORD_ENV, &p)?;
        }
    }
    let autoscale = args
        .max_workers
        .map(|max| fossa_contract::config::Autoscale {
            min_workers: args.min_workers.unwrap_or(0),
            max_workers: max,
            idle_window_secs: args.idle_window,
        });
    if let Some(a) = &autoscale {
        a.check(fossa_contract::limits::LOCAL_MAX_WORKERS)?;
    }
    let n_workers = match (args.workers, &autoscale) {
        (Some(n), Some(a)) => n.clamp(a.min_workers, a.max_workers),
        (Some(n), None) => n,
        (None, Some(a)) => a.min_workers,
        (None, None) => 3,
    };
    let state = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let events = Events::default();
    let _held = leftovers::lock(&state)?;
    let left = leftovers::stop(&state);
    if left > 0 {
        let msg = format!(
            "stopped {left} process group(s) an earlier run left on {} (it was killed before it could stop them)",
            state.display()
        );
        eprintln!("{msg}");
        events.push("agent", true, msg);
    }
    let (module, models_dir) = prepare_files(&state, args.models.as_deref())?;
    // Process workers need a Python with Fossa; containers bring their own.
    let (python, models) = if args.containers {
        (None, Vec::new())
    } else {
        let python = ensure_python(&args.python, &state).await?;
        install_requirements(&python, &models_dir).await?;
        let models = list_models(&python, &module, &models_dir).await?;
        (Some(python), models)
    };
    let broker = match &args.broker_url {
        Some(_) => None,
        None => {
            eprintln!("starting RabbitMQ…");
            let b = LocalBroker::start(&state.join("rabbitmq")).await?;
            Some(Arc::new(tokio::sync::Mutex::new(b)))
        }
    };
    let broker_url = match (&args.broker_url, &broker) {
        (Some(u), _) => u.clone(),
        (None, Some(b)) => b.lock().await.url().to_owned(),
        (None, None) => unreachable!("a broker was started"),
    };
    // The UI's port is never a worker's, even if it is free when workers start.
    let reserved_ports = vec![args.listen.port()];
    // Local workers listen on this machine's loopback, which any local
    // account reaches: each requires this run's token on its Fossa API.
    let api_token =
        rand::distr::SampleString::sample_string(&rand::distr::Alphanumeric, &mut rand::rng(), 32);
    let launched: Result<(Box<dyn Launcher>, Vec<String>), Error> = match python {
        Some(python) => {
            let spec = WorkerSpec {
                python,
                module,
                models_dir: models_dir.clone(),
                broker_url: broker_url.clone(),
                api_token: api_token.clone(),
                state_marker: leftovers::marker(&state),
                scratch: state.join("tmp"),
            };
            Ok((Box::new(Processes::new(spec)), models))
        }
        None => {
            let spec = ContainerSpec {
                base: args
                    .base_image
                    .clone()
                    .unwrap_or_else(|| fossa_contract::names::images::DEFAULT_BASE.to_owned()),
                models_dir: models_dir.clone(),
                broker_url: broker_url.clone(),
                api_token: api_token.clone(),
            };
            Containers::new(spec, events.clone())
                .await
                .map(|(c, models)| (Box::new(c) as Box<dyn Launcher>, models))
        }
    };
    let started_workers = match launched {
        Ok((launcher, models)) => {
            Pool::start(
                launcher,
                n_workers,
                models,
                events.clone(),
                state.join("logs"),
                reserved_ports,
                pool::PoolSecrets {
                    broker_url,
                    api_token,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    let workers = match started_workers {
        Ok(w) => w,
        Err(e) => {
            if let Some(b) = &broker {
                b.lock().await.stop().await;
            }
            return Err(e);
        }
    };
    let image_line = workers.describe().await;
    let backend: Arc<dyn crate::fleet::WorkerBackend> = workers.clone();
    let mut duties: Driver<()> = Driver::new(
        events.clone(),
        Backoff {
            first: broker::CHECK_EVERY,
            max: Duration::from_secs(10),
        },
    );
    match &broker {
        Some(b) => duties.register(
            Registration::of(DutyKind::Broker, broker::CHECK_EVERY),
            Box::new(BrokerDuty::new(b.clone())),
        ),
        None => duties.note(
            DutyKind::Broker.name(),
            DutyKind::Broker.title(),
            true,
            "RabbitMQ at the given --broker-url (not supervised here)",
        ),
    }
    for (kind, line) in [
        (
            DutyKind::Nat,
            "not needed in local mode: workers run on this machine".to_owned(),
        ),
        (DutyKind::Image, image_line),
    ] {
        duties.note(kind.name(), kind.title(), true, line);
    }
    let (history, trouble) = crate::history::History::open_or_fallback(
        &state,
        fossa_contract::config::HistoryLimits {
            queue_max: args.queue_max,
            parent_retries: args.parent_retries,
            ..Default::default()
        },
    );
    if let Some(t) = trouble {
        eprintln!("warning: {t}");
        events.push("history", true, t);
    }
    let fleet = FleetModel::new(
        backend.clone(),
        duties.board(),
        events.clone(),
        "local",
        PollSettings {
            interval: Duration::from_secs(1),
            ..Default::default()
        },
        history,
    );
    fleet.set_agent(crate::fleet::this_agent());
    fleet.follow_autoscale(autoscale);
    crate::fleet::loops::register(&mut duties, &fleet, Box::new(move |_: &()| autoscale));
    duties.register(
        Registration::new("workers", "Local workers", SUPERVISE_EVERY),
        Box::new(Supervise(workers.clone())),
    );
    if let Some(p) = fleet.autoscale_bounds() {
        eprintln!(
            "autoscaling between {} and {} workers (idle window {} s)",
            p.min_workers, p.max_workers, p.idle_window_secs
        );
    }
    let ui = start_ui(args, &state, fleet.clone(), &events).await;
    if let Ok((ui, _)) = &ui {
        duties.register(
            Registration::new("web", "Web UI", crate::ui::PERIOD),
            Box::new(crate::ui::UiDuty(ui.clone())),
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_ctx, ctx_rx) = watch::channel(Arc::new(()));
    let loops = duties.start(ctx_rx, shutdown_rx.clone());

    let result = match ui {
        Ok((ui, shown)) => {
            let r = serve_ui(args, n_workers, &shown, fleet.clone(), &events, started).await;
            ui.stop().await;
            r
        }
        Err(e) => Err(e),
    };

    eprintln!("stopping workers and the broker…");
    shutdown_tx.send_replace(true);
    futures::future::join_all(loops).await;
    fleet.save_meter();
    workers.stop_all().await;
    if let Some(b) = &broker {
        b.lock().await.stop().await;
    }
    eprintln!("stopped; nothing left running.");
    result
}

/// What local mode prints about the UI once it listens.
struct Shown {
    password: String,
    generated: bool,
    fingerprint: String,
    token_file: PathBuf,
}

/// Starts the UI's own process (its certificate, password and the
/// scraper's token made here) and waits until it listens.
async fn start_ui(
    args: &LocalArgs,
    state: &Path,
    fleet: Arc<FleetModel>,
    events: &Events,
) -> Result<(Arc<crate::ui::UiProcess>, Shown), Error> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !args.listen.ip().is_unspecified() {
        names.push(args.listen.ip().to_string());
    }
    let cert = tls::load_or_create(&state.join("tls"), &names)?;
    let cookie_key = tls::cookie_key(&state.join("tls"))?;
    let (scrape_token, token_file) = tls::metrics_token(&state.join("tls"))?;
    let (password, generated) = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (Alphanumeric.sample_string(&mut rand::rng(), 20), true),
    };
    let spec = crate::ui::UiSpec {
        listen: args.listen,
        password: password.clone(),
        cookie_key,
        tls: (cert.cert_pem.clone(), cert.key_pem.clone()),
        scrape_token: Some(scrape_token),
        session_file: state.join("tls/session-state"),
    };
    // Local mode rotates nothing: the secrets never change.
    let (_pw, pw_rx) = watch::channel(String::new());
    let (_tok, tok_rx) = watch::channel(String::new());
    let ui = crate::ui::UiProcess::start(spec, fleet, (pw_rx, tok_rx), events.clone())
        .await
        .map_err(|e| {
            setup(format!(
                "cannot start the web UI: {}",
                fossa_contract::aws::chain(&e)
            ))
        })?;
    let shown = Shown {
        password,
        generated,
        fingerprint: cert.fingerprint,
        token_file,
    };
    Ok((ui, shown))
}

async fn serve_ui(
    args: &LocalArgs,
    n_workers: u32,
    shown: &Shown,
    fleet: Arc<FleetModel>,
    events: &Events,
    started: Instant,
) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let host = if args.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        args.listen.ip().to_string()
    };
    println!("fossa-gateway local mode is up with {} workers.", n_workers);
    println!("  URL:      https://{host}:{}/", args.listen.port());
    if args.listen.ip().is_loopback() {
        let port = args.listen.port();
        println!(
            "            (this machine only; from another one: `ssh -L {port}:127.0.0.1:{port} THIS-HOST` \
             and open the URL there, or restart with --listen 0.0.0.0:{port})"
        );
    }
    println!("  user:     fossa");
    if shown.generated {
        println!("  password: {}", shown.password);
    } else {
        println!("  password: from {PASSWORD_ENV}");
    }
    println!("  TLS certificate SHA-256: {}", shown.fingerprint);
    println!(
        "  /metrics: the scraper's token is in {} (Authorization: Bearer)",
        shown.token_file.display()
    );
    // The first poll, which lists the models, may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.snapshot().models.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  models:   {}", fleet.snapshot().models.join(", "));
    println!("Press Ctrl-C to stop everything.");
    events.push(
        "agent",
        false,
        format!("local mode started with {n_workers} workers"),
    );

    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?;
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if !announced {
                    let snap = fleet.snapshot();
                    let ready = snap.workers.iter().filter(|w| w.health == Health::Ok).count();
                    if ready as u32 >= n_workers {
                        announced = true;
                        let msg = format!("all {n_workers} workers ready in {:.1}s", started.elapsed().as_secs_f64());
                        println!("{msg}");
                        events.push("agent", false, msg);
                    }
                }
            }
        }
    }
    Ok(())
}
