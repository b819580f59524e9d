//! What the bootstrap's steps share about AWS: the stack's tag filters and
//! tags, EC2 attribute values, the conversion between EC2's ingress
//! permissions and the plan's rules, and comparing IAM documents.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
    UserIdGroupPair,
};
use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::config::StackConfig;
use fossa_contract::{ssm, tags, StackName};

use crate::plan::{IngressRule, Source};
use crate::{Error, Result};

/// Filter on the `fossa:role` tag of one lasting part of the gateway.
pub(crate) fn role_filter(what: fossa_contract::names::Lasting) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::ROLE))
        .values(what.role())
        .build()
}

/// Filter on the stack tag.
pub fn stack_filter(stack: &StackName) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::STACK))
        .values(stack.as_str())
        .build()
}

/// EC2 tags of a resource: stack, managed-by, Name and an optional role.
pub fn ec2_tags(
    rt: ResourceType,
    stack: &StackName,
    name: &str,
    role: Option<&str>,
) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rt);
    for (k, v) in tags::standard(stack, tags::BY_BOOTSTRAP) {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b = b.tags(Tag::builder().key("Name").value(name).build());
    if let Some(role) = role {
        b = b.tags(Tag::builder().key(tags::ROLE).value(role).build());
    }
    b.build()
}

/// The standard tags as IAM tags.
pub(crate) fn iam_tags(stack: &StackName) -> Result<Vec<aws_sdk_iam::types::Tag>> {
    tags::standard(stack, tags::BY_BOOTSTRAP)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::Unexpected(e.to_string()))
        })
        .collect()
}

/// States of an instance that `launch` can use again.
pub(crate) const USABLE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Filter on instance `states`.
pub(crate) fn state_filter(states: &[&str]) -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(states.iter().map(|s| (*s).to_owned()).collect()))
        .build()
}

/// Filter on the instance states that still count (not terminated).
pub fn live_instance_filter() -> Filter {
    state_filter(&[USABLE_STATES.as_slice(), &["shutting-down"]].concat())
}

pub(crate) fn tag_value<'a>(t: &'a [Tag], key: &str) -> Option<&'a str> {
    t.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

pub(crate) fn on() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

pub(crate) fn off() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(false).build()
}

/// How long, and how often, to call again what AWS refused for a reason
/// that passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// For at most this long.
    pub within: std::time::Duration,
    /// The first wait ...
    pub first: std::time::Duration,
    /// ... doubling up to this.
    pub max: std::time::Duration,
}

/// The one retry loop of `launch` and `destroy`: runs `call` until it
/// succeeds, fails for a reason `passing` does not accept, or `retry.within`
/// is over; `waiting` hears each refusal it waits out (to say so).
pub(crate) async fn retry_while<T, F, Fut>(
    retry: Retry,
    passing: impl Fn(&AwsError) -> bool,
    mut waiting: impl FnMut(&AwsError),
    mut call: F,
) -> std::result::Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, AwsError>>,
{
    let deadline = std::time::Instant::now() + retry.within;
    let mut wait = retry.first;
    loop {
        match call().await {
            Err(e) if passing(&e) && std::time::Instant::now() < deadline => {
                waiting(&e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(retry.max);
            }
            other => return other,
        }
    }
}

/// Runs `call` again while EC2 says what was made a moment ago does not
/// exist: EC2's API is eventually consistent, and a call right after a
/// create can get `Invalid….NotFound` for seconds (EC2 developer guide,
/// "Eventual consistency in the Amazon EC2 API":
/// <https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html>).
/// Waits 0.5 s doubling to 8 s, for at most [`EC2_CONSISTENCY_SECS`].
///
/// [`EC2_CONSISTENCY_SECS`]: fossa_contract::limits::EC2_CONSISTENCY_SECS
pub(crate) async fn after_create<T, F, Fut>(call: F) -> std::result::Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, AwsError>>,
{
    let retry = Retry {
        within: std::time::Duration::from_secs(fossa_contract::limits::EC2_CONSISTENCY_SECS),
        first: std::time::Duration::from_millis(500),
        max: std::time::Duration::from_secs(8),
    };
    retry_while(retry, not_yet, |_| {}, call).await
}

/// Whether EC2 said a resource does not exist (yet).
fn not_yet(e: &AwsError) -> bool {
    e.code.as_deref().is_some_and(|c| c.ends_with(".NotFound"))
}

/// The gateway's Auto Scaling group `group`, if it exists (or is being
/// deleted).
pub(crate) async fn find_group(
    asg: &aws_sdk_autoscaling::Client,
    group: &str,
) -> Result<Option<aws_sdk_autoscaling::types::AutoScalingGroup>> {
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .aws("autoscaling:DescribeAutoScalingGroups", group)?;
    Ok(out.auto_scaling_groups().first().cloned())
}

/// The instance the gateway's Auto Scaling group runs now (pending or in
/// service), if any.
pub(crate) async fn group_instance(
    asg: &aws_sdk_autoscaling::Client,
    group: &str,
) -> Result<Option<String>> {
    use aws_sdk_autoscaling::types::LifecycleState as L;
    Ok(find_group(asg, group)
        .await?
        .iter()
        .flat_map(|g| g.instances())
        .filter(|i| {
            matches!(
                i.lifecycle_state(),
                Some(L::InService | L::Pending | L::PendingWait | L::PendingProceed)
            )
        })
        .find_map(|i| i.instance_id().map(str::to_owned)))
}

/// When the gateway's group last replaced its instance, from its scaling
/// activities (newest first, as EC2 Auto Scaling lists them): a launch after
/// the first is a replacement, and its cause says why.
pub(crate) fn last_replacement(activities: &[aws_sdk_autoscaling::types::Activity]) -> String {
    let launches: Vec<_> = activities
        .iter()
        .filter(|a| a.description().is_some_and(|d| d.starts_with("Launching")))
        .collect();
    match launches.as_slice() {
        [] => "no scaling activity listed".into(),
        [_] => "never replaced".into(),
        [last, ..] => {
            let at = last
                .start_time()
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                .unwrap_or_default();
            let status = last
                .status_code()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            format!(
                "last replaced {at} ({status}): {}",
                last.description().unwrap_or_default()
            )
        }
    }
}

pub(crate) fn missing(what: &str) -> Error {
    Error::Unexpected(format!("AWS returned no {what}"))
}

/// Decodes the %-escapes IAM uses in policy documents.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn same_json(a: &str, b: &serde_json::Value) -> bool {
    serde_json::from_str::<serde_json::Value>(a).ok().as_ref() == Some(b)
        || serde_json::from_str::<serde_json::Value>(&percent_decode(a))
            .ok()
            .as_ref()
            == Some(b)
}

/// Flattens EC2's permissions into one rule per source.
pub fn existing_rules(perms: &[IpPermission]) -> Vec<IngressRule> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        };
        let rule = |source| IngressRule {
            protocol: protocol.clone(),
            from,
            to,
            source,
            description: String::new(),
        };
        out.extend(
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip())
                .map(|c| rule(Source::Cidr(c.to_owned()))),
        );
        out.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| rule(Source::Group(g.to_owned()))),
        );
    }
    out
}

pub(crate) fn to_permission(r: &IngressRule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol(&r.protocol)
        .from_port(r.from)
        .to_port(r.to);
    match &r.source {
        Source::Cidr(c) => b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .description(&r.description)
                .build(),
        ),
        Source::Group(g) => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .description(&r.description)
                .build(),
        ),
    }
    .build()
}

/// The stack config in SSM: `None` when there is none.
pub(crate) async fn read_stack_config(
    ssm_c: &aws_sdk_ssm::Client,
    stack: &StackName,
) -> Result<Option<StackConfig>> {
    let name = stack.ssm_parameter(ssm::CONFIG);
    let Some(p) = ssm::read(ssm_c, &name, false).await? else {
        return Ok(None);
    };
    match StackConfig::parse(&name, &p.value) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            eprintln!("warning: {e}; it is written anew");
            Ok(None)
        }
    }
}

/// Overwrites the stack config in SSM; returns the parameter's name.
pub(crate) async fn write_stack_config(
    ssm_c: &aws_sdk_ssm::Client,
    stack: &StackName,
    config: &StackConfig,
) -> Result<String> {
    let name = stack.ssm_parameter(ssm::CONFIG);
    ssm_c
        .put_parameter()
        .name(&name)
        .value(serde_json::to_string_pretty(config).expect("config serialises"))
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .aws("ssm:PutParameter", &name)?;
    Ok(name)
}

/// The value of SSM parameter `name` (decrypted when `secret`), or `None`
/// when it is missing or cannot be read: for what only adds to a report.
pub async fn parameter_value(
    ssm: &aws_sdk_ssm::Client,
    name: String,
    secret: bool,
) -> Option<String> {
    ssm::read(ssm, &name, secret)
        .await
        .ok()
        .flatten()
        .map(|p| p.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec2_err(code: &str) -> AwsError {
        AwsError {
            call: "ec2:ModifyInstanceAttribute",
            resource: "i-1".into(),
            detail: format!("{code}: The instance ID 'i-1' does not exist"),
            code: Some(code.into()),
        }
    }

    #[tokio::test]
    async fn a_call_right_after_a_create_waits_for_ec2_to_know_it() {
        let calls = std::cell::Cell::new(0);
        let r = after_create(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(ec2_err("InvalidInstanceID.NotFound"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        calls.set(0);
        let r: std::result::Result<(), _> = after_create(|| {
            calls.set(calls.get() + 1);
            async { Err(ec2_err("UnauthorizedOperation")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1, "any other error is final at once");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
