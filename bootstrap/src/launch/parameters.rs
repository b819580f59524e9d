//! `launch`'s SSM parameters: the stack config, the agent's hash, the UI
//! password and the scraper's token (SecureStrings); and the day-two
//! commands that read or change them, `password [--metrics-token]
//! [--rotate]` and `scale`, which the agent applies on its own.

use aws_sdk_ssm::types::ParameterType;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::StackConfig;
use fossa_contract::names::PASSWORD_ENV;
use fossa_contract::{ssm, tags, StackName};
use rand::distr::{Alphanumeric, SampleString};

use super::Launcher;
use crate::cli::{ScaleArgs, StackArgs};
use crate::clients::Clients;
use crate::progress::Outcome;
use crate::{Error, Result};

/// How often the agent checks SSM for a new configuration or password.
const CONFIG_CHECK_SECS: u64 = fossa_contract::limits::CONFIG_CHECK_SECS;

impl Launcher<'_> {
    /// Writes parameter `key` unless it already holds `value`; returns whether it wrote.
    pub(super) async fn parameter(
        &mut self,
        key: &str,
        value: &str,
        secure: bool,
        overwrite: bool,
    ) -> Result<Outcome> {
        let ssm_c = &self.c.ssm;
        let name = self.stack.ssm_parameter(key);
        let current = fossa_contract::ssm::read(ssm_c, &name, true).await?;
        let (exists, same) = match current {
            Some(p) => {
                let v = p.value.as_str();
                let as_json = |x: &str| serde_json::from_str::<serde_json::Value>(x).ok();
                (
                    true,
                    v == value || (!secure && as_json(v).is_some() && as_json(v) == as_json(value)),
                )
            }
            None => (false, false),
        };
        if exists && (same || !overwrite) {
            return Ok(Outcome::Found);
        }
        let kind = if secure {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        let mut b = ssm_c
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(kind)
            .overwrite(exists);
        if !exists {
            for (k, v) in tags::standard(&self.stack, tags::BY_BOOTSTRAP) {
                b = b.tags(
                    aws_sdk_ssm::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| Error::Unexpected(e.to_string()))?,
                );
            }
        }
        b.send().await.aws("ssm:PutParameter", &name)?;
        Ok(if exists {
            Outcome::Updated
        } else {
            Outcome::Created
        })
    }
}

impl Launcher<'_> {
    /// The stack config a previous run stored, if any; one that no longer
    /// parses is reported and treated as absent.
    pub(super) async fn stack_config(&self) -> Result<Option<StackConfig>> {
        crate::aws::read_stack_config(&self.c.ssm, &self.stack).await
    }
}

fn no_stack(stack: &StackName, region: &str) -> Error {
    Error::Usage(format!(
        "stack {stack} has no configuration in region {region}: check --stack and --region, or run `fossa-bootstrap launch --stack {stack}`"
    ))
}

/// Overwrites the SecureString `key` of an existing stack with `value`;
/// returns the parameter's name.
async fn replace_secret(args: &StackArgs, key: &str, value: &str) -> Result<String> {
    let c = Clients::new(&args.aws()).await?;
    if crate::aws::read_stack_config(&c.ssm, &args.stack)
        .await?
        .is_none()
    {
        return Err(no_stack(&args.stack, &c.region));
    }
    let name = args.stack.ssm_parameter(key);
    c.ssm
        .put_parameter()
        .name(&name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .aws("ssm:PutParameter", &name)?;
    Ok(name)
}

/// `fossa-bootstrap password --rotate`: a new UI password (from
/// `GATEWAY_HTTP_PASSWORD`, else generated and printed) replaces the old.
pub async fn rotate_password(args: &StackArgs) -> Result<()> {
    // A weak chosen password is refused before any AWS call.
    let (password, chosen) = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => {
            fossa_contract::limits::check_password(PASSWORD_ENV, &p)
                .map_err(|e| Error::Usage(e.to_string()))?;
            (p, true)
        }
        _ => (Alphanumeric.sample_string(&mut rand::rng(), 24), false),
    };
    let name = replace_secret(args, ssm::UI_PASSWORD, &password).await?;
    if chosen {
        println!("stored the password from {PASSWORD_ENV} in {name}");
    } else {
        println!("{password}");
    }
    eprintln!(
        "the agent switches to it within {} s; every open session then ends",
        CONFIG_CHECK_SECS
    );
    Ok(())
}

/// A new scraper's token: 40 letters and digits (238 bits).
pub(super) fn new_metrics_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// `fossa-bootstrap password [--metrics-token]`: prints the UI password,
/// or the scraper's token.
pub async fn print_secret(args: &StackArgs, metrics_token: bool) -> Result<()> {
    let c = Clients::new(&args.aws()).await?;
    let (key, what) = if metrics_token {
        (ssm::METRICS_TOKEN, "scraper's token")
    } else {
        (ssm::UI_PASSWORD, "password")
    };
    let name = args.stack.ssm_parameter(key);
    match ssm::read(&c.ssm, &name, true).await? {
        Some(p) => {
            println!("{}", p.value);
            Ok(())
        }
        None => Err(Error::Usage(format!(
            "stack {} has no {what} in region {}: check --stack and --region, or run `fossa-bootstrap launch --stack {}`",
            args.stack, c.region, args.stack
        ))),
    }
}

/// `fossa-bootstrap password --metrics-token --rotate`: stores a new
/// scraper's token and prints it; the agent takes it within its check.
pub async fn rotate_metrics_token(args: &StackArgs) -> Result<()> {
    let token = new_metrics_token();
    replace_secret(args, ssm::METRICS_TOKEN, &token).await?;
    println!("{token}");
    eprintln!(
        "the agent switches to it within {CONFIG_CHECK_SECS} s; the old token then opens nothing"
    );
    Ok(())
}

/// `fossa-bootstrap scale`: stores the new worker count in the stack config;
/// the agent's configuration duty sees it and sets the service's desired
/// count. Waits (unless `--no-wait`) until the service has it.
pub async fn scale(args: &ScaleArgs) -> Result<()> {
    let c = Clients::new(&args.stack.aws()).await?;
    let stack = &args.stack.stack;
    let mut config = crate::aws::read_stack_config(&c.ssm, stack)
        .await?
        .ok_or_else(|| no_stack(stack, &c.region))?;
    let before = config.workers;
    config.workers = args.workers;
    let name = crate::aws::write_stack_config(&c.ssm, stack, &config).await?;
    eprintln!("stored workers {before} → {} in {name}", args.workers);
    if args.no_wait {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(CONFIG_CHECK_SECS * 4 + 30);
    loop {
        let desired = c
            .ecs
            .describe_services()
            .cluster(stack.cluster())
            .services(stack.service())
            .send()
            .await
            .ok()
            .and_then(|d| d.services().first().map(|s| s.desired_count()));
        if desired == Some(args.workers as i32) {
            println!(
                "the service wants {} workers ({:.0} s after the setting was stored)",
                args.workers,
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if t.elapsed() > limit {
            return Err(Error::Usage(format!(
                "the setting is stored, but the service still wants {} workers after {} s: is the agent running? See `fossa-bootstrap status --stack {stack}`",
                desired.map_or("no".to_owned(), |d| d.to_string()),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}
