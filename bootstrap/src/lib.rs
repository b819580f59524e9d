//! `fossa-bootstrap`: the tool a user runs once from a laptop.
//!
//! `launch` creates only what the gateway instance needs to start (VPC,
//! subnets, security groups, IAM roles, the artifact bucket, SSM parameters
//! and the instance); the agent on the instance creates the rest. `destroy`
//! removes everything tagged with the stack, including what the agent made.
//! Every step finds its resource by tag first, so re-running finishes an
//! interrupted launch and a second launch creates nothing.

pub mod agent_api;
pub mod agent_build;
pub mod aws;
pub mod cli;
pub mod clients;
pub mod destroy;
pub use fossa_contract::elf;
pub mod inventory;
pub mod launch;
pub mod plan;
pub mod progress;
pub mod userdata;

use std::path::PathBuf;

use fossa_contract::aws::{AwsError, SettingsError};

use crate::cli::{Cli, Command};

/// Everything that can stop a bootstrap command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Region or profile settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A local file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent binary is unusable.
    #[error("--agent-binary {path}: {source}")]
    AgentBinary {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: elf::ElfError,
    },
    /// The agent could not be built from the source tree.
    #[error("cannot build the agent for the instance")]
    AgentBuild(#[from] agent_build::BuildError),
    /// Standard output could not be written.
    #[error("cannot write the output")]
    Write {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A request the user must change.
    #[error("{0}")]
    Usage(String),
    /// AWS answered in a way the stack cannot work with.
    #[error("{0}")]
    Unexpected(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs one command; output for people goes to stdout, progress to stderr.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Launch(args) => launch::run(&args).await,
        Command::Plan(args) => plan::run(&args).await,
        Command::Status(args) => inventory::status(&args).await,
        Command::Destroy(args) => destroy::run(&args).await,
        Command::Password(args) if args.metrics_token && args.rotate => {
            launch::rotate_metrics_token(&args.stack).await
        }
        Command::Password(args) if args.rotate => launch::rotate_password(&args.stack).await,
        Command::Password(args) => launch::print_secret(&args.stack, args.metrics_token).await,
        Command::Scale(args) => launch::scale(&args).await,
    }
}
