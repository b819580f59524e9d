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
    /// Something else, with its explanation.
    #[error("{0}")]
    Other(String),
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
            let plan = nat::plan(&host, &cidrs, args.egress_interface.as_deref())?;
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
    }
}
