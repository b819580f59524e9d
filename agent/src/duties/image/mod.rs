//! The worker image duty: a build context assembled in code (Dockerfile on a
//! pinned base, pinned Fossa, the user's models or the built-in ones, and the
//! generated node module), tagged with a hash of the context. When the
//! registry already holds that tag nothing is built; otherwise the image is
//! built with bollard, its log streamed to the agent's log and events, and
//! pushed with credentials from ECR's GetAuthorizationToken (fetched per push,
//! never logged).

mod context;
mod models;
mod prune;
mod registry;
mod smoke;

pub use context::{
    context, dockerfile, example_models, has_requirements, model_classes, read_models_dir, tag,
    unpack_models, ModelFile,
};
pub use models::ModelsCache;
pub use registry::{ensure_repository, registry_auth, RegistryAuth};

use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bollard::Docker;
use fossa_contract::aws::AwsError;
use fossa_contract::config::Timeouts;
use fossa_contract::networks::{self, ContainerNetwork};
use fossa_contract::StackName;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{watched, Duty, DutyError, Outcome, Shared, WorkerImage};
use crate::events::Events;
use crate::host::docker::{next_within, DockerError};
use crate::settings::Settings;

/// Repository of local mode's worker images (`fossa-agent local --containers`).
pub const LOCAL_REPOSITORY: &str = "fossa-local-worker";
/// How many lines of build output an error quotes from.
const BUILD_TAIL: usize = 20;
/// How many images the ECR lifecycle policy keeps.
pub const KEEP_IMAGES: u32 = 10;

/// Why the image duty failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Docker refused or failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// ECR's authorization token is not what ECR documents.
    #[error("ECR returned an unusable authorization token: {0}")]
    Token(&'static str),
    /// A request could not be built.
    #[error("cannot build the {what} request")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: aws_smithy_types::error::operation::BuildError,
    },
    /// The base image is not the one pinned at its first use.
    #[error(transparent)]
    Pin(#[from] crate::host::pins::PinError),
    /// The built image failed its smoke test; nothing was pushed.
    #[error("the image {reference} was not pushed: its node did not start: {problem}")]
    Smoke {
        /// The local image.
        reference: String,
        /// What went wrong (file and line of a model that does not import).
        problem: String,
    },
    /// The disk the image would be built on is nearly full.
    #[error("the gateway's disk holding {path} is {percent} % full; image builds are refused from {limit} %: free space (docker image prune, old logs) or give the gateway a larger data volume")]
    DiskFull {
        /// Docker's data directory.
        path: String,
        /// How full.
        percent: u8,
        /// The refusal threshold.
        limit: u8,
    },
    /// The models tarball is not the one launch uploaded.
    #[error("the models tarball in the artifact bucket has SHA-256 {got}, not the {expected} launch recorded in the stack config: someone else wrote it, so it is not built; re-run fossa-bootstrap launch --models DIR to upload yours again")]
    ModelsHash {
        /// The hash in the stack config.
        expected: String,
        /// The downloaded archive's.
        got: String,
    },
    /// The models tarball is unusable.
    #[error("the models tarball in the artifact bucket is unusable: {0}; re-run fossa-bootstrap launch --models DIR")]
    Models(String),
}

/// What the image duty produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `host/repo:tag`.
    pub reference: String,
    /// Whether this reconcile built and pushed it (false: the registry had it).
    pub built: bool,
    /// Model classes in the image.
    pub models: Vec<String>,
}

/// Where the image goes: the stack's repository, in ECR or in `registry`.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The stack, whose repository it is.
    pub stack: &'a StackName,
    /// `host:port` of a registry instead of ECR's.
    pub registry: Option<&'a str>,
}

/// Builds and pushes the image unless the registry already has its tag.
pub async fn reconcile(
    docker: &Docker,
    ecr: &aws_sdk_ecr::Client,
    Destination { stack, registry }: Destination<'_>,
    base: &str,
    models: &[ModelFile],
    env: BuildEnv,
    events: &Events,
) -> Result<Built, ImageError> {
    ensure_repository(ecr, stack).await?;
    let ctx = context(base, models);
    let tag = tag(&ctx);
    let auth = registry_auth(ecr, registry).await?;
    let repo = format!("{}/{}", auth.host, stack.ecr_repository());
    let reference = format!("{repo}:{tag}");
    let classes = model_classes(models);
    if docker
        .inspect_registry_image(&reference, Some(auth.credentials()))
        .await
        .is_ok()
    {
        return Ok(Built {
            reference,
            built: false,
            models: classes,
        });
    }
    let build = Build {
        reference: &reference,
        base,
        models,
        classes: &classes,
        env,
    };
    build_checked(docker, &build, ctx, events).await?;
    let auth = registry_auth(ecr, registry).await?;
    let push = PushImageOptionsBuilder::default().tag(&tag).build();
    let mut stream = docker.push_image(&repo, Some(push), Some(auth.credentials()));
    let quiet = env.timeouts.push_quiet();
    while let Some(info) = next_within(&mut stream, "push", quiet).await? {
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(DockerError::Reported {
                what: "push",
                message: e,
            }
            .into());
        }
    }
    events.push("image", false, format!("pushed {reference}"));
    fossa_contract::fault::exit_at(fossa_contract::fault::Point::ImagePushed);
    prune::prune(docker, &repo, events).await;
    Ok(Built {
        reference,
        built: true,
        models: classes,
    })
}

/// Refuses a build on a nearly full disk (Docker's data directory, read
/// from the daemon), and says when it is getting full. A daemon that does
/// not say where its data is, or a directory this process cannot see
/// (another mount namespace), is not checked.
async fn room_to_build(docker: &Docker, events: &Events) -> Result<(), ImageError> {
    let Some(root) = docker.info().await.ok().and_then(|i| i.docker_root_dir) else {
        return Ok(());
    };
    let Ok(used) = crate::host::disk::used_percent(std::path::Path::new(&root)) else {
        return Ok(());
    };
    match crate::host::disk::room(used) {
        crate::host::disk::Room::Fine => Ok(()),
        crate::host::disk::Room::Low(p) => {
            events.push(
                "image",
                true,
                format!(
                    "the gateway's disk holding {root} is {p} % full; builds are refused from {} %",
                    fossa_contract::limits::DISK_REFUSE_PERCENT
                ),
            );
            Ok(())
        }
        crate::host::disk::Room::Full(percent) => Err(ImageError::DiskFull {
            path: root,
            percent,
            limit: fossa_contract::limits::DISK_REFUSE_PERCENT,
        }),
    }
}

/// Where a build's `RUN` steps are networked, and how long it and its push
/// may go without a word.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildEnv {
    /// The build's network.
    pub network: ContainerNetwork,
    /// `agent.toml`'s `[timeouts]`.
    pub timeouts: Timeouts,
}

/// One image to build: its tag, what it is made of, what it must serve and
/// where and how it is built.
struct Build<'a> {
    reference: &'a str,
    base: &'a str,
    models: &'a [ModelFile],
    classes: &'a [String],
    env: BuildEnv,
}

/// Builds `ctx` as `b.reference` and smoke-tests it against `b.classes`;
/// the build is an event.
async fn build_checked(
    docker: &Docker,
    b: &Build<'_>,
    ctx: Vec<u8>,
    events: &Events,
) -> Result<(), ImageError> {
    room_to_build(docker, events).await?;
    events.push(
        "image",
        false,
        format!(
            "building {} from {} with {} model file(s)",
            b.reference,
            b.base,
            b.models.len()
        ),
    );
    build_context(docker, b.reference, ctx, b.env).await?;
    smoke::check(docker, b.reference, b.classes).await
}

/// Builds `context` as `reference`, its log streamed to the agent's log;
/// a failed build says what pip (or the step) printed last.
async fn build_context(
    docker: &Docker,
    reference: &str,
    ctx: Vec<u8>,
    env: BuildEnv,
) -> Result<(), ImageError> {
    let network = env.network;
    // On the gateway, RUN steps (whatever a models requirements.txt
    // installs) run on the build bridge: out to PyPI through NAT, never to
    // the instance metadata service, the gateway or the workers
    // (`fossa_contract::networks`, the NAT duty's rules).
    if network == ContainerNetwork::Isolated {
        crate::host::docker::ensure_network(docker, &networks::BUILD).await?;
    }
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(reference)
        .rm(true)
        .forcerm(true)
        .networkmode(network.mode(networks::BUILD))
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(ctx))),
    );
    // The last lines of the build's output: pip says why it failed there,
    // while the engine's own error only gives the exit code.
    let mut tail = std::collections::VecDeque::with_capacity(BUILD_TAIL);
    let quiet = env.timeouts.build_quiet();
    while let Some(info) = next_within(&mut stream, "build", quiet).await? {
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            let said = crate::fossa::python_error_summary(&Vec::from(tail).join("\n"));
            return Err(DockerError::Reported {
                what: "build",
                message: format!("{e}; its output ended: {said}"),
            }
            .into());
        }
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            tracing::info!(target: "fossa_agent::image::build", "{line}");
            if tail.len() == BUILD_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
    Ok(())
}

/// Local mode's worker image: the same context and build as the image duty's,
/// tagged `fossa-local-worker:<hash>` in this machine's Docker, smoke-tested,
/// never pushed. An image already there is reused.
pub async fn build_local(
    docker: &Docker,
    base: &str,
    models: &[ModelFile],
    events: &Events,
) -> Result<Built, ImageError> {
    let ctx = context(base, models);
    let reference = format!("{LOCAL_REPOSITORY}:{}", tag(&ctx));
    let classes = model_classes(models);
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(Built {
            reference,
            built: false,
            models: classes,
        });
    }
    // Local mode's containers run on this machine's network, and so do
    // its builds: no gateway role to protect here, no NAT duty to fence a
    // bridge.
    let build = Build {
        reference: &reference,
        base,
        models,
        classes: &classes,
        env: BuildEnv {
            network: ContainerNetwork::Host,
            timeouts: Timeouts::default(),
        },
    };
    build_checked(docker, &build, ctx, events).await?;
    Ok(Built {
        reference,
        built: true,
        models: classes,
    })
}

/// The image duty's work once: models from the bucket (through `cache`), then
/// build and push unless the registry has the tag.
pub async fn build(
    s: &Settings,
    cache: &mut ModelsCache,
    events: &Events,
) -> Result<Built, ImageError> {
    let c = &s.clients;
    let models = cache
        .load(
            &c.s3,
            &s.stack.bucket,
            &s.stack.account_id,
            s.stack.has_models,
            s.stack.models_sha256.as_deref(),
        )
        .await?;
    let docker = crate::host::docker::connect().await?;
    let configured = s
        .toml
        .base_image
        .as_deref()
        .unwrap_or(fossa_contract::names::images::DEFAULT_BASE);
    let base =
        crate::host::pins::resolve(&docker, &s.toml.state_dir, configured, events, "image").await?;
    reconcile(
        &docker,
        &c.ecr,
        Destination {
            stack: &s.toml.stack,
            registry: s.toml.registry.as_deref(),
        },
        &base,
        &models,
        BuildEnv {
            network: s.toml.container_network,
            timeouts: s.toml.timeouts,
        },
        events,
    )
    .await
}

/// The image duty: keeps the registry holding the image of the current
/// models, and publishes its reference for the cluster duty and the UI.
pub struct ImageDuty {
    cache: ModelsCache,
    events: Events,
    image: Arc<watch::Sender<Option<WorkerImage>>>,
    rebuild: watch::Receiver<u64>,
}

impl ImageDuty {
    /// The duty, publishing into `shared`'s image and woken by its rebuild button.
    pub fn new(shared: &Shared) -> Self {
        ImageDuty {
            cache: ModelsCache::default(),
            events: shared.events.clone(),
            image: shared.image.clone(),
            rebuild: shared.rebuild.subscribe(),
        }
    }
}

#[async_trait]
impl Duty<Settings> for ImageDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        if let Some(o) = super::standing_down(s) {
            return Ok(o);
        }
        let built = build(s, &mut self.cache, &self.events).await?;
        let image = WorkerImage {
            reference: built.reference.clone(),
            models: built.models,
        };
        // Only a new reference wakes the cluster duty.
        self.image.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&image);
            *current = Some(image);
            changed
        });
        Ok(Outcome::done(if built.built {
            format!("built and pushed {}", built.reference)
        } else {
            format!("{} is up to date", built.reference)
        }))
    }
    async fn changed(&mut self) {
        watched(&mut self.rebuild).await
    }
}
