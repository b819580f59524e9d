//! Local mode: the same fleet model and UI over Fossa workers that run as
//! processes on this machine, with a private RabbitMQ. For trying models
//! without AWS, for the README's demo and for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fossa_contract::names::PASSWORD_ENV;
use fossa_web::model::{Component, Fleet, Health};
use rand::distr::{Alphanumeric, SampleString};
use tokio::process::Command;
use tokio::sync::{watch, Mutex};

use crate::cli::LocalArgs;
use crate::events::Events;
use crate::fleet::{FleetModel, PollSettings, WorkerBackend, WorkerRef};
use crate::fossa::{self, EXAMPLE_MODELS, FOSSA_REQUIREMENT, NODE_MODULE};
use crate::procs::{free_port, spawn_group, stop_group, Group};
use crate::{tls, Error};

fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

async fn python_has_fossa(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import fossa, ayeaye"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// A Python that can import Fossa: `python` itself, or a venv made from it.
pub async fn ensure_python(python: &Path, state: &Path) -> Result<PathBuf, Error> {
    if python_has_fossa(python).await {
        return Ok(python.to_owned());
    }
    let venv = state.join("venv");
    let vpy = venv.join("bin/python");
    if python_has_fossa(&vpy).await {
        return Ok(vpy);
    }
    eprintln!(
        "setting up a Python venv with {FOSSA_REQUIREMENT} in {} (once)…",
        venv.display()
    );
    let ok = Command::new(python)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(other(format!(
            "cannot create a venv with {}: install python3-venv (Debian) or pass --python PATH to a Python 3.9+",
            python.display()
        )));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--disable-pip-version-check",
            FOSSA_REQUIREMENT,
        ])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !pip || !python_has_fossa(&vpy).await {
        return Err(other(format!(
            "cannot install {FOSSA_REQUIREMENT} into {}: check the network to PyPI",
            venv.display()
        )));
    }
    Ok(vpy)
}

/// Writes the node module and, unless the user gave models, the built-in ones.
pub fn prepare_files(state: &Path, models: Option<&Path>) -> Result<(PathBuf, PathBuf), Error> {
    let io = |p: &Path, e: std::io::Error| other(format!("cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(state).map_err(|e| io(state, e))?;
    let module = state.join(NODE_MODULE);
    std::fs::write(&module, fossa::node_module()).map_err(|e| io(&module, e))?;
    let models_dir = match models {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(other(format!(
                    "--models {}: not a directory of Python model files",
                    dir.display()
                )));
            }
            std::fs::canonicalize(dir).map_err(|e| io(dir, e))?
        }
        None => {
            let dir = state.join("models");
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for (name, text) in EXAMPLE_MODELS {
                std::fs::write(dir.join(name), text).map_err(|e| io(&dir, e))?;
            }
            dir
        }
    };
    Ok((module, models_dir))
}

/// The model classes the node module finds in `models`.
pub async fn list_models(
    python: &Path,
    module: &Path,
    models: &Path,
) -> Result<Vec<String>, Error> {
    let out = Command::new(python)
        .arg(module)
        .arg("--list-models")
        .env("FOSSA_MODELS_DIR", models)
        .output()
        .await
        .map_err(|e| other(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(other(format!(
            "the models in {} do not import: {last}",
            models.display()
        )));
    }
    let names: Vec<String> = serde_json::from_slice(&out.stdout)
        .map_err(|e| other(format!("--list-models printed no JSON list: {e}")))?;
    if names.is_empty() {
        return Err(other(format!(
            "no Aye-Aye model classes found in {}: define a subclass of ayeaye.Model there",
            models.display()
        )));
    }
    Ok(names)
}

// ---------- RabbitMQ ----------

/// A private RabbitMQ started by local mode.
pub struct LocalBroker {
    child: Group,
    epmd_port: u16,
    /// `127.0.0.1:port`.
    pub address: String,
    url: String,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// Starts rabbitmq-server on a free loopback port with a random user
    /// (created from a definitions file: no password on any command line), which
    /// may use the default vhost and nothing more: it is not an administrator.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let io = |e: std::io::Error| other(format!("cannot prepare {}: {e}", dir.display()));
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        }
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let defs = crate::broker::definitions(&crate::broker::Credentials {
            user: "fossa".into(),
            password: password.clone(),
        });
        let defs_path = dir.join("definitions.json");
        std::fs::write(&defs_path, defs.to_string()).map_err(io)?;
        let conf = dir.join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!("load_definitions = {}\n", defs_path.display()),
        )
        .map_err(io)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n").map_err(io)?;
        if nix::unistd::geteuid().is_root() {
            // The server runs as the rabbitmq user, which must reach its directory.
            use std::os::unix::fs::PermissionsExt;
            let abs = std::fs::canonicalize(dir).map_err(io)?;
            for parent in abs.ancestors().skip(1) {
                let mode = std::fs::metadata(parent).map_err(io)?.permissions().mode();
                if mode & 0o001 == 0 {
                    return Err(other(format!(
                        "the rabbitmq user cannot enter {} (mode {:o}): run `chmod o+x {}` or choose another --state-dir",
                        parent.display(),
                        mode & 0o777,
                        parent.display()
                    )));
                }
            }
            // The server drops to the rabbitmq user, which must own its files.
            let ok = std::process::Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(other("cannot chown the broker's directory to the rabbitmq user: is rabbitmq-server installed?"));
            }
            let _ = std::fs::set_permissions(&defs_path, std::fs::Permissions::from_mode(0o600));
        }
        let port = free_port().map_err(io)?;
        let dist = free_port().map_err(io)?;
        let epmd_port = free_port().map_err(io)?;
        let node = format!("fossa-{}@localhost", std::process::id());
        let log = std::fs::File::create(dir.join("server.out")).map_err(io)?;
        // Run the server script itself (not Debian's wrapper, whose `su` would
        // take it out of our process group), as the rabbitmq user when root.
        let script = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        let mut cmd = Command::new(if script.exists() {
            script
        } else {
            Path::new("rabbitmq-server")
        });
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("rabbitmq")
                .ok()
                .flatten()
                .ok_or_else(|| other("there is no rabbitmq user: install the Debian package rabbitmq-server, or pass --broker-url"))?;
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .current_dir(&user.dir);
        }
        let child = spawn_group(
            cmd
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODENAME", &node)
                .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", dir.join("log"))
                .env("RABBITMQ_CONFIG_FILE", &conf)
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
                .env("ERL_EPMD_PORT", epmd_port.to_string())
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io)?)
                .stderr(log),
        )
        .map_err(|e| other(format!("cannot start rabbitmq-server ({e}): install the Debian package rabbitmq-server, or pass --broker-url")))?;
        let address = format!("127.0.0.1:{port}");
        let mut broker = LocalBroker {
            child,
            epmd_port,
            url: format!("amqp://fossa:{password}@{address}/%2F"),
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(&broker.address)
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = broker.child.child.try_wait() {
                let out = std::fs::read_to_string(dir.join("server.out")).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect();
                broker.stop().await;
                return Err(other(format!(
                    "rabbitmq-server exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if Instant::now() > deadline {
                broker.stop().await;
                return Err(other(format!(
                    "rabbitmq-server did not listen on {} within 90 s; see {}",
                    broker.address,
                    dir.join("log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(broker)
    }

    /// The AMQP URL with the credentials (a secret: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and the epmd it started.
    pub async fn stop(&mut self) {
        stop_group(&mut self.child, Duration::from_secs(15)).await;
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

// ---------- workers ----------

struct LocalWorker {
    index: u32,
    port: u16,
    child: Group,
    started_at: i64,
    restarts: u32,
}

/// What local workers are started with.
#[derive(Clone)]
pub struct WorkerSpec {
    /// Python that imports Fossa.
    pub python: PathBuf,
    /// The generated node module.
    pub module: PathBuf,
    /// The models directory.
    pub models_dir: PathBuf,
    /// Broker URL (secret; passed in the environment only).
    pub broker_url: String,
    /// Where worker logs go.
    pub logs: PathBuf,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("module", &self.module)
            .field("models_dir", &self.models_dir)
            .finish_non_exhaustive()
    }
}

/// Fossa nodes as local processes, supervised.
pub struct LocalBackend {
    spec: WorkerSpec,
    workers: Mutex<Vec<LocalWorker>>,
    desired: AtomicU32,
    models: StdMutex<Vec<String>>,
    events: Events,
    broker: String,
}

impl LocalBackend {
    /// Starts `n` workers.
    pub async fn start(
        spec: WorkerSpec,
        n: u32,
        models: Vec<String>,
        broker: String,
        events: Events,
    ) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(&spec.logs)
            .map_err(|e| other(format!("cannot create {}: {e}", spec.logs.display())))?;
        let b = Arc::new(LocalBackend {
            spec,
            workers: Mutex::new(Vec::new()),
            desired: AtomicU32::new(n),
            models: StdMutex::new(models),
            events,
            broker,
        });
        b.converge().await?;
        Ok(b)
    }

    fn spawn(&self, index: u32, port: u16) -> Result<Group, Error> {
        let log_path = self.spec.logs.join(format!("worker-{index}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| other(format!("cannot open {}: {e}", log_path.display())))?;
        let err = log.try_clone().map_err(|e| other(e.to_string()))?;
        spawn_group(
            Command::new(&self.spec.python)
                .arg(&self.spec.module)
                .env("RABBITMQ_URL", &self.spec.broker_url)
                .env("FOSSA_HTTP_PORT", port.to_string())
                .env("FOSSA_BIND_ADDRESS", "127.0.0.1")
                .env("FOSSA_MODELS_DIR", &self.spec.models_dir)
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err),
        )
        .map_err(|e| {
            other(format!(
                "cannot start a Fossa worker with {}: {e}",
                self.spec.python.display()
            ))
        })
    }

    /// Starts or stops workers until there are as many as desired.
    async fn converge(&self) -> Result<(), Error> {
        let want = self.desired.load(Ordering::SeqCst) as usize;
        let mut ws = self.workers.lock().await;
        while ws.len() < want {
            let index = (1..)
                .find(|i| ws.iter().all(|w| w.index != *i))
                .expect("a free index");
            let port = free_port().map_err(|e| other(format!("no free port: {e}")))?;
            let child = self.spawn(index, port)?;
            ws.push(LocalWorker {
                index,
                port,
                child,
                started_at: now(),
                restarts: 0,
            });
            self.events.push(
                "workers",
                false,
                format!("started worker local-{index} on 127.0.0.1:{port}"),
            );
        }
        ws.sort_by_key(|w| w.index);
        while ws.len() > want {
            let mut w = ws.pop().expect("non-empty");
            stop_group(&mut w.child, Duration::from_secs(5)).await;
            self.events.push(
                "workers",
                false,
                format!("stopped worker local-{}", w.index),
            );
        }
        Ok(())
    }

    /// Restarts workers whose process ended; reports each.
    pub async fn supervise_once(&self) {
        let mut ws = self.workers.lock().await;
        for w in ws.iter_mut() {
            if let Ok(Some(status)) = w.child.child.try_wait() {
                // Whatever the dead leader left in its group would hold the port.
                stop_group(&mut w.child, Duration::from_millis(500)).await;
                w.restarts += 1;
                self.events.push(
                    "workers",
                    true,
                    format!(
                        "worker local-{} exited ({status}); restarting it (restart {})",
                        w.index, w.restarts
                    ),
                );
                match self.spawn(w.index, w.port) {
                    Ok(child) => {
                        w.child = child;
                        w.started_at = now();
                    }
                    Err(e) => self.events.push(
                        "workers",
                        true,
                        format!("cannot restart local-{}: {e}", w.index),
                    ),
                }
            }
        }
    }

    /// Supervises until shutdown.
    pub async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.supervise_once().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Stops every worker.
    pub async fn stop_all(&self) {
        let mut ws = self.workers.lock().await;
        let stops = ws
            .iter_mut()
            .map(|w| stop_group(&mut w.child, Duration::from_secs(5)));
        futures::future::join_all(stops).await;
        ws.clear();
    }
}

#[async_trait]
impl WorkerBackend for LocalBackend {
    fn mode(&self) -> &'static str {
        "local"
    }

    async fn list(&self) -> Result<Vec<WorkerRef>, String> {
        let ws = self.workers.lock().await;
        Ok(ws
            .iter()
            .map(|w| WorkerRef {
                id: format!("local-{}", w.index),
                address: format!("127.0.0.1:{}", w.port),
                status: "RUNNING".into(),
                started_at: Some(w.started_at),
                capacity_provider: "local".into(),
            })
            .collect())
    }

    fn desired(&self) -> u32 {
        self.desired.load(Ordering::SeqCst)
    }

    async fn scale(&self, workers: u32) -> Result<String, String> {
        if workers > 64 {
            return Err("local mode runs at most 64 workers".into());
        }
        let before = self.desired.swap(workers, Ordering::SeqCst);
        self.converge().await.map_err(|e| e.to_string())?;
        Ok(format!("scaled local workers from {before} to {workers}"))
    }

    async fn rebuild(&self) -> Result<String, String> {
        let n = self.desired.load(Ordering::SeqCst);
        let models = list_models(&self.spec.python, &self.spec.module, &self.spec.models_dir)
            .await
            .map_err(|e| e.to_string())?;
        *self.models.lock().expect("lock") = models.clone();
        self.stop_all().await;
        self.converge().await.map_err(|e| e.to_string())?;
        Ok(format!(
            "restarted {n} local workers with models {}",
            models.join(", ")
        ))
    }

    fn models(&self) -> Vec<String> {
        self.models.lock().expect("lock").clone()
    }

    fn components(&self) -> [Component; 3] {
        [
            Component {
                ok: true,
                detail: format!("RabbitMQ at {}", self.broker),
            },
            Component {
                ok: true,
                detail: "not needed in local mode: workers run on this machine".into(),
            },
            Component {
                ok: true,
                detail: format!(
                    "local Python with {FOSSA_REQUIREMENT}, models from {}",
                    self.spec.models_dir.display()
                ),
            },
        ]
    }
}

// ---------- the command ----------

/// `fossa-agent local`.
pub async fn run(args: &LocalArgs) -> Result<(), Error> {
    let started = Instant::now();
    // A weak chosen password fails before anything starts.
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            fossa_contract::limits::check_password(PASSWORD_ENV, &p)
                .map_err(|e| other(e.to_string()))?;
        }
    }
    let state = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let events = Events::default();
    let (module, models_dir) = prepare_files(&state, args.models.as_deref())?;
    let python = ensure_python(&args.python, &state).await?;
    let models = list_models(&python, &module, &models_dir).await?;
    let mut broker = None;
    let (broker_url, broker_label) = match &args.broker_url {
        Some(u) => (u.clone(), "the given --broker-url".to_owned()),
        None => {
            eprintln!("starting RabbitMQ…");
            let b = LocalBroker::start(&state.join("rabbitmq")).await?;
            let r = (b.url().to_owned(), b.address.clone());
            broker = Some(b);
            r
        }
    };
    let spec = WorkerSpec {
        python,
        module,
        models_dir,
        broker_url,
        logs: state.join("logs"),
    };
    let backend = match LocalBackend::start(
        spec,
        args.workers,
        models.clone(),
        broker_label,
        events.clone(),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            if let Some(b) = broker.as_mut() {
                b.stop().await;
            }
            return Err(e);
        }
    };
    let fleet = FleetModel::new(
        backend.clone(),
        events.clone(),
        "local",
        PollSettings {
            interval: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let poller = tokio::spawn(fleet.clone().run(shutdown_rx.clone()));
    let supervisor = tokio::spawn(backend.clone().supervise(shutdown_rx.clone()));

    let result = serve_ui(args, &state, fleet.clone(), &events, started).await;

    eprintln!("stopping workers and the broker…");
    shutdown_tx.send_replace(true);
    let _ = tokio::join!(poller, supervisor);
    backend.stop_all().await;
    if let Some(b) = broker.as_mut() {
        b.stop().await;
    }
    eprintln!("stopped; nothing left running.");
    result
}

async fn serve_ui(
    args: &LocalArgs,
    state: &Path,
    fleet: Arc<FleetModel>,
    events: &Events,
    started: Instant,
) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !args.listen.ip().is_unspecified() {
        names.push(args.listen.ip().to_string());
    }
    let cert = tls::load_or_create(&state.join("tls"), &names)
        .map_err(|e| other(format!("{:#}", anyhow::Error::from(e))))?;
    let cookie_key = tls::cookie_key(&state.join("tls"))
        .map_err(|e| other(format!("{:#}", anyhow::Error::from(e))))?;
    let (password, generated) = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (Alphanumeric.sample_string(&mut rand::rng(), 20), true),
    };
    let config = fossa_web::WebConfig {
        listen: args.listen,
        password: password.clone(),
        cookie_key,
        tls: Some((cert.cert_pem.clone(), cert.key_pem.clone())),
        session_state_file: Some(state.join("tls/session-state")),
        after_hashing: Some(crate::memory::release),
    };
    let rocket = fossa_web::build(config, fleet.clone())
        .ignite()
        .await
        .map_err(|e| {
            other(format!(
                "cannot start the web UI on {}: {}",
                args.listen,
                fossa_web::explain(&e)
            ))
        })?;
    let shutdown = rocket.shutdown();
    let server = tokio::spawn(rocket.launch());
    // Wait until the UI listens before printing where it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(args.listen).await.is_err() {
        if server.is_finished() || Instant::now() > deadline {
            return Err(other(format!(
                "the web UI did not start on {}: is the address in use?",
                args.listen
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let host = if args.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        args.listen.ip().to_string()
    };
    println!(
        "fossa-gateway local mode is up with {} workers.",
        args.workers
    );
    println!("  URL:      https://{host}:{}/", args.listen.port());
    println!("  user:     fossa");
    if generated {
        println!("  password: {password}");
    } else {
        println!("  password: from {PASSWORD_ENV}");
    }
    println!("  TLS certificate SHA-256: {}", cert.fingerprint);
    println!("  models:   {}", fleet.snapshot().models.join(", "));
    println!("Press Ctrl-C to stop everything.");
    events.push(
        "agent",
        false,
        format!("local mode started with {} workers", args.workers),
    );

    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| other(format!("cannot handle SIGINT: {e}")))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| other(format!("cannot handle SIGTERM: {e}")))?;
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
                    if ready as u32 >= args.workers {
                        announced = true;
                        let msg = format!("all {} workers ready in {:.1}s", args.workers, started.elapsed().as_secs_f64());
                        println!("{msg}");
                        events.push("agent", false, msg);
                    }
                }
                if server.is_finished() {
                    return Err(other("the web UI stopped unexpectedly"));
                }
            }
        }
    }
    shutdown.notify();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
