//! The broker duty: RabbitMQ as a container on the gateway host, managed with
//! bollard (restart policy, data in a volume), on its own bridge
//! (`fossa_contract::networks::BROKER`) with its AMQP port published on the
//! instance's private address only: the workers' address for it never
//! changes, and nothing else of it (Erlang distribution, epmd) is on the
//! host's network. Its credentials are random,
//! made once and kept in the SSM SecureString `/fossa/<stack>/broker-url`;
//! workers get that parameter as an ECS secret, never as plain environment.
//!
//! The user is made from a definitions file ([`config_files`]) copied into
//! the container before its first start, not from `RABBITMQ_DEFAULT_USER`:
//! so it has no tags (it is not an administrator: it can use the default
//! vhost and nothing more), and no password sits in the container's
//! environment, where `docker inspect` would show it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::names::{images, BROKER_CONTAINER, BROKER_PORT, BROKER_VOLUME, SPEC_LABEL};
use fossa_contract::networks::{self, ContainerNetwork};
use fossa_contract::{limits, ssm, tags, StackName};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::driver::chain;
use super::{Duty, DutyError, Next, Outcome, Shared};
use crate::host::amqp;
use crate::host::docker::{call, DockerError};
use crate::host::exec::{ExecError, Executor};
use crate::settings::Settings;

pub mod status;

/// Version of the container's layout, part of the spec hash: a change
/// recreates containers made by an earlier agent (their data volume kept).
fn layout(network: ContainerNetwork) -> &'static str {
    match network {
        ContainerNetwork::Isolated => "definitions-v1 bridged",
        ContainerNetwork::Host => "definitions-v1 dist-bound",
    }
}
/// The broker's own configuration, read after the image's.
const CONF_PATH: &str = "etc/rabbitmq/conf.d/90-fossa.conf";
/// The definitions file the configuration loads at boot.
const DEFINITIONS_PATH: &str = "etc/rabbitmq/fossa-definitions.json";

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ sha256(salt ‖ password)).
pub fn rabbit_password_hash(password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&h.finalize());
    aws_smithy_types::base64::encode(bytes)
}

/// RabbitMQ definitions with one user, `creds`, on the default vhost: no
/// tags, so not an administrator; only the password's salted hash.
pub fn definitions(creds: &Credentials) -> serde_json::Value {
    serde_json::json!({
        "users": [{"name": creds.user, "password_hash": rabbit_password_hash(&creds.password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": creds.user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    })
}

/// The files copied into the broker container before it first starts, as
/// `(path under /, contents)`: a configuration that loads the definitions
/// at boot (so no default user is made) and keeps `guest` to loopback.
pub fn config_files(creds: &Credentials) -> Vec<(&'static str, String)> {
    vec![
        (
            CONF_PATH,
            format!("load_definitions = /{DEFINITIONS_PATH}\nloopback_users.guest = true\n"),
        ),
        (DEFINITIONS_PATH, definitions(creds).to_string()),
    ]
}

fn config_tar(creds: &Credentials) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, text) in config_files(creds) {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes())
            .expect("writing to memory");
    }
    tar.into_inner().expect("writing to memory")
}

/// Why the broker duty failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Docker refused or failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The broker image is not the one pinned at its first use.
    #[error(transparent)]
    Pin(#[from] crate::host::pins::PinError),
    /// A request could not be built.
    #[error("cannot build the {what} request")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: aws_smithy_types::error::operation::BuildError,
    },
    /// The stored URL is not one the agent made.
    #[error(
        "the SSM parameter {0} does not hold an amqp:// URL; delete it to have a new one made"
    )]
    BadUrl(String),
    /// The route table could not be read.
    #[error("cannot read the route table")]
    Route(#[source] ExecError),
    /// No address to listen on.
    #[error("cannot find this host's IPv4 address on the default route; set broker_address in agent.toml")]
    NoAddress,
}

/// The broker's credentials (a secret: Debug hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// `amqp://user:pass@host:5672/%2F`.
pub fn url(c: &Credentials, host: Ipv4Addr) -> String {
    format!("amqp://{}:{}@{host}:{BROKER_PORT}/%2F", c.user, c.password)
}

/// Credentials out of a URL [`url`] made.
pub fn parse_url(u: &str) -> Option<(Credentials, String)> {
    let rest = u.strip_prefix("amqp://")?;
    let (userinfo, hostpart) = rest.split_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    let host = hostpart.split('/').next()?.to_owned();
    Some((
        Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        },
        host,
    ))
}

/// Reads the broker URL from SSM, or makes random credentials and stores them
/// (SecureString, never overwritten) when there are none. A URL whose host is
/// not `host` is rewritten with the same credentials.
pub async fn ensure_url(
    ssm_client: &aws_sdk_ssm::Client,
    stack: &StackName,
    host: Ipv4Addr,
) -> Result<Credentials, BrokerError> {
    let name = stack.ssm_parameter(ssm::BROKER_URL);
    let current = ssm::read(ssm_client, &name, true).await?;
    let (creds, rewrite) = match current {
        Some(p) => {
            let (c, h) = parse_url(&p.value).ok_or_else(|| BrokerError::BadUrl(name.clone()))?;
            let want = format!("{host}:{BROKER_PORT}");
            (c, (h != want).then_some(true))
        }
        None => (
            Credentials {
                user: "fossa".into(),
                password: Alphanumeric.sample_string(&mut rand::rng(), 32),
            },
            Some(false),
        ),
    };
    if let Some(exists) = rewrite {
        let mut req = ssm_client
            .put_parameter()
            .name(&name)
            .value(url(&creds, host))
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(exists);
        if !exists {
            for (k, v) in tags::standard(stack, tags::BY_AGENT) {
                req = req.tags(
                    aws_sdk_ssm::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|source| BrokerError::Request {
                            what: "SSM tag",
                            source,
                        })?,
                );
            }
        }
        req.send().await.aws("ssm:PutParameter", &name)?;
        fossa_contract::fault::exit_at(fossa_contract::fault::Point::BrokerUrlStored);
    }
    Ok(creds)
}

/// This host's IPv4 address on the interface of the default route.
pub fn default_address(route_table: &str) -> Option<Ipv4Addr> {
    let iface = crate::duties::nat::default_interface(route_table)?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        (a.interface_name == iface)
            .then(|| a.address.and_then(|s| s.as_sockaddr_in().map(|i| i.ip())))?
    })
}

/// The container settings for the broker: on its bridge with only AMQP
/// published on `address`, or (local machines, `ContainerNetwork::Host`)
/// on the host's network listening on `address` alone.
pub fn container_spec(
    image: &str,
    address: Ipv4Addr,
    creds: &Credentials,
    network: ContainerNetwork,
) -> (ContainerCreateBody, String) {
    let hash = hex::encode(Sha256::digest(format!(
        "{}|{image}|{address}|{}|{}",
        layout(network),
        creds.user,
        creds.password
    )));
    let amqp = format!("{BROKER_PORT}/tcp");
    let (env, ports) = match network {
        // In its own network namespace it listens on the bridge alone;
        // Docker publishes AMQP (and only AMQP) on the private address.
        ContainerNetwork::Isolated => (
            vec![format!("RABBITMQ_NODE_PORT={BROKER_PORT}")],
            Some(HashMap::from([(
                amqp.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(address.to_string()),
                    host_port: Some(BROKER_PORT.to_string()),
                }]),
            )])),
        ),
        ContainerNetwork::Host => (
            vec![
                format!("RABBITMQ_NODE_IP_ADDRESS={address}"),
                format!("RABBITMQ_NODE_PORT={BROKER_PORT}"),
                format!("ERL_EPMD_ADDRESS={address}"),
                // Erlang distribution (25672) listens where epmd does, not
                // on every interface (it did, and Docker starts the
                // container at boot, before the agent's INPUT rules exist).
                format!(
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {{{}}}",
                    address.octets().map(|o| o.to_string()).join(",")
                ),
            ],
            None,
        ),
    };
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(env),
        exposed_ports: ports.as_ref().map(|_| vec![amqp]),
        labels: Some(HashMap::from([
            (SPEC_LABEL.to_owned(), hash.clone()),
            ("fossa.role".to_owned(), "broker".to_owned()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(network.mode(networks::BROKER).to_owned()),
            port_bindings: ports,
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            binds: Some(vec![format!("{BROKER_VOLUME}:/var/lib/rabbitmq")]),
            // Rotated, not kept for ever on the gateway's disk. Not in the
            // spec's hash: an upgrade must not recreate a running broker
            // (every parent's reply queue would go with it) to change its
            // logging; an older broker takes this when it is next recreated.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    (
                        "max-size".to_owned(),
                        limits::BROKER_LOG_MAX_SIZE.to_owned(),
                    ),
                    ("max-file".to_owned(), limits::BROKER_LOG_FILES.to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    (body, hash)
}

/// Makes the broker container match its spec: created, recreated when the
/// spec changed, started when stopped. Returns a one-line summary.
pub async fn reconcile(
    docker: &Docker,
    image: &str,
    address: Ipv4Addr,
    creds: &Credentials,
    network: ContainerNetwork,
) -> Result<String, BrokerError> {
    let (body, hash) = container_spec(image, address, creds, network);
    match docker.inspect_container(BROKER_CONTAINER, None).await {
        Ok(c) => {
            let same = c
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(SPEC_LABEL))
                == Some(&hash);
            let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
            if same && running {
                return Ok(format!("broker running at {address}:{BROKER_PORT}"));
            }
            if same {
                docker
                    .start_container(BROKER_CONTAINER, None)
                    .await
                    .map_err(call("start"))?;
                return Ok(format!("broker restarted at {address}:{BROKER_PORT}"));
            }
            docker
                .remove_container(
                    BROKER_CONTAINER,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await
                .map_err(call("remove"))?;
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(call("inspect")(e).into()),
    }
    if network == ContainerNetwork::Isolated {
        crate::host::docker::ensure_network(docker, &networks::BROKER).await?;
    }
    if docker.inspect_image(image).await.is_err() {
        crate::host::pins::pull(docker, image).await?;
    }
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(BROKER_CONTAINER)
                    .build(),
            ),
            body,
        )
        .await
        .map_err(call("create"))?;
    docker
        .upload_to_container(
            BROKER_CONTAINER,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(bytes::Bytes::from(config_tar(creds))),
        )
        .await
        .map_err(call("copy the configuration into"))?;
    fossa_contract::fault::exit_at(fossa_contract::fault::Point::BrokerContainerCreated);
    docker
        .start_container(BROKER_CONTAINER, None)
        .await
        .map_err(call("start"))?;
    Ok(format!(
        "broker container created at {address}:{BROKER_PORT}"
    ))
}

/// The broker duty: the URL in SSM, the container to match it, then a real
/// AMQP login with the workers' credentials. A broker that stays unanswering
/// past [`HANG_LIMIT`] is restarted; one that died is started at once.
pub struct BrokerDuty {
    exec: Arc<dyn Executor>,
    failing_since: Option<Instant>,
    /// The broker's status as last read, and when.
    status: Option<(Instant, status::BrokerStatus)>,
    secrets: Arc<tokio::sync::watch::Sender<Vec<String>>>,
    events: crate::events::Events,
}

impl BrokerDuty {
    /// The broker's alarms and figures: read again every
    /// [`BROKER_STATUS_EVERY_SECS`](fossa_contract::limits::BROKER_STATUS_EVERY_SECS),
    /// and at every run while an alarm is on. `false` while an alarm is on;
    /// a status that cannot be read is said, not counted against it.
    async fn status(&mut self, docker: &Docker) -> (bool, String) {
        let every = Duration::from_secs(fossa_contract::limits::BROKER_STATUS_EVERY_SECS);
        let fresh = self
            .status
            .as_ref()
            .filter(|(at, s)| s.well() && at.elapsed() < every);
        if let Some((_, s)) = fresh {
            return (true, s.line());
        }
        match status::read(docker, Duration::from_secs(10)).await {
            Ok(s) => {
                let said = (s.well(), s.line());
                self.status = Some((Instant::now(), s));
                said
            }
            Err(e) => {
                self.status = None;
                (true, format!("its status is unknown: {}", chain(&e)))
            }
        }
    }
}

/// Seconds the broker container has been running, as Docker says.
async fn running_for(docker: &Docker) -> Option<i64> {
    let c = docker
        .inspect_container(BROKER_CONTAINER, None)
        .await
        .ok()?;
    let started = c.state?.started_at?;
    let at = time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(fossa_contract::unix_now() - at.unix_timestamp())
}

/// How long the container may run without accepting a login before it is restarted.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

impl BrokerDuty {
    /// The duty, on `shared`'s host.
    pub fn new(shared: &Shared) -> Self {
        BrokerDuty {
            exec: shared.exec.clone(),
            failing_since: None,
            status: None,
            secrets: shared.secrets.clone(),
            events: shared.events.clone(),
        }
    }
}

#[async_trait]
impl Duty<Settings> for BrokerDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        if let Some(o) = super::standing_down(s) {
            return Ok(o);
        }
        let address = match s.toml.broker_address {
            Some(a) => a,
            None => {
                let routes = self
                    .exec
                    .read("/proc/net/route".as_ref())
                    .map_err(BrokerError::Route)?;
                default_address(&routes).ok_or(BrokerError::NoAddress)?
            }
        };
        let creds = ensure_url(&s.clients.ssm, &s.toml.stack, address).await?;
        let secrets = vec![url(&creds, address), creds.password.clone()];
        self.secrets.send_if_modified(|s| {
            let new = *s != secrets;
            if new {
                s.clone_from(&secrets);
            }
            new
        });
        let docker = crate::host::docker::connect()
            .await
            .map_err(BrokerError::from)?;
        let configured = s
            .toml
            .broker_image
            .as_deref()
            .unwrap_or(images::DEFAULT_BROKER);
        let image = crate::host::pins::resolve(
            &docker,
            &s.toml.state_dir,
            configured,
            &self.events,
            "broker",
        )
        .await
        .map_err(BrokerError::from)?;
        let mut summary =
            reconcile(&docker, &image, address, &creds, s.toml.container_network).await?;
        let target = format!("{address}:{BROKER_PORT}");
        let login = amqp::Login {
            address: &target,
            user: &creds.user,
            password: &creds.password,
            vhost: "/",
        };
        let mut why = match amqp::check(&login, Duration::from_secs(3)).await {
            Ok(()) => {
                self.failing_since = None;
                let (well, said) = self.status(&docker).await;
                return Ok(Outcome::done(summary)
                    .with_detail(well, format!("accepts an AMQP login; {said}")));
            }
            Err(e) => chain(&e),
        };
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let grace = fossa_contract::limits::BROKER_START_GRACE_SECS;
        let up = running_for(&docker).await;
        if let Some(up) = up.filter(|up| *up < grace) {
            // A big backlog is read back before the first login: a restart
            // would only begin that again.
            why = format!(
                "{why} (started {up} s ago: a broker refusing logins is restarted only from {grace} s after its start)"
            );
        } else if since.elapsed() > HANG_LIMIT {
            docker
                .restart_container(BROKER_CONTAINER, None)
                .await
                .map_err(call("restart"))
                .map_err(BrokerError::from)?;
            self.failing_since = Some(Instant::now());
            summary = format!(
                "broker at {target} accepted no AMQP login for {} s; restarted it",
                HANG_LIMIT.as_secs()
            );
        }
        Ok(Outcome {
            next: Next::After(Duration::from_secs(3)),
            ..Outcome::done(summary).with_detail(false, format!("no AMQP login yet: {why}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_trip_and_hide_the_password_in_debug() {
        let c = Credentials {
            user: "fossa".into(),
            password: "s3cr3t".into(),
        };
        let u = url(&c, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(u, "amqp://fossa:s3cr3t@192.168.1.10:5672/%2F");
        let (back, host) = parse_url(&u).unwrap();
        assert_eq!(back, c);
        assert_eq!(host, "192.168.1.10:5672");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(parse_url("http://x").is_none());
    }

    #[test]
    fn the_spec_binds_the_private_address_and_changes_with_credentials() {
        let c = Credentials {
            user: "fossa".into(),
            password: "a".into(),
        };
        let host = ContainerNetwork::Host;
        let (body, h1) = container_spec("rabbitmq:3", Ipv4Addr::new(10, 0, 1, 5), &c, host);
        assert!(body
            .env
            .as_ref()
            .unwrap()
            .contains(&"RABBITMQ_NODE_IP_ADDRESS=10.0.1.5".to_owned()));
        assert_eq!(
            body.host_config.as_ref().unwrap().network_mode.as_deref(),
            Some("host")
        );
        let (_, h2) = container_spec(
            "rabbitmq:3",
            Ipv4Addr::new(10, 0, 1, 5),
            &Credentials {
                password: "b".into(),
                ..c.clone()
            },
            host,
        );
        assert_ne!(h1, h2);
        let (_, h3) = container_spec(
            "rabbitmq:3",
            Ipv4Addr::new(10, 0, 1, 5),
            &c,
            Default::default(),
        );
        assert_ne!(h1, h3, "a change of network recreates the container");
        let env = body.env.unwrap().join(" ");
        assert!(
            !env.contains("PASS") && !env.contains("DEFAULT_USER"),
            "{env}"
        );
    }

    #[test]
    fn on_the_gateway_only_amqp_is_published_and_only_on_the_private_address() {
        let c = Credentials {
            user: "fossa".into(),
            password: "a".into(),
        };
        let address = Ipv4Addr::new(10, 0, 1, 5);
        let (body, _) = container_spec("rabbitmq:3", address, &c, ContainerNetwork::Isolated);
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("fossa-broker"));
        let ports = hc.port_bindings.as_ref().unwrap();
        assert_eq!(ports.len(), 1, "no port but AMQP: {ports:?}");
        let bound = ports["5672/tcp"].as_ref().unwrap();
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].host_ip.as_deref(), Some("10.0.1.5"));
        assert_eq!(bound[0].host_port.as_deref(), Some("5672"));
        assert_eq!(body.exposed_ports, Some(vec!["5672/tcp".to_owned()]));
        let logs = hc.log_config.as_ref().unwrap();
        assert_eq!(logs.typ.as_deref(), Some("json-file"));
        let opts = logs.config.as_ref().unwrap();
        assert_eq!(
            (opts["max-size"].as_str(), opts["max-file"].as_str()),
            ("20m", "3")
        );
        let env = body.env.unwrap().join(" ");
        assert!(
            !env.contains("10.0.1.5"),
            "nothing binds the host's address inside: {env}"
        );
    }

    #[test]
    fn the_worker_user_is_not_an_administrator_and_its_password_is_hashed() {
        let c = Credentials {
            user: "fossa".into(),
            password: "s3cr3t-password".into(),
        };
        let files = config_files(&c);
        let conf = &files[0].1;
        assert!(conf.contains("load_definitions = /etc/rabbitmq/fossa-definitions.json"));
        assert!(conf.contains("loopback_users.guest = true"));
        let defs: serde_json::Value = serde_json::from_str(&files[1].1).unwrap();
        assert_eq!(defs["users"][0]["name"], "fossa");
        assert_eq!(defs["users"][0]["tags"], serde_json::json!([]));
        assert!(!files[1].1.contains("s3cr3t"), "only the salted hash");
        let raw =
            aws_smithy_types::base64::decode(defs["users"][0]["password_hash"].as_str().unwrap())
                .unwrap();
        let mut h = Sha256::new();
        h.update(&raw[..4]);
        h.update(b"s3cr3t-password");
        assert_eq!(
            &raw[4..],
            h.finalize().as_slice(),
            "RabbitMQ's salted SHA-256"
        );
        assert_eq!(defs["permissions"][0]["vhost"], "/");
    }
}
