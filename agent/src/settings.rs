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
    /// `agent.toml` may be changed by someone other than root.
    #[error("{path} may be changed by someone other than root (owner uid {uid}, mode {mode:o}); it says where the agent sends its registry token and which endpoint it trusts, so it is not read: chown root {path} && chmod go-w {path}")]
    Writable {
        /// The file.
        path: String,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
}

/// Refuses an agent.toml that anyone but root (or, for an agent not run as
/// root, its own user) could have written: its `registry` and
/// `endpoint_url` decide where credentials go.
pub fn check_owner(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        // Not there: AgentToml::load says so, by name.
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return Err(LoadError::Writable {
            path: path.display().to_string(),
            uid: meta.uid(),
            mode,
        });
    }
    Ok(())
}

impl LoadError {
    /// Whether retrying cannot help: the file or the settings themselves are wrong.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LoadError::Config(_) | LoadError::Settings(_) | LoadError::Writable { .. }
        )
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
    /// Why these settings hold the last good stack config kept on disk
    /// rather than SSM's (SSM did not answer, or its config is malformed);
    /// `None` when they hold SSM's.
    pub config_trouble: Option<String>,
}

/// The last good stack config, kept in the state directory (0600): what the
/// agent starts NAT from when SSM does not answer at boot, and keeps running
/// on when SSM's config is malformed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Kept {
    version: i64,
    value: String,
}

fn kept_path(toml: &AgentToml) -> std::path::PathBuf {
    toml.state_dir.join("stack-config.json")
}

fn keep(toml: &AgentToml, version: i64, value: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = kept_path(toml);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(&Kept {
        version,
        value: value.to_owned(),
    })
    .expect("serialises");
    let _ = std::fs::remove_file(&tmp);
    // The first thing written there, on a first start without systemd's
    // StateDirectory= to make the directory.
    let _ = std::fs::create_dir_all(&toml.state_dir);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!("cannot keep the stack config in {}: {e}", path.display());
    }
}

fn kept(toml: &AgentToml, name: &str) -> Option<(i64, StackConfig)> {
    let text = std::fs::read(kept_path(toml)).ok()?;
    let k: Kept = serde_json::from_slice(&text).ok()?;
    Some((k.version, StackConfig::parse(name, &k.value).ok()?))
}

/// Loads the TOML file, the AWS configuration and the stack config from SSM.
pub async fn load(config: &Path) -> Result<Settings, LoadError> {
    check_owner(config)?;
    let toml = AgentToml::load(config)?;
    let sdk = sdk_config(&AwsSettings {
        region: Some(toml.region.clone()),
        profile: None,
        endpoint_url: toml.endpoint_url.clone(),
        call_timeout: Some(toml.timeouts.aws_call()),
    })
    .await?;
    let clients = Clients::new(&sdk);
    let name = toml.stack.ssm_parameter(ssm::CONFIG);
    let read = ssm::get(&clients.ssm, &name, false).await;
    let parsed = match read {
        Ok(out) => match StackConfig::parse(&name, &out.value) {
            Ok(stack) => {
                keep(&toml, out.version, &out.value);
                Ok((out.version, stack))
            }
            Err(e) => Err((
                format!(
                    "{name} version {} is malformed ({e}); fix it with fossa-bootstrap launch",
                    out.version
                ),
                LoadError::from(e),
            )),
        },
        Err(e) => Err((
            format!("SSM did not answer ({})", fossa_contract::aws::chain(&e)),
            LoadError::from(e),
        )),
    };
    let (config_version, stack, config_trouble) = match parsed {
        Ok((v, stack)) => (v, stack, None),
        Err((why, e)) => match kept(&toml, &name) {
            Some((v, stack)) => {
                let why = format!(
                    "{why}: running on the last good stack config (version {v}, kept in {})",
                    kept_path(&toml).display()
                );
                tracing::warn!("{why}");
                (v, stack, Some(why))
            }
            None => return Err(e),
        },
    };
    Ok(Settings {
        toml,
        stack,
        sdk,
        clients,
        config_version,
        config_trouble,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_toml_others_may_write_is_refused_by_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fossa-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(&path, "stack = \"a\"\nregion = \"eu-west-2\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_owner(&path).unwrap();
        for mode in [0o664, 0o646] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_owner(&path).unwrap_err();
            assert!(e.is_permanent());
            let said = e.to_string();
            assert!(
                said.contains("chmod go-w") && said.contains(&format!("{mode:o}")),
                "{said}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stack config as `launch` writes it (JSON).
    const STACK: &str = r#"{"version": 1, "stack": "dev", "region": "eu-west-2", "account_id": "123456789012",
        "vpc_id": "vpc-1", "vpc_cidr": "192.168.0.0/16",
        "public_subnet": {"id": "subnet-1", "cidr": "192.168.1.0/24", "az": "eu-west-2a"},
        "private_subnets": [{"id": "subnet-2", "cidr": "192.168.2.0/24", "az": "eu-west-2a"}],
        "gateway_security_group": "sg-1", "task_security_group": "sg-2",
        "execution_role_arn": "arn:aws:iam::123456789012:role/x", "task_role_arn": "arn:aws:iam::123456789012:role/y",
        "bucket": "b", "has_models": false, "workers": 4, "cpu": 256, "memory": 512}"#;

    #[tokio::test]
    async fn ssm_down_at_start_runs_on_the_last_good_config_kept_0600() {
        let dir = std::env::temp_dir().join(format!("fossa-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("agent.toml");
        // SSM at a port nothing listens on: every call is refused.
        std::fs::write(
            &config,
            format!(
                "stack = \"dev\"\nregion = \"eu-west-2\"\nendpoint_url = \"http://127.0.0.1:9\"\nstate_dir = {:?}\n",
                dir.display().to_string()
            ),
        )
        .unwrap();
        let e = load(&config).await.expect_err("nothing kept yet");
        assert!(!e.is_permanent(), "{e}");
        let toml = AgentToml::load(&config).unwrap();
        keep(&toml, 7, STACK);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kept_path(&toml))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let s = load(&config).await.expect("the kept config");
        assert_eq!(s.config_version, 7);
        assert_eq!(s.stack.private_cidrs(), ["192.168.2.0/24"]);
        let why = s.config_trouble.expect("said");
        assert!(
            why.contains("SSM did not answer") && why.contains("version 7"),
            "{why}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
