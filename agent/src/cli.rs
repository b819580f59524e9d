//! Command-line interface of `fossa-agent` (parsed in `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fossa_contract::config::DEFAULT_AGENT_TOML;
use ipnet::Ipv4Net;

/// The fossa-gateway agent.
#[derive(Debug, Parser)]
#[command(name = "fossa-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent service on the gateway instance (what systemd starts).
    Run(RunArgs),
    /// Apply, check or remove the NAT rules once (the service applies them on every loop).
    Nat(NatArgs),
    /// Build and push the worker image once and print its reference.
    Build(RunArgs),
    /// Run the agent, the UI and real Fossa workers on this machine, without AWS.
    Local(LocalArgs),
    /// The web UI's own unprivileged process, started by `run` and `local`.
    #[command(hide = true)]
    UiServe(crate::ui::child::UiServeArgs),
}

/// `run` and `build` arguments.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The agent's TOML file (written by user-data).
    #[arg(long, default_value = DEFAULT_AGENT_TOML, value_name = "PATH")]
    pub config: PathBuf,
}

/// What `nat` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NatAction {
    /// Add what is missing and verify.
    Apply,
    /// Report each piece as present or missing (exit 1 if any is missing).
    Check,
    /// Delete exactly what apply adds.
    Remove,
}

/// `nat` arguments.
#[derive(Debug, Clone, Args)]
pub struct NatArgs {
    /// apply, check or remove.
    #[arg(value_enum)]
    pub action: NatAction,
    /// A private subnet to NAT (repeatable; default: the stack's private subnets from SSM).
    #[arg(long = "private-cidr", value_name = "CIDR")]
    pub private_cidrs: Vec<Ipv4Net>,
    /// Interface towards the internet (default: the default route's).
    #[arg(long, value_name = "IF")]
    pub egress_interface: Option<String>,
    /// The agent's TOML file, read when no --private-cidr is given.
    #[arg(long, default_value = DEFAULT_AGENT_TOML, value_name = "PATH")]
    pub config: PathBuf,
}

/// `local` arguments.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Number of Fossa workers to start (default 3; with --max-workers, --min-workers).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// Autoscale: start workers as work waits, up to this many.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub max_workers: Option<u32>,
    /// Autoscale: the fewest workers kept (0: none while idle). Needs --max-workers.
    #[arg(
        long,
        allow_negative_numbers = true,
        requires = "max_workers",
        value_name = "N"
    )]
    pub min_workers: Option<u32>,
    /// Autoscale: seconds with nothing running or waiting before the fleet
    /// shrinks to --min-workers.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_window: u64,
    /// A directory of Aye-Aye models (default: the built-in example models).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Address of the web UI.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Use this RabbitMQ instead of starting one (amqp://user:pass@host:port),
    /// from the environment: a password on the command line is readable by
    /// every user of this machine (`ps`), so `--broker-url` takes none.
    #[arg(
        long,
        value_name = "URL",
        env = "FOSSA_BROKER_URL",
        hide_env_values = true
    )]
    pub broker_url: Option<String>,
    /// Python interpreter to create the Fossa venv with.
    #[arg(long, default_value = "python3", value_name = "PATH")]
    pub python: PathBuf,
    /// Where local mode keeps its venv, broker data, certificate and logs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run the workers as containers of the worker image, built from the models
    /// as the gateway builds it (needs Docker), instead of Python processes.
    #[arg(long)]
    pub containers: bool,
    /// Base image of the worker image with --containers (default: the gateway's).
    #[arg(long, value_name = "IMAGE", requires = "containers")]
    pub base_image: Option<String>,
    /// Submissions that may wait for a free slot; one more gets HTTP 429.
    #[arg(long, allow_negative_numbers = true, default_value_t = fossa_contract::limits::QUEUE_MAX, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub queue_max: u32,
    /// Times a task sent through the gateway is submitted again when it is
    /// lost with its worker (its node died, so it can never finish); 0: never.
    #[arg(long, default_value_t = fossa_contract::limits::PARENT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub parent_retries: u32,
}
