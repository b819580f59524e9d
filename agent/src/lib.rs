//! `fossa-agent`: the self-hosted gateway agent.
//!
//! On the gateway instance (`run`) it reconciles its duties in a loop: NAT
//! ([`nat`]), the broker, the worker image and the Fargate cluster, and serves
//! the web UI. `local` runs the same UI over Fossa workers on this machine.
//! Host calls go through [`exec::Executor`] so duties are testable with a fake.

pub mod cli;
pub mod duties;
pub mod events;
pub mod fleet;
pub mod fossa;
pub mod history;
pub mod host;
pub mod local;
pub mod memory;
pub mod service;
pub mod settings;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod ui;

use fossa_contract::aws::{AwsError, SettingsError};
use fossa_contract::config::ConfigError;

use crate::cli::{Cli, Command, NatAction};
use crate::duties::nat;
use crate::host::exec;

/// Everything that can stop an agent command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// AWS settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// NAT could not be set up.
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    /// The settings could not be loaded.
    #[error(transparent)]
    Load(#[from] settings::LoadError),
    /// A file, socket, signal or process step failed: what was being done,
    /// and the I/O error under it.
    #[error("{what}")]
    Io {
        /// What was being done (`cannot write /x`).
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The UI's certificate or cookie key could not be made or read.
    #[error(transparent)]
    Tls(#[from] crate::host::tls::TlsError),
    /// A chosen UI password is too weak.
    #[error(transparent)]
    WeakPassword(#[from] fossa_contract::limits::WeakPassword),
    /// Autoscaling bounds that cannot hold.
    #[error(transparent)]
    Autoscale(#[from] fossa_contract::config::AutoscaleError),
    /// The worker image could not be built.
    #[error(transparent)]
    Image(#[from] crate::duties::image::ImageError),
    /// Docker could not be used (local mode's containers).
    #[error("{hint}")]
    Docker {
        /// What to check.
        hint: &'static str,
        /// The engine's error.
        #[source]
        source: crate::host::docker::DockerError,
    },
    /// The web UI could not start (`fossa_web::explain` says why).
    #[error("cannot start the web UI on {listen}: {why}")]
    Web {
        /// Where it was to listen.
        listen: std::net::SocketAddr,
        /// Why it could not.
        why: String,
    },
    /// This machine lacks something, or a part stopped: what is wrong and
    /// what to do, with no error under it.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// An I/O error under `what` was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Runs one command and returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8, Error> {
    memory::tune();
    match cli.command {
        Command::Run(args) => service::run(&args.config).await.map(|()| 0),
        Command::Nat(args) => {
            let cidrs = if args.private_cidrs.is_empty() {
                settings::private_cidrs(&args.config).await?
            } else {
                args.private_cidrs.clone()
            };
            let host = exec::Host;
            let plan = nat::NatPlan {
                ui_uid: ui::confine::Account::for_ui().map(|a| a.uid),
                ..nat::plan(&host, &cidrs, args.egress_interface.as_deref())?
            };
            match args.action {
                NatAction::Apply => {
                    let applied = nat::apply(&host, &plan)?;
                    for a in &applied.added {
                        println!("added   {a}");
                    }
                    println!(
                        "NAT complete via {} for {} private CIDR(s)",
                        plan.egress,
                        plan.cidrs.len()
                    );
                    Ok(0)
                }
                NatAction::Check => {
                    let pieces = nat::check(&host, &plan)?;
                    for p in &pieces {
                        println!(
                            "{:<8} {}",
                            if p.present { "present" } else { "MISSING" },
                            p.what
                        );
                    }
                    Ok(if pieces.iter().all(|p| p.present) {
                        0
                    } else {
                        1
                    })
                }
                NatAction::Remove => {
                    for r in nat::remove(&host, &plan)? {
                        println!("removed {r}");
                    }
                    Ok(0)
                }
            }
        }
        Command::Local(args) => local::run(&args).await.map(|()| 0),
        Command::Build(args) => {
            println!("{}", service::build_once(&args.config).await?);
            Ok(0)
        }
        // main() runs it before any runtime exists: it must confine itself first.
        Command::UiServe(_) => Ok(2),
    }
}
