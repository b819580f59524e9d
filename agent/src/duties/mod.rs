//! Duties: what the gateway agent keeps true. Each is a [`Duty`], a
//! `reconcile` step that reads the current settings and makes the world match
//! them; the [`driver::Driver`] runs every duty in its own loop, again after
//! its period, after a failure with backoff, and at once when something it
//! watches changes. Duties hand results to each other over the `watch`
//! channels in [`Shared`] (the image reference reaches the cluster duty there).
//!
//! Adding a duty is one file here and one line in [`gateway`], where its
//! [`Registration`] (name, title, period) is declared; the name and title of
//! a duty `agent.toml` lists come from [`DutyKind`] in the contract.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod driver;
pub mod image;
pub mod lease;
pub mod liveness;
pub mod nat;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fossa_contract::aws::AwsError;
pub use fossa_contract::config::Duty as DutyKind;
use tokio::sync::watch;

use crate::events::Events;
use crate::host::exec::Executor;
use crate::settings::Settings;

/// What one reconcile found, and when to look again (kube-rs's `Action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One line about what was done or found; an event whenever it changes.
    pub summary: String,
    /// More beside the summary (NAT's egress self-test, the broker's login):
    /// always on the overview; in an event only when the summary or health changed.
    pub detail: Option<String>,
    /// Whether the component is well. A reconcile can succeed and still find
    /// it unwell (NAT's rules are in place, yet the uplink does not answer).
    pub healthy: bool,
    /// When to run again.
    pub next: Next,
}

/// When the driver runs a duty again after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// After the duty's period.
    Period,
    /// After this long.
    After(Duration),
    /// Only when something it watches changes (or the settings do).
    Change,
}

impl Outcome {
    /// Done, and the component is well.
    pub fn done(summary: impl Into<String>) -> Self {
        Outcome {
            summary: summary.into(),
            detail: None,
            healthy: true,
            next: Next::Period,
        }
    }

    /// Nothing to do until an input arrives (the cluster duty before the first image).
    pub fn waiting(summary: impl Into<String>) -> Self {
        Outcome {
            summary: summary.into(),
            detail: None,
            healthy: false,
            next: Next::Change,
        }
    }

    /// With more for the overview, and whether that leaves the component well.
    pub fn with_detail(mut self, healthy: bool, detail: impl Into<String>) -> Self {
        self.healthy = healthy;
        self.detail = Some(detail.into());
        self
    }
}

/// A duty's name, title and period, declared once, where it is registered
/// (omicron's background tasks are registered the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// Its key in events, status and the API (`nat`).
    pub name: &'static str,
    /// Its label on the overview (`NAT`).
    pub title: &'static str,
    /// Time between runs while it is well.
    pub period: Duration,
    /// How long one run may go without a result before the board shows it
    /// as stuck: three periods, at least two minutes, unless registered
    /// otherwise ([`Registration::hung_after`]).
    pub hung_after: Duration,
    /// How long one run may go without a result before the driver drops it
    /// and counts a failure, so no duty waits for ever on a call that has
    /// no limit of its own: twice [`Registration::hung_after`].
    pub give_up_after: Duration,
    /// It changes the stack (AWS resources, the queue, the fleet's size),
    /// so it runs only while this agent holds the lease ([`lease`]).
    pub acts: bool,
}

impl Registration {
    /// A duty named `name`, shown as `title`, run every `period`.
    pub fn new(name: &'static str, title: &'static str, period: Duration) -> Self {
        let hung_after = (period * 3).max(Duration::from_secs(120));
        Registration {
            name,
            title,
            period,
            hung_after,
            give_up_after: hung_after * 2,
            acts: false,
        }
    }

    /// A duty that changes the stack: it waits while another agent holds
    /// the lease.
    pub fn acts(self) -> Self {
        Registration { acts: true, ..self }
    }

    /// A duty one of whose runs may rightly take up to `d` (an image build).
    pub fn hung_after(self, d: Duration) -> Self {
        Registration {
            hung_after: d,
            give_up_after: d * 2,
            ..self
        }
    }

    /// The duty of `kind` (`agent.toml`'s list), run every `period`.
    pub fn of(kind: DutyKind, period: Duration) -> Self {
        Registration::new(kind.name(), kind.title(), period)
    }
}

/// One thing the agent keeps true. `C` is what it reads (the agent's
/// [`Settings`]; local mode's `()`; a unit test's own type).
#[async_trait]
pub trait Duty<C: Send + Sync + 'static>: Send + 'static {
    /// Makes the world match `ctx`.
    async fn reconcile(&mut self, ctx: &C) -> Result<Outcome, DutyError>;
    /// Resolves when an input it watches changed (another duty's output, a
    /// button in the UI), so it runs at once. By default nothing does.
    async fn changed(&mut self) {
        std::future::pending::<()>().await
    }
}

/// Why a duty's reconcile failed. The driver alone renders the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum DutyError {
    /// NAT.
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    /// The broker.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The worker image.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The cluster.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// An AWS call outside the duties' own modules.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The web UI's process could not be started again.
    #[error(transparent)]
    Ui(#[from] crate::ui::UiError),
    /// The upgrade duty could not check or stage a binary.
    #[error("cannot upgrade the agent")]
    Upgrade(#[source] crate::host::upgrade::UpgradeError),
    /// New settings could not be loaded (the old ones stay in force).
    #[error(transparent)]
    Load(#[from] crate::settings::LoadError),
    /// A blocking step died before it returned.
    #[error("the {what} step stopped before it finished")]
    Blocking {
        /// Which step.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The run gave no result within its registration's limit and was dropped.
    #[error("the step gave no result within {0:?} and was abandoned (an AWS call, a build or a host command that does not answer); it is tried again")]
    Abandoned(Duration),
    /// The reconcile panicked (a bug); the driver tries again after its backoff.
    #[error("the step panicked: {0}")]
    Panicked(String),
    /// A file or process on this host.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// The worker image the image duty last built or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerImage {
    /// `host/repo:tag`.
    pub reference: String,
    /// Model classes in it.
    pub models: Vec<String>,
}

/// What duties share with each other and with the UI: the host, the events
/// and the `watch` channels between them. Every handle is cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// Commands and files on this host.
    pub exec: Arc<dyn Executor>,
    /// The agent's events.
    pub events: Events,
    /// The image duty's product; the cluster duty and the UI watch it.
    pub image: Arc<watch::Sender<Option<WorkerImage>>>,
    /// Bumped by the UI's rebuild button; the image duty watches it.
    pub rebuild: Arc<watch::Sender<u64>>,
    /// The service's desired workers, as the cluster duty or a scale last set it.
    pub desired: Arc<watch::Sender<Option<u32>>>,
    /// The bytes forwarded through NAT, as the NAT duty last counted them.
    pub nat_traffic: Arc<watch::Sender<nat::traffic::NatTraffic>>,
    /// Secrets worker logs may print (the broker's URL and password), so
    /// the log readers can replace them; the broker duty fills it.
    pub secrets: Arc<watch::Sender<Vec<String>>>,
    /// Worker tasks Fargate Spot took back lately; the cluster duty fills
    /// it and the workers list shows them.
    pub interrupted: Arc<watch::Sender<Vec<cluster::stopped_tasks::StoppedTask>>>,
    /// Each duty's recoveries, as the driver counts them; the cluster duty
    /// reads them to know when a failed deployment is worth another.
    pub recoveries: Arc<driver::Recoveries>,
}

impl Shared {
    /// Fresh channels over `exec`.
    pub fn new(exec: Arc<dyn Executor>, events: Events) -> Self {
        Shared {
            exec,
            events,
            image: Arc::new(watch::Sender::new(None)),
            rebuild: Arc::new(watch::Sender::new(0)),
            desired: Arc::new(watch::Sender::new(None)),
            nat_traffic: Arc::new(watch::Sender::new(Default::default())),
            secrets: Arc::new(watch::Sender::new(Vec::new())),
            interrupted: Arc::new(watch::Sender::new(Vec::new())),
            recoveries: Arc::default(),
        }
    }
}

/// The registry: the duty of each kind `agent.toml` can list, with its period.
pub fn gateway(kind: DutyKind, shared: &Shared) -> (Registration, Box<dyn Duty<Settings>>) {
    let every = |secs| Registration::of(kind, Duration::from_secs(secs));
    match kind {
        DutyKind::Nat => (every(30), Box::new(nat::NatDuty::new(shared))),
        DutyKind::Broker => (every(10), Box::new(broker::BrokerDuty::new(shared))),
        // A first build installs Fossa with pip: many minutes, not stuck.
        DutyKind::Image => (
            every(60).hung_after(Duration::from_secs(45 * 60)).acts(),
            Box::new(image::ImageDuty::new(shared)),
        ),
        DutyKind::Cluster => (
            every(30).acts(),
            Box::new(cluster::ClusterDuty::new(shared)),
        ),
        DutyKind::Upgrade => (
            every(fossa_contract::limits::CONFIG_CHECK_SECS),
            Box::new(upgrade::UpgradeDuty::new(crate::fleet::this_agent().sha256)),
        ),
    }
}

/// What a duty that makes AWS resources says while `destroy` runs: it makes
/// nothing, so what destroy deletes stays deleted.
pub(crate) fn standing_down(s: &Settings) -> Option<Outcome> {
    s.stack
        .destroying
        .then(|| Outcome::waiting("the stack is being destroyed: standing down"))
}

/// Waits for a change on `rx`; never resolves once its sender is gone.
pub(crate) async fn watched<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
