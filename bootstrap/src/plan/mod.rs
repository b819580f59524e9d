//! The desired state of a stack as plain data: subnet layout and security
//! group rules (`network`), IAM roles and policies (`iam`), the bucket's
//! guards (`storage`) and the instance's architecture. `launch` applies it;
//! `fossa-bootstrap plan` prints it (`resources`); unit tests cover it
//! without AWS.

pub mod iam;
pub mod network;
pub mod policy;
pub mod storage;

use std::io::Write;

use fossa_contract::names::{AGENT_OBJECT_KEY, MODELS_OBJECT_KEY};
use fossa_contract::{ssm, StackName};
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::Value;

pub use iam::{RolePlan, Scope};
pub use network::{
    gateway_ingress, missing_rules, stale_rules, task_ingress, IngressRule, Source, SubnetLayout,
    UI_PORT,
};

use crate::cli::{LaunchArgs, Output, PlanArgs};
use crate::clients::Clients;
use crate::{Error, Result};

pub use fossa_contract::elf::Arch;

/// The checks on `launch`'s flags that need no file and no AWS call.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Subnets carved from `--vpc-cidr`.
    pub layout: SubnetLayout,
    /// The instance's architecture.
    pub arch: Arch,
}

/// Checks `--vpc-cidr`, `--instance-type` and `--allow-cidr`.
pub fn check_shape(args: &LaunchArgs) -> Result<Shape> {
    let layout = SubnetLayout::for_vpc(args.vpc_cidr).map_err(|e| Error::Usage(e.to_string()))?;
    if !args.instance_type.contains('.') {
        return Err(Error::Usage(format!(
            "--instance-type {:?} is not an EC2 instance type: use one such as t3.small or t4g.small",
            args.instance_type
        )));
    }
    if let Some(cidr) = args.allow_cidr {
        network::check_allow_cidr(cidr, args.allow_anywhere)
            .map_err(|e| Error::Usage(e.to_string()))?;
    }
    Ok(Shape {
        layout,
        arch: Arch::of_instance_type(&args.instance_type),
    })
}

/// One resource `launch` makes or keeps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    /// What it is: `vpc`, `iam-role`, `iam-role-policy`, `s3-bucket-policy`, ...
    pub kind: &'static str,
    /// Its name (or Name tag).
    pub name: String,
    /// Its settings in a line.
    pub detail: String,
    /// Its IAM document, where it has one: a role's trust policy, an inline
    /// or bucket policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
}

fn res(kind: &'static str, name: impl Into<String>, detail: impl Into<String>) -> Resource {
    Resource {
        kind,
        name: name.into(),
        detail: detail.into(),
        policy: None,
    }
}

/// What a stack holds, from `launch`'s flags and the caller's account.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    /// Stack, partition, region, account and bucket.
    pub scope: Scope<'a>,
    /// The VPC CIDR.
    pub vpc: Ipv4Net,
    /// Subnets and architecture.
    pub shape: Shape,
    /// Who may reach the UI; empty: the caller's public IP, or the rules a
    /// re-run finds.
    pub allow: Vec<Ipv4Net>,
    /// EC2 instance type.
    pub instance_type: &'a str,
    /// AMI, or `None` for the latest Amazon Linux 2023.
    pub ami: Option<&'a str>,
    /// Whether a models tarball is uploaded.
    pub models: bool,
}

/// Every resource `launch` makes, in its order, with every IAM document.
pub fn resources(d: &Desired<'_>) -> Vec<Resource> {
    let s = d.scope.stack;
    let l = &d.shape.layout;
    let mut out = vec![
        res("vpc", s.vpc(), format!("{}, DNS hostnames on", d.vpc)),
        res("internet-gateway", s.prefix(), "attached to the VPC"),
        res(
            "subnet",
            s.public_subnet(),
            format!("{} public, the gateway", l.public),
        ),
    ];
    for (i, p) in l.private.iter().enumerate() {
        out.push(res(
            "subnet",
            s.private_subnet(i),
            format!("{p} private, for workers (its own availability zone)"),
        ));
    }
    out.push(res(
        "route-table",
        format!("{}-public", s.prefix()),
        "0.0.0.0/0 -> internet gateway",
    ));
    out.push(res(
        "route-table",
        format!("{}-private", s.prefix()),
        "0.0.0.0/0 -> the gateway's network interface (NAT)",
    ));
    let task_sg = format!("sg:{}", s.task_security_group());
    let allow_text = if d.allow.is_empty() {
        vec!["<your public IP>/32 (or the rule a re-run finds)".to_owned()]
    } else {
        d.allow.iter().map(ToString::to_string).collect()
    };
    let ui = d.allow.clone();
    let gw_rules = gateway_ingress(&ui, l, &task_sg);
    let rules_text = |rules: &[IngressRule]| {
        rules
            .iter()
            .map(|r| {
                let ports = if r.protocol == "-1" {
                    "all".to_owned()
                } else {
                    format!("{}/{}", r.protocol, r.from)
                };
                let from = match &r.source {
                    Source::Cidr(c) => c.clone(),
                    Source::Group(g) => g.clone(),
                };
                format!("{ports} from {from}")
            })
            .collect::<Vec<_>>()
    };
    let mut gw_text = rules_text(&gw_rules);
    if d.allow.is_empty() {
        gw_text.insert(0, format!("tcp/{UI_PORT} from {}", allow_text.join(", ")));
    }
    out.push(res(
        "security-group",
        s.gateway_security_group(),
        format!("ingress: {}; no SSH", gw_text.join("; ")),
    ));
    let gw_sg = format!("sg:{}", s.gateway_security_group());
    out.push(res(
        "security-group",
        s.task_security_group(),
        format!("ingress: {}", rules_text(&task_ingress(&gw_sg)).join("; ")),
    ));
    out.push(res(
        "iam-service-linked-role",
        fossa_contract::names::ECS_SERVICE_LINKED_ROLE,
        "ECS's, once per account: made if missing (CreateCluster and CreateService need it); destroy leaves it",
    ));
    for role in d.scope.roles() {
        out.push(Resource {
            policy: Some(role.trust.clone()),
            ..res(
                "iam-role",
                &role.name,
                format!(
                    "{}: assumed by {}; managed policies: none",
                    role.purpose, role.service
                ),
            )
        });
        if let Some(inline) = role.inline {
            out.push(Resource {
                policy: Some(inline),
                ..res(
                    "iam-role-policy",
                    format!("{}/{}", role.name, iam::INLINE_POLICY_NAME),
                    format!("inline policy of {}", role.name),
                )
            });
        }
    }
    out.push(res(
        "iam-instance-profile",
        s.instance_profile(),
        format!("holds {}", s.gateway_role()),
    ));
    out.push(res(
        "s3-bucket",
        d.scope.bucket,
        "public access blocked (re-applied on every run), tagged",
    ));
    out.push(Resource {
        policy: Some(storage::bucket_policy(&d.scope)),
        ..res(
            "s3-bucket-policy",
            d.scope.bucket,
            "refuses every request without TLS",
        )
    });
    out.push(res(
        "s3-object",
        format!("s3://{}/{AGENT_OBJECT_KEY}", d.scope.bucket),
        "the agent binary, SHA-256 in its metadata",
    ));
    if d.models {
        out.push(res(
            "s3-object",
            format!("s3://{}/{MODELS_OBJECT_KEY}", d.scope.bucket),
            "the models tarball",
        ));
    }
    for (key, what) in [
        (ssm::CONFIG, "String: the stack config the agent reads"),
        (ssm::AGENT_SHA256, "String: SHA-256 of the agent binary"),
        (
            ssm::UI_PASSWORD,
            "SecureString: the UI password (kept on a re-run)",
        ),
        (
            ssm::METRICS_TOKEN,
            "SecureString: the scraper's token, for /metrics only (kept on a re-run)",
        ),
    ] {
        out.push(res("ssm-parameter", s.ssm_parameter(key), what));
    }
    let ami = d.ami.map(str::to_owned).unwrap_or_else(|| {
        format!(
            "latest Amazon Linux 2023 ({})",
            d.shape.arch.al2023_parameter()
        )
    });
    out.push(res(
        "ec2-instance",
        s.gateway_instance(),
        format!(
            "{} {}, {ami}, IMDSv2 only with hop limit 1, no key pair, source/dest check off, public IP",
            d.instance_type, d.shape.arch
        ),
    ));
    out
}

/// Writes `resources` for people: one line each, then every IAM document.
pub fn write_text(
    out: &mut impl Write,
    header: &str,
    resources: &[Resource],
) -> std::io::Result<()> {
    writeln!(out, "{header}")?;
    let width = resources.iter().map(|r| r.kind.len()).max().unwrap_or(0);
    for r in resources {
        writeln!(out, "  + {:width$}  {}", r.kind, r.name)?;
        writeln!(out, "    {:width$}  {}", "", r.detail)?;
    }
    writeln!(out, "\nIAM documents:")?;
    for r in resources {
        if let Some(p) = &r.policy {
            let what = match r.kind {
                "iam-role" => "trust policy",
                "iam-role-policy" => "inline policy",
                _ => "resource policy",
            };
            writeln!(out, "\n{} {} ({what}):", r.kind, r.name)?;
            let pretty = serde_json::to_string_pretty(p).expect("json");
            for line in pretty.lines() {
                writeln!(out, "    {line}")?;
            }
        }
    }
    Ok(())
}

/// `fossa-bootstrap plan`: prints what `launch` would make; changes nothing.
/// It calls only STS, for the account the ARNs are built with.
pub async fn run(args: &PlanArgs) -> Result<()> {
    let launch = &args.launch;
    let shape = check_shape(launch)?;
    if let Some(dir) = &launch.models {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--models {}: not a directory of model files",
                dir.display()
            )));
        }
    }
    let c = Clients::new(&launch.stack.aws()).await?;
    let id = c.identity().await?;
    let stack: &StackName = &launch.stack.stack;
    let bucket = stack.bucket(&id.account, &c.region);
    let desired = Desired {
        scope: Scope {
            stack,
            partition: &id.partition,
            region: &c.region,
            account: &id.account,
            bucket: &bucket,
        },
        vpc: launch.vpc_cidr,
        shape,
        allow: launch.allow_cidr.into_iter().collect(),
        instance_type: &launch.instance_type,
        ami: launch.ami.as_deref(),
        models: launch.models.is_some(),
    };
    let list = resources(&desired);
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Json => serde_json::to_writer_pretty(&mut out, &list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Output::Text => write_text(
            &mut out,
            &format!(
                "fossa-bootstrap plan: stack {stack} in {} (account {}). Nothing is changed; `launch` with the same flags makes or keeps:",
                c.region, id.account
            ),
            &list,
        ),
    };
    written.map_err(|source| Error::Write { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_from_instance_type() {
        for t in [
            "t4g.small",
            "m7g.large",
            "c6gn.xlarge",
            "im4gn.large",
            "x2gd.medium",
            "a1.large",
            "m6gd.large",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::Arm64, "{t}");
        }
        for t in [
            "t3.small",
            "t2.medium",
            "g4dn.xlarge",
            "m5.large",
            "c7i.large",
            "r7iz.large",
            "inf2.xlarge",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::X86_64, "{t}");
        }
        assert!(Arch::Arm64.al2023_parameter().ends_with("-arm64"));
    }

    #[test]
    fn every_iam_document_is_in_the_plan() {
        let stack = StackName::new("dev").unwrap();
        let d = Desired {
            scope: Scope {
                stack: &stack,
                partition: "aws",
                region: "eu-west-2",
                account: "123456789012",
                bucket: "b",
            },
            vpc: "192.168.0.0/16".parse().unwrap(),
            shape: Shape {
                layout: SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap(),
                arch: Arch::X86_64,
            },
            allow: vec!["203.0.113.7/32".parse().unwrap()],
            instance_type: "t3.small",
            ami: None,
            models: false,
        };
        let list = resources(&d);
        let kinds = |k: &str| list.iter().filter(|r| r.kind == k).count();
        assert_eq!(kinds("iam-role"), 3);
        assert_eq!(kinds("iam-service-linked-role"), 1);
        assert_eq!(kinds("iam-role-policy"), 2);
        assert_eq!(kinds("s3-bucket-policy"), 1);
        assert_eq!(kinds("subnet"), 3);
        assert_eq!(kinds("s3-object"), 1, "no models tarball without --models");
        assert!(list
            .iter()
            .filter(|r| r.kind.starts_with("iam-role"))
            .all(|r| r.policy.is_some()));
        let sg = list
            .iter()
            .find(|r| r.name == "fossa-dev-gateway" && r.kind == "security-group")
            .unwrap();
        assert!(
            sg.detail.contains("tcp/443 from 203.0.113.7/32"),
            "{}",
            sg.detail
        );
        let mut text = Vec::new();
        write_text(&mut text, "plan", &list).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("trust policy") && text.contains("sts:AssumeRole"));
        assert!(text.contains("hop limit 1"));
        let json = serde_json::to_value(&list).unwrap();
        assert!(
            json[0].get("policy").is_none(),
            "policy only where there is one"
        );
        assert!(json
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"].is_string() && r["name"].is_string()));
    }
}
