//! What every duty reads, replaced as a whole on reload: `agent.toml`, the
//! stack config from SSM and the AWS clients, built once per load from the
//! one `SdkConfig`.

use std::path::Path;

use aws_config::SdkConfig;
use fossa_contract::aws::{sdk_config, AwsSettings};
use fossa_contract::config::{AgentToml, StackConfig};
use fossa_contract::{counted_client, ssm};
use ipnet::Ipv4Net;

use fossa_contract::aws::{AwsError, SettingsError};
use fossa_contract::config::ConfigError;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `agent.toml` is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The AWS settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// SSM could not be read.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The stack config holds a CIDR that does not parse.
    #[error("the stack config holds a bad CIDR {0:?}; re-run fossa-bootstrap launch")]
    BadCidr(String),
}

impl LoadError {
    /// Whether retrying cannot help: the file or the settings themselves are wrong.
    pub fn is_permanent(&self) -> bool {
        matches!(self, LoadError::Config(_) | LoadError::Settings(_))
    }
}

/// Everything a duty needs, replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `/etc/fossa/agent.toml`.
    pub toml: AgentToml,
    /// The stack config from SSM.
    pub stack: StackConfig,
    /// AWS configuration every client is built from.
    pub sdk: SdkConfig,
    /// The AWS clients, built once from `sdk`.
    pub clients: Clients,
    /// The SSM version of the stack config these settings hold.
    pub config_version: i64,
}

/// Loads the TOML file, the AWS configuration and the stack config from SSM.
pub async fn load(config: &Path) -> Result<Settings, LoadError> {
    let toml = AgentToml::load(config)?;
    let sdk = sdk_config(&AwsSettings {
        region: Some(toml.region.clone()),
        profile: None,
        endpoint_url: toml.endpoint_url.clone(),
    })
    .await?;
    let clients = Clients::new(&sdk);
    let name = toml.stack.ssm_parameter(ssm::CONFIG);
    let out = ssm::get(&clients.ssm, &name, false).await?;
    let config_version = out.version;
    let stack = StackConfig::parse(&name, &out.value)?;
    Ok(Settings {
        toml,
        stack,
        sdk,
        clients,
        config_version,
    })
}

/// The stack's private CIDRs, for `fossa-agent nat` without `--private-cidr`.
pub async fn private_cidrs(config: &Path) -> Result<Vec<Ipv4Net>, LoadError> {
    let s = load(config).await?;
    s.stack
        .private_cidrs()
        .iter()
        .map(|c| c.parse().map_err(|_| LoadError::BadCidr(c.clone())))
        .collect()
}

/// The AWS clients of the agent, built from the one `SdkConfig`.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SSM.
    pub ssm: aws_sdk_ssm::Client,
    /// S3 (path-style against an emulator).
    pub s3: aws_sdk_s3::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// ECR.
    pub ecr: aws_sdk_ecr::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    /// Every client from `sdk`.
    pub fn new(sdk: &SdkConfig) -> Self {
        let counter = fossa_contract::aws::CallCounter::default();
        Clients {
            ssm: counted_client!(aws_sdk_ssm, sdk, counter),
            s3: fossa_contract::aws::s3_client(sdk, &counter),
            ecs: counted_client!(aws_sdk_ecs, sdk, counter),
            ecr: counted_client!(aws_sdk_ecr, sdk, counter),
            logs: counted_client!(aws_sdk_cloudwatchlogs, sdk, counter),
        }
    }
}
