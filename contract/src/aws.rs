//! The one place AWS clients are configured, and how AWS errors are reported.
//!
//! Every client in bootstrap and agent is built from the [`SdkConfig`] that
//! [`sdk_config`] returns: the only switches are region, profile, endpoint URL
//! (an emulator in tests) and the credentials of the default chain. Errors of
//! every call are turned into an [`AwsError`] that names the call, the
//! resource, the AWS error code and what to do.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; falls back to the default chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Named profile; falls back to `AWS_PROFILE` / `default`.
    pub profile: Option<String>,
    /// Endpoint of an AWS API emulator; falls back to `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// How long one call may take with its retries; by default
    /// [`AWS_CALL_SECS`](crate::limits::AWS_CALL_SECS) (each attempt at
    /// most half of it, or [`AWS_CALL_ATTEMPT_SECS`](crate::limits::AWS_CALL_ATTEMPT_SECS)).
    pub call_timeout: Option<Duration>,
}

impl AwsSettings {
    /// The timeouts every call gets: an attempt that does not answer is
    /// abandoned and retried, and the whole call ends at its limit.
    pub fn timeouts(&self) -> TimeoutConfig {
        let call = self
            .call_timeout
            .unwrap_or(Duration::from_secs(crate::limits::AWS_CALL_SECS));
        let attempt = Duration::from_secs(crate::limits::AWS_CALL_ATTEMPT_SECS).min(call / 2);
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5).min(attempt))
            .operation_attempt_timeout(attempt)
            .operation_timeout(call)
            .build()
    }
}

/// The timeouts of one S3 transfer of a large body (`.customize()
/// .config_override(transfer_timeouts())` on a `PutObject` or `GetObject`):
/// [`AWS_TRANSFER_SECS`](crate::limits::AWS_TRANSFER_SECS) for the whole
/// body. Reading a `GetObject` body is bounded apart ([`read_body`]).
pub fn transfer_timeouts() -> aws_sdk_s3::config::Builder {
    let t = Duration::from_secs(crate::limits::AWS_TRANSFER_SECS);
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(t)
            .operation_timeout(t)
            .build(),
    )
}

/// A body read that did not end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The stream failed.
    #[error("reading the body failed")]
    Read(#[source] aws_sdk_s3::primitives::ByteStreamError),
    /// No end within the transfer limit.
    #[error("the body did not arrive within {0} s (the transfer limit): S3 or the network stalled; it is tried again")]
    Stalled(u64),
}

/// Reads a whole `GetObject` body within the transfer limit.
pub async fn read_body(body: aws_sdk_s3::primitives::ByteStream) -> Result<Vec<u8>, BodyError> {
    let limit = crate::limits::AWS_TRANSFER_SECS;
    match tokio::time::timeout(Duration::from_secs(limit), body.collect()).await {
        Ok(Ok(b)) => Ok(b.into_bytes().to_vec()),
        Ok(Err(e)) => Err(BodyError::Read(e)),
        Err(_) => Err(BodyError::Stalled(limit)),
    }
}

/// The settings could not produce a usable configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No region anywhere.
    #[error("no AWS region is set: pass --region (e.g. --region eu-west-2) or set AWS_REGION")]
    NoRegion,
    /// The region is not of the form AWS uses.
    #[error("unknown AWS region {0:?}: use a region code such as eu-west-2 or us-east-1")]
    BadRegion(String),
    /// TLS to AWS cannot be verified: no CA certificates on this host.
    #[error("no CA certificates found (looked for {looked}): install the ca-certificates package, or set SSL_CERT_FILE to a PEM bundle")]
    NoTrustStore {
        /// The places looked at.
        looked: String,
    },
}

/// Where Linux distributions keep their CA bundle (Debian and Ubuntu, Amazon
/// Linux and RHEL, SUSE, Alpine), as the SDK's native-roots loader finds them.
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cacert.pem",
];

/// Checks that the SDK will find CA certificates. Without any, its TLS
/// connector panics on the first client; this says what to install instead.
/// (Linux only: macOS and Windows use the system's own store.)
pub fn check_trust_store() -> Result<(), SettingsError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let env_set = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if env_set || CA_BUNDLES.iter().any(|p| std::path::Path::new(p).is_file()) {
        return Ok(());
    }
    Err(SettingsError::NoTrustStore {
        looked: CA_BUNDLES.join(", "),
    })
}

/// Whether `region` has the shape of an AWS region code (`xx-name-N`).
pub fn is_region_code(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// Loads the SDK configuration every client is built from, with retries for
/// throttling and 5xx (exponential backoff with jitter, 6 attempts) and the
/// timeouts of [`AwsSettings::timeouts`].
pub async fn sdk_config(settings: &AwsSettings) -> Result<SdkConfig, SettingsError> {
    check_trust_store()?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
        )
        .timeout_config(settings.timeouts());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    match config.region() {
        None => Err(SettingsError::NoRegion),
        Some(r) if !is_region_code(r.as_ref()) => Err(SettingsError::BadRegion(r.to_string())),
        Some(_) => Ok(config),
    }
}

/// A client of SDK crate `$sdk` (`aws_sdk_ecs`, ...) built from an
/// [`SdkConfig`] with a [`CallCounter`], so every request is counted and,
/// with [`ACTIONS_LOG_ENV`] set, recorded. Every client but S3's is made with
/// it (S3: [`s3_client`]).
#[macro_export]
macro_rules! counted_client {
    ($sdk:ident, $cfg:expr, $counter:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($cfg)
                .interceptor($counter.clone())
                .build(),
        )
    };
}

/// An S3 client for `config`; path-style addressing when an endpoint URL is set.
pub fn s3_client(config: &SdkConfig, counter: &CallCounter) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .interceptor(counter.clone());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Environment variable naming a file to which every AWS operation called is
/// appended as `Service:Operation` (the tests check each against the IAM
/// policy `plan` prints).
pub const ACTIONS_LOG_ENV: &str = "FOSSA_AWS_ACTIONS_LOG";

/// Counts HTTP requests sent to AWS (each retry counts), for progress output
/// and benchmarks. Add it to a client with `.interceptor(counter.clone())`.
/// With [`ACTIONS_LOG_ENV`] set, it also records each operation's name.
#[derive(Debug, Clone)]
pub struct CallCounter {
    sent: Arc<AtomicU64>,
    actions_log: Option<Arc<std::path::PathBuf>>,
}

impl Default for CallCounter {
    fn default() -> Self {
        CallCounter {
            sent: Arc::default(),
            actions_log: std::env::var_os(ACTIONS_LOG_ENV)
                .filter(|p| !p.is_empty())
                .map(|p| Arc::new(p.into())),
        }
    }
}

impl CallCounter {
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn record(&self, cfg: &ConfigBag) {
        use std::io::Write;
        let Some(path) = &self.actions_log else {
            return;
        };
        let Some(meta) = cfg.load::<Metadata>() else {
            return;
        };
        let line = format!("{}:{}\n", meta.service(), meta.name());
        // One write of one short line to an O_APPEND file: lines from several
        // processes do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.as_ref())
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.record(cfg);
        Ok(())
    }
}

/// A failed AWS call: which call, on what, and why in AWS's own words.
#[derive(Debug, thiserror::Error)]
#[error("AWS {call} on {resource} failed: {detail}")]
pub struct AwsError {
    /// The API operation, e.g. `ec2:CreateVpc`.
    pub call: &'static str,
    /// The resource it was about.
    pub resource: String,
    /// AWS error code and message, or the transport failure, plus a hint.
    pub detail: String,
    /// The AWS error code, when AWS answered.
    pub code: Option<String>,
}

impl AwsError {
    /// Whether AWS answered with this error code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// An error and every cause, on one line, each said once: where errors
/// are logged or shown (the driver's events, the UI's flash, AWS's hints).
pub fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

fn hint(code: &str, text: &str) -> &'static str {
    let t = text.to_ascii_lowercase();
    if t.contains("credential")
        || code == "UnrecognizedClientException"
        || code == "InvalidClientTokenId"
    {
        " (configure AWS credentials: `aws configure`, AWS_PROFILE / --profile, or `aws sso login`)"
    } else if code == "ExpiredToken" || code == "ExpiredTokenException" {
        " (your AWS session expired: log in again, e.g. `aws sso login`)"
    } else if code.contains("AccessDenied") || code == "UnauthorizedOperation" {
        " (the caller lacks this IAM permission: use an identity allowed to manage VPC, EC2, IAM, S3, SSM, ECS and ECR)"
    } else if code.contains("Throttl") || t.contains("rate exceeded") {
        " (AWS kept throttling after retries: wait a minute and run the command again; it resumes where it stopped)"
    } else if t.contains("dns error") || t.contains("connection refused") || t.contains("connect") {
        " (the AWS endpoint could not be reached: check the network, --region and --endpoint-url)"
    } else {
        ""
    }
}

/// Turns an SDK error into an [`AwsError`] naming `call` and `resource`.
pub fn aws_error<E>(
    call: &'static str,
    resource: impl Into<String>,
    err: SdkError<E, HttpResponse>,
) -> AwsError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let (code, text) = match &err {
        SdkError::ServiceError(s) => {
            let e = s.err();
            match e.code() {
                Some(code) => (Some(code.to_owned()), format!("{code}: {}", e.message().unwrap_or("(no message)"))),
                None => (
                    None,
                    format!(
                        "HTTP {} with no AWS error code, after retries (the endpoint is failing; try again later)",
                        s.raw().status().as_u16()
                    ),
                ),
            }
        }
        SdkError::TimeoutError(_) => (
            None,
            format!(
                "{} (AWS or the network did not answer within the call's time limit)",
                chain(&err)
            ),
        ),
        other => (None, chain(other)),
    };
    let h = hint(code.as_deref().unwrap_or(""), &text);
    AwsError {
        call,
        resource: resource.into(),
        detail: format!("{text}{h}"),
        code,
    }
}

/// `.aws("ec2:CreateVpc", "vpc fossa-dev")?` on any SDK result.
pub trait AwsResultExt<T> {
    /// Maps the error with [`aws_error`].
    fn aws(self, call: &'static str, resource: impl Into<String>) -> Result<T, AwsError>;
}

impl<T, E> AwsResultExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    fn aws(self, call: &'static str, resource: impl Into<String>) -> Result<T, AwsError> {
        self.map_err(|e| aws_error(call, resource, e))
    }
}

/// The resource id at the end of an ECS ARN: a task's id, a task
/// definition's `family:revision`, a service's name
/// (`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID` → `ID`). Anything without
/// a `/` is returned as it is (an id already).
pub fn arn_resource_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_resource_ids() {
        let task = "arn:aws:ecs:eu-west-2:123456789012:task/fossa-x/0a1b2c";
        assert_eq!(arn_resource_id(task), "0a1b2c");
        let td = "arn:aws:ecs:eu-west-2:123456789012:task-definition/fossa-x:7";
        assert_eq!(arn_resource_id(td), "fossa-x:7");
        assert_eq!(arn_resource_id("0a1b2c"), "0a1b2c");
    }

    #[test]
    fn region_codes() {
        for r in ["eu-west-2", "us-east-1", "ap-southeast-2", "us-gov-west-1"] {
            assert!(is_region_code(r), "{r}");
        }
        for r in ["", "europe", "eu-west", "EU-WEST-2", "eu-west-x", "eu--1"] {
            assert!(!is_region_code(r), "{r}");
        }
    }

    #[tokio::test]
    async fn bad_region_is_explained() {
        let e = sdk_config(&AwsSettings {
            region: Some("mars-1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("eu-west-2"), "{e}");
    }
}
