//! `fossa-bootstrap launch`: converge the stack's bootstrap resources.
//!
//! Each step looks its resource up by tag (or by its derived name), creates it
//! only when missing, and repairs the parts a crash could have left half done
//! (an unattached gateway, a missing route or rule). A re-run therefore only
//! reads, and an interrupted launch is finished by running it again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, IpPermission, IpRange, ResourceType, Tag,
    TagSpecification, UserIdGroupPair,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_ssm::types::ParameterType;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::{AgentToml, StackConfig, Subnet, STACK_CONFIG_VERSION};
use fossa_contract::names::{AGENT_OBJECT_KEY, MODELS_OBJECT_KEY, UI_USER};
use fossa_contract::{ssm, tags, StackName};
use ipnet::Ipv4Net;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::cli::{LaunchArgs, StackArgs};
use crate::clients::{Clients, Identity};
use crate::plan::{self, Arch, IngressRule, RolePlan, Scope, Source, SubnetLayout};
use crate::progress::{Outcome, Progress};
use crate::userdata::UserData;
use crate::{elf, Error, Result};

/// Environment variable naming the service that tells the caller's public IP
/// (default `https://checkip.amazonaws.com`), for networks that block it.
pub const PUBLIC_IP_URL_ENV: &str = "FOSSA_PUBLIC_IP_URL";

pub use fossa_contract::names::PASSWORD_ENV;

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
fn iam_tags(stack: &StackName) -> Result<Vec<aws_sdk_iam::types::Tag>> {
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
const USABLE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Filter on instance `states`.
fn state_filter(states: &[&str]) -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(states.iter().map(|s| (*s).to_owned()).collect()))
        .build()
}

/// Filter on the instance states that still count (not terminated).
pub fn live_instance_filter() -> Filter {
    state_filter(&[USABLE_STATES.as_slice(), &["shutting-down"]].concat())
}

fn tag_value<'a>(t: &'a [Tag], key: &str) -> Option<&'a str> {
    t.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn on() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

fn off() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(false).build()
}

fn missing(what: &str) -> Error {
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

fn same_json(a: &str, b: &serde_json::Value) -> bool {
    serde_json::from_str::<serde_json::Value>(a).ok().as_ref() == Some(b)
        || serde_json::from_str::<serde_json::Value>(&percent_decode(a))
            .ok()
            .as_ref()
            == Some(b)
}

/// A deterministic gzipped tarball of `dir` (sorted entries, zero times), so
/// its hash only changes when the models do.
pub fn models_tarball(dir: &Path) -> Result<Vec<u8>> {
    let read = |p: &Path, e| Error::Read {
        path: p.to_owned(),
        source: e,
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| read(&d, e))? {
            let entry = entry.map_err(|e| read(&d, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for f in &files {
        let rel = f.strip_prefix(dir).expect("below dir");
        let data = std::fs::read(f).map_err(|e| read(f, e))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, rel, data.as_slice())
            .map_err(|e| read(f, e))?;
    }
    let gz = tar.into_inner().map_err(|e| read(dir, e))?;
    gz.finish().map_err(|e| read(dir, e))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Local inputs checked before any AWS call.
struct Inputs {
    layout: SubnetLayout,
    arch: Arch,
    agent: Vec<u8>,
    agent_path: PathBuf,
    models: Option<Vec<u8>>,
}

fn default_agent_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("fossa-agent");
    p.is_file().then_some(p)
}

fn check_inputs(args: &LaunchArgs, progress: &Progress) -> Result<Inputs> {
    let plan::Shape { layout, arch } = plan::check_shape(args)?;
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            fossa_contract::limits::check_password(PASSWORD_ENV, &p)
                .map_err(|e| Error::Usage(e.to_string()))?;
        }
    }
    let agent_path = match &args.agent_binary {
        Some(p) => p.clone(),
        None => default_agent_path().ok_or_else(|| {
            Error::Usage(
                "no agent binary: pass --agent-binary PATH to a static Linux build of fossa-agent (see README: Building the agent)"
                    .into(),
            )
        })?,
    };
    let agent = std::fs::read(&agent_path).map_err(|source| Error::Read {
        path: agent_path.clone(),
        source,
    })?;
    let info = elf::check(&agent, arch).map_err(|source| Error::AgentBinary {
        path: agent_path.clone(),
        source,
    })?;
    if info.dynamic {
        progress.note(&format!(
            "warning: {} is dynamically linked; it may not run on the instance's AMI. A static musl build is safer (see README).",
            agent_path.display()
        ));
    }
    let models = match &args.models {
        Some(dir) if !dir.is_dir() => {
            return Err(Error::Usage(format!(
                "--models {}: not a directory of model files",
                dir.display()
            )))
        }
        Some(dir) => Some(models_tarball(dir)?),
        None => None,
    };
    Ok(Inputs {
        layout,
        arch,
        agent,
        agent_path,
        models,
    })
}

async fn public_ip_cidr() -> Result<Ipv4Net> {
    let fail = |why: String| {
        Error::Usage(format!(
            "could not find your public IP address ({why}); pass --allow-cidr YOUR.IP.ADDRESS/32 to say who may reach the UI"
        ))
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let url =
        std::env::var(PUBLIC_IP_URL_ENV).unwrap_or_else(|_| "https://checkip.amazonaws.com".into());
    let text = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?
        .text()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let ip: std::net::Ipv4Addr = text
        .trim()
        .parse()
        .map_err(|_| fail(format!("got {:?}", text.trim())))?;
    Ok(Ipv4Net::new(ip, 32).expect("32 is valid"))
}

/// What `launch` found or made, for printing and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Launched {
    /// The stack config written to SSM.
    pub config: StackConfig,
    /// Gateway instance id.
    pub instance_id: String,
    /// Its public IP, once it has one.
    pub public_ip: Option<String>,
}

/// Converges the stack; see the module docs.
pub struct Launcher<'a> {
    c: &'a Clients,
    stack: StackName,
    p: Progress,
    id: Identity,
}

impl<'a> Launcher<'a> {
    async fn vpc(&mut self, cidr: &Ipv4Net) -> Result<String> {
        let ec2 = &self.c.ec2;
        let name = self.stack.vpc();
        let found = ec2
            .describe_vpcs()
            .filters(stack_filter(&self.stack))
            .send()
            .await
            .aws("ec2:DescribeVpcs", &name)?;
        let (id, mut outcome) = match found.vpcs().first() {
            Some(v) => {
                let id = v.vpc_id().ok_or_else(|| missing("VPC id"))?.to_owned();
                if v.cidr_block() != Some(&cidr.to_string()) {
                    return Err(Error::Usage(format!(
                        "stack {} already has VPC {id} with CIDR {}, not --vpc-cidr {cidr}: pass --vpc-cidr {} or destroy the stack first",
                        self.stack,
                        v.cidr_block().unwrap_or("?"),
                        v.cidr_block().unwrap_or("?")
                    )));
                }
                (id, Outcome::Found)
            }
            None => {
                self.p.working("creating the VPC");
                let out = ec2
                    .create_vpc()
                    .cidr_block(cidr.to_string())
                    .tag_specifications(ec2_tags(ResourceType::Vpc, &self.stack, &name, None))
                    .send()
                    .await
                    .aws("ec2:CreateVpc", &name)?;
                (
                    out.vpc()
                        .and_then(|v| v.vpc_id())
                        .ok_or_else(|| missing("VPC id"))?
                        .to_owned(),
                    Outcome::Created,
                )
            }
        };
        let dns = ec2
            .describe_vpc_attribute()
            .vpc_id(&id)
            .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
            .send()
            .await
            .aws("ec2:DescribeVpcAttribute", &id)?;
        if dns.enable_dns_hostnames().and_then(|a| a.value()) != Some(true) {
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_support(on())
                .send()
                .await
                .aws("ec2:ModifyVpcAttribute", &id)?;
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_hostnames(on())
                .send()
                .await
                .aws("ec2:ModifyVpcAttribute", &id)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "VPC", &format!("{id} {cidr}"));
        Ok(id)
    }

    async fn internet_gateway(&mut self, vpc: &str) -> Result<String> {
        let ec2 = &self.c.ec2;
        let found = ec2
            .describe_internet_gateways()
            .filters(stack_filter(&self.stack))
            .send()
            .await
            .aws("ec2:DescribeInternetGateways", self.stack.prefix())?;
        let (id, attached, mut outcome) = match found.internet_gateways().first() {
            Some(g) => (
                g.internet_gateway_id()
                    .ok_or_else(|| missing("gateway id"))?
                    .to_owned(),
                g.attachments().iter().any(|a| a.vpc_id() == Some(vpc)),
                Outcome::Found,
            ),
            None => {
                let out = ec2
                    .create_internet_gateway()
                    .tag_specifications(ec2_tags(
                        ResourceType::InternetGateway,
                        &self.stack,
                        &self.stack.prefix(),
                        None,
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateInternetGateway", self.stack.prefix())?;
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| missing("gateway id"))?;
                (id.to_owned(), false, Outcome::Created)
            }
        };
        if !attached {
            ec2.attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
                .aws("ec2:AttachInternetGateway", &id)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "internet gateway", &id);
        Ok(id)
    }

    async fn subnets(&mut self, vpc: &str, layout: &SubnetLayout) -> Result<(Subnet, Vec<Subnet>)> {
        let ec2 = &self.c.ec2;
        let zones = ec2
            .describe_availability_zones()
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .aws("ec2:DescribeAvailabilityZones", &self.c.region)?;
        let mut zones: Vec<String> = zones
            .availability_zones()
            .iter()
            .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        zones.sort();
        if zones.len() < 2 {
            return Err(Error::Usage(format!(
                "region {} offers fewer than two availability zones; pick another --region",
                self.c.region
            )));
        }
        let found = ec2
            .describe_subnets()
            .filters(stack_filter(&self.stack))
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .send()
            .await
            .aws("ec2:DescribeSubnets", self.stack.prefix())?;
        let mut by_role: HashMap<String, aws_sdk_ec2::types::Subnet> = found
            .subnets()
            .iter()
            .filter_map(|s| tag_value(s.tags(), tags::ROLE).map(|r| (r.to_owned(), s.clone())))
            .collect();
        let wanted = [
            (
                "public",
                self.stack.public_subnet(),
                layout.public,
                zones[0].clone(),
            ),
            (
                "private-1",
                self.stack.private_subnet(0),
                layout.private[0],
                zones[0].clone(),
            ),
            (
                "private-2",
                self.stack.private_subnet(1),
                layout.private[1],
                zones[1].clone(),
            ),
        ];
        let mut out = Vec::new();
        for (role, name, cidr, az) in wanted {
            let (subnet, mut outcome) = match by_role.remove(role) {
                Some(s) => (s, Outcome::Found),
                None => {
                    let created = ec2
                        .create_subnet()
                        .vpc_id(vpc)
                        .cidr_block(cidr.to_string())
                        .availability_zone(&az)
                        .tag_specifications(ec2_tags(
                            ResourceType::Subnet,
                            &self.stack,
                            &name,
                            Some(role),
                        ))
                        .send()
                        .await
                        .aws("ec2:CreateSubnet", &name)?;
                    (
                        created.subnet().cloned().ok_or_else(|| missing("subnet"))?,
                        Outcome::Created,
                    )
                }
            };
            let id = subnet
                .subnet_id()
                .ok_or_else(|| missing("subnet id"))?
                .to_owned();
            if role == "public" && subnet.map_public_ip_on_launch() != Some(true) {
                ec2.modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(on())
                    .send()
                    .await
                    .aws("ec2:ModifySubnetAttribute", &id)?;
                if outcome == Outcome::Found {
                    outcome = Outcome::Updated;
                }
            }
            let s = Subnet {
                id: id.clone(),
                cidr: subnet.cidr_block().unwrap_or(&cidr.to_string()).to_owned(),
                az: subnet.availability_zone().unwrap_or(&az).to_owned(),
            };
            self.p.done(
                outcome,
                &format!("{role} subnet"),
                &format!("{id} {} {}", s.cidr, s.az),
            );
            out.push(s);
        }
        let public = out.remove(0);
        Ok((public, out))
    }

    /// Ensures the route table with `role` exists, routes 0.0.0.0/0 to
    /// `target` (an IGW or an ENI) and is associated with `subnets`.
    async fn route_table(
        &mut self,
        vpc: &str,
        role: &str,
        target: Target<'_>,
        subnets: &[&str],
    ) -> Result<String> {
        let ec2 = &self.c.ec2;
        let name = format!("{}-{role}", self.stack.prefix());
        let found = ec2
            .describe_route_tables()
            .filters(stack_filter(&self.stack))
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::ROLE))
                    .values(role)
                    .build(),
            )
            .send()
            .await
            .aws("ec2:DescribeRouteTables", &name)?;
        let (table, mut outcome) = match found.route_tables().first() {
            Some(t) => (t.clone(), Outcome::Found),
            None => {
                let out = ec2
                    .create_route_table()
                    .vpc_id(vpc)
                    .tag_specifications(ec2_tags(
                        ResourceType::RouteTable,
                        &self.stack,
                        &name,
                        Some(role),
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateRouteTable", &name)?;
                (
                    out.route_table()
                        .cloned()
                        .ok_or_else(|| missing("route table"))?,
                    Outcome::Created,
                )
            }
        };
        let id = table
            .route_table_id()
            .ok_or_else(|| missing("route table id"))?
            .to_owned();
        let default = table
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
        let (has_route, right_target) = match (default, target) {
            (None, _) => (false, false),
            (Some(r), Target::Gateway(g)) => (true, r.gateway_id() == Some(g)),
            (Some(r), Target::Eni(e)) => (true, r.network_interface_id() == Some(e)),
        };
        if !right_target {
            macro_rules! route {
                ($call:ident, $name:literal) => {{
                    let b = ec2
                        .$call()
                        .route_table_id(&id)
                        .destination_cidr_block("0.0.0.0/0");
                    let b = match target {
                        Target::Gateway(g) => b.gateway_id(g),
                        Target::Eni(e) => b.network_interface_id(e),
                    };
                    b.send().await.map(|_| ()).aws($name, &id)?;
                }};
            }
            if has_route {
                route!(replace_route, "ec2:ReplaceRoute");
            } else {
                route!(create_route, "ec2:CreateRoute");
            }
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        for subnet in subnets {
            if !table
                .associations()
                .iter()
                .any(|a| a.subnet_id() == Some(subnet))
            {
                ec2.associate_route_table()
                    .route_table_id(&id)
                    .subnet_id(*subnet)
                    .send()
                    .await
                    .aws("ec2:AssociateRouteTable", &id)?;
                if outcome == Outcome::Found {
                    outcome = Outcome::Updated;
                }
            }
        }
        let via = match target {
            Target::Gateway(g) => g,
            Target::Eni(e) => e,
        };
        self.p.done(
            outcome,
            &format!("{role} route table"),
            &format!("{id} 0.0.0.0/0 -> {via}"),
        );
        Ok(id)
    }

    /// Who may reach the UI: `--allow-cidr`; else the UI rules a re-run
    /// finds on the gateway group; else (a first run) the caller's public IP.
    /// Decided before anything is made, so a failed lookup leaves nothing.
    async fn ui_sources(&self, allow: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        if let Some(a) = allow {
            return Ok(vec![a]);
        }
        let name = self.stack.gateway_security_group();
        let found = self
            .c
            .ec2
            .describe_security_groups()
            .filters(stack_filter(&self.stack))
            .filters(Filter::builder().name("group-name").values(&name).build())
            .send()
            .await
            .aws("ec2:DescribeSecurityGroups", &name)?;
        let kept: Vec<Ipv4Net> = found
            .security_groups()
            .iter()
            .flat_map(|g| plan::network::ui_sources(&existing_rules(g.ip_permissions())))
            .collect();
        if kept.is_empty() {
            Ok(vec![public_ip_cidr().await?])
        } else {
            Ok(kept)
        }
    }

    /// The two groups with exactly the desired rules: missing ones are added
    /// and stale ones (an old `--allow-cidr`, rules of earlier versions)
    /// revoked; the UI is open to `ui`.
    async fn security_groups(
        &mut self,
        vpc: &str,
        ui: &[Ipv4Net],
        layout: &SubnetLayout,
    ) -> Result<(String, String)> {
        let ec2 = &self.c.ec2;
        let found = ec2
            .describe_security_groups()
            .filters(stack_filter(&self.stack))
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .send()
            .await
            .aws("ec2:DescribeSecurityGroups", self.stack.prefix())?;
        let mut groups: HashMap<String, aws_sdk_ec2::types::SecurityGroup> = found
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name().map(|n| (n.to_owned(), g.clone())))
            .collect();
        let mut ids = Vec::new();
        let mut outcomes = Vec::new();
        for (name, desc) in [
            (
                self.stack.gateway_security_group(),
                "fossa gateway: UI, NAT and broker",
            ),
            (
                self.stack.task_security_group(),
                "fossa workers: Fossa API from the gateway only",
            ),
        ] {
            match groups.get(&name) {
                Some(g) => {
                    ids.push(g.group_id().ok_or_else(|| missing("group id"))?.to_owned());
                    outcomes.push(Outcome::Found);
                }
                None => {
                    let out = ec2
                        .create_security_group()
                        .group_name(&name)
                        .description(desc)
                        .vpc_id(vpc)
                        .tag_specifications(ec2_tags(
                            ResourceType::SecurityGroup,
                            &self.stack,
                            &name,
                            None,
                        ))
                        .send()
                        .await
                        .aws("ec2:CreateSecurityGroup", &name)?;
                    ids.push(
                        out.group_id()
                            .ok_or_else(|| missing("group id"))?
                            .to_owned(),
                    );
                    outcomes.push(Outcome::Created);
                    groups.remove(&name);
                }
            }
        }
        let (gw, task) = (ids[0].clone(), ids[1].clone());
        let ui_text = ui
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let plans = [
            (
                self.stack.gateway_security_group(),
                gw.clone(),
                plan::gateway_ingress(ui, layout, &task),
            ),
            (
                self.stack.task_security_group(),
                task.clone(),
                plan::task_ingress(&gw),
            ),
        ];
        for (i, (name, id, desired)) in plans.into_iter().enumerate() {
            let existing = groups
                .get(&name)
                .map(|g| existing_rules(g.ip_permissions()))
                .unwrap_or_default();
            let add = plan::missing_rules(&desired, &existing);
            if !add.is_empty() {
                ec2.authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(add.iter().map(to_permission).collect()))
                    .send()
                    .await
                    .aws("ec2:AuthorizeSecurityGroupIngress", &name)?;
                if outcomes[i] == Outcome::Found {
                    outcomes[i] = Outcome::Updated;
                }
            }
            let stale = plan::stale_rules(&desired, &existing);
            if !stale.is_empty() {
                ec2.revoke_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(stale.iter().map(to_permission).collect()))
                    .send()
                    .await
                    .aws("ec2:RevokeSecurityGroupIngress", &name)?;
                if outcomes[i] == Outcome::Found {
                    outcomes[i] = Outcome::Updated;
                }
            }
            let what = if i == 0 {
                format!(
                    "{id} {name} ({} rules, UI open to {ui_text})",
                    desired.len()
                )
            } else {
                format!("{id} {name} ({} rules)", desired.len())
            };
            self.p.done(outcomes[i], "security group", &what);
        }
        Ok((gw, task))
    }
}

#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Gateway(&'a str),
    Eni(&'a str),
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

fn to_permission(r: &IngressRule) -> IpPermission {
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

impl Launcher<'_> {
    async fn role(&mut self, plan: &RolePlan, partition: &str) -> Result<String> {
        let iam = &self.c.iam;
        let name = plan.name.as_str();
        let mut outcome = Outcome::Found;
        let arn = match iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .aws("iam:GetRole", name)
        {
            Ok(out) => {
                let role = out.role().ok_or_else(|| missing("role"))?;
                let trust = role.assume_role_policy_document().unwrap_or_default();
                if !same_json(trust, &plan.trust) {
                    iam.update_assume_role_policy()
                        .role_name(name)
                        .policy_document(plan.trust.to_string())
                        .send()
                        .await
                        .aws("iam:UpdateAssumeRolePolicy", name)?;
                    outcome = Outcome::Updated;
                }
                role.arn().to_owned()
            }
            Err(e) if e.is_code("NoSuchEntity") => {
                outcome = Outcome::Created;
                let mut b = iam
                    .create_role()
                    .role_name(name)
                    .description(format!("fossa-gateway stack {}", self.stack))
                    .assume_role_policy_document(plan.trust.to_string());
                b = b.set_tags(Some(iam_tags(&self.stack)?));
                let out = b.send().await.aws("iam:CreateRole", name)?;
                out.role()
                    .map(|r| r.arn().to_owned())
                    .ok_or_else(|| missing("role"))?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(doc) = &plan.inline {
            let current = iam
                .get_role_policy()
                .role_name(name)
                .policy_name(plan::iam::INLINE_POLICY_NAME)
                .send()
                .await
                .aws("iam:GetRolePolicy", name);
            let same = match current {
                Ok(p) => same_json(p.policy_document(), doc),
                Err(e) if e.is_code("NoSuchEntity") => false,
                Err(e) => return Err(e.into()),
            };
            if !same {
                iam.put_role_policy()
                    .role_name(name)
                    .policy_name(plan::iam::INLINE_POLICY_NAME)
                    .policy_document(doc.to_string())
                    .send()
                    .await
                    .aws("iam:PutRolePolicy", name)?;
                if outcome == Outcome::Found {
                    outcome = Outcome::Updated;
                }
            }
        }
        // No managed policy is wanted: detach the ones earlier versions attached.
        if outcome != Outcome::Created {
            let attached = iam
                .list_attached_role_policies()
                .role_name(name)
                .send()
                .await
                .aws("iam:ListAttachedRolePolicies", name)?;
            let retired = plan::iam::retired_managed_policies(partition);
            for p in attached.attached_policies() {
                let Some(arn) = p.policy_arn() else { continue };
                if retired.iter().any(|r| r == arn) {
                    iam.detach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send()
                        .await
                        .aws("iam:DetachRolePolicy", name)?;
                    outcome = Outcome::Updated;
                }
            }
        }
        self.p.done(outcome, "IAM role", name);
        Ok(arn)
    }

    async fn instance_profile(&mut self) -> Result<()> {
        let iam = &self.c.iam;
        let name = self.stack.instance_profile();
        let role = self.stack.gateway_role();
        let mut outcome = Outcome::Found;
        let has_role = match iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
            .aws("iam:GetInstanceProfile", &name)
        {
            Ok(out) => out
                .instance_profile()
                .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role)),
            Err(e) if e.is_code("NoSuchEntity") => {
                let mut b = iam.create_instance_profile().instance_profile_name(&name);
                b = b.set_tags(Some(iam_tags(&self.stack)?));
                b.send().await.aws("iam:CreateInstanceProfile", &name)?;
                outcome = Outcome::Created;
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !has_role {
            iam.add_role_to_instance_profile()
                .instance_profile_name(&name)
                .role_name(&role)
                .send()
                .await
                .aws("iam:AddRoleToInstanceProfile", &name)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "instance profile", &name);
        Ok(())
    }

    /// The bucket, with its public-access block and TLS-only policy checked
    /// (and repaired) on every run, not only when it is made.
    async fn bucket(&mut self, bucket: &str, policy: &serde_json::Value) -> Result<()> {
        let s3 = &self.c.s3;
        let mut outcome = Outcome::Found;
        match s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                let mut b = s3.create_bucket().bucket(bucket);
                if self.c.region != "us-east-1" {
                    b = b.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(self.c.region.as_str()))
                            .build(),
                    );
                }
                b.send().await.aws("s3:CreateBucket", bucket)?;
                outcome = Outcome::Created;
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                return Err(Error::Usage(format!(
                    "bucket {bucket} exists but belongs to another account or denies access; use another --stack name"
                )))
            }
            Err(e) => return Err(fossa_contract::aws::aws_error("s3:HeadBucket", bucket, e).into()),
        }
        let blocked = match s3.get_public_access_block().bucket(bucket).send().await {
            Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            }),
            Err(_) => false,
        };
        if !blocked {
            s3.put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(
                    aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .block_public_policy(true)
                        .ignore_public_acls(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .aws("s3:PutPublicAccessBlock", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let same_policy = if self.c.plain_http {
            self.p.note(
                "the endpoint is plain HTTP (an emulator): the bucket's TLS-only policy is not applied",
            );
            true
        } else {
            match s3.get_bucket_policy().bucket(bucket).send().await {
                Ok(out) => out.policy().is_some_and(|p| same_json(p, policy)),
                Err(_) => false,
            }
        };
        if !same_policy {
            s3.put_bucket_policy()
                .bucket(bucket)
                .policy(policy.to_string())
                .send()
                .await
                .aws("s3:PutBucketPolicy", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let tagged = match s3.get_bucket_tagging().bucket(bucket).send().await {
            Ok(t) => t
                .tag_set()
                .iter()
                .any(|t| t.key() == tags::STACK && t.value() == self.stack.as_str()),
            Err(_) => false,
        };
        if !tagged {
            let mut set = aws_sdk_s3::types::Tagging::builder();
            for (k, v) in tags::standard(&self.stack, tags::BY_BOOTSTRAP) {
                set = set.tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| Error::Unexpected(e.to_string()))?,
                );
            }
            s3.put_bucket_tagging()
                .bucket(bucket)
                .tagging(set.build().map_err(|e| Error::Unexpected(e.to_string()))?)
                .send()
                .await
                .aws("s3:PutBucketTagging", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "artifact bucket", bucket);
        Ok(())
    }

    /// Uploads `bytes` to `key` unless an object with the same SHA-256 is there.
    async fn artifact(
        &mut self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<String> {
        let sha = sha256_hex(bytes);
        let s3 = &self.c.s3;
        let same = match s3.head_object().bucket(bucket).key(key).send().await {
            Ok(h) => h.metadata().and_then(|m| m.get("sha256")) == Some(&sha),
            Err(_) => false,
        };
        let outcome = if same {
            Outcome::Found
        } else {
            self.p
                .working(&format!("uploading {what} ({} KiB)", bytes.len() / 1024));
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .metadata("sha256", &sha)
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .aws("s3:PutObject", format!("s3://{bucket}/{key}"))?;
            Outcome::Created
        };
        self.p.done(
            outcome,
            what,
            &format!("s3://{bucket}/{key} sha256 {}", &sha[..12]),
        );
        Ok(sha)
    }

    /// Writes parameter `key` unless it already holds `value`; returns whether it wrote.
    async fn parameter(
        &mut self,
        key: &str,
        value: &str,
        secure: bool,
        overwrite: bool,
    ) -> Result<Outcome> {
        let ssm_c = &self.c.ssm;
        let name = self.stack.ssm_parameter(key);
        let current = ssm_c
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .aws("ssm:GetParameter", &name);
        let (exists, same) = match current {
            Ok(p) => {
                let v = p.parameter().and_then(|p| p.value()).unwrap_or_default();
                let as_json = |x: &str| serde_json::from_str::<serde_json::Value>(x).ok();
                (
                    true,
                    v == value || (!secure && as_json(v).is_some() && as_json(v) == as_json(value)),
                )
            }
            Err(e) if e.is_code("ParameterNotFound") => (false, false),
            Err(e) => return Err(e.into()),
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

    async fn instance(
        &mut self,
        args: &LaunchArgs,
        inputs: &Inputs,
        subnet: &str,
        sg: &str,
        agent_sha: &str,
        bucket: &str,
    ) -> Result<(String, String, Option<String>)> {
        let ec2 = &self.c.ec2;
        let name = self.stack.gateway_instance();
        let found = ec2
            .describe_instances()
            .filters(stack_filter(&self.stack))
            .filters(state_filter(&USABLE_STATES))
            .send()
            .await
            .aws("ec2:DescribeInstances", &name)?;
        let existing = found
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .cloned();
        let (instance, mut outcome) = match existing {
            Some(i) => (i, Outcome::Found),
            None => {
                let ami = match &args.ami {
                    Some(a) => a.clone(),
                    None => {
                        let p = inputs.arch.al2023_parameter();
                        let out = self
                            .c
                            .ssm
                            .get_parameter()
                            .name(&p)
                            .send()
                            .await
                            .aws("ssm:GetParameter", &p)?;
                        out.parameter()
                            .and_then(|p| p.value())
                            .ok_or_else(|| missing("AMI id"))?
                            .to_owned()
                    }
                };
                let url = self
                    .c
                    .s3
                    .get_object()
                    .bucket(bucket)
                    .key(AGENT_OBJECT_KEY)
                    .presigned(
                        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(
                            fossa_contract::limits::AGENT_URL_TTL_SECS,
                        ))
                        .map_err(|e| Error::Unexpected(e.to_string()))?,
                    )
                    .await
                    .aws("s3:GetObject (presign)", AGENT_OBJECT_KEY)?;
                let agent_toml = AgentToml {
                    stack: self.stack.clone(),
                    region: self.c.region.clone(),
                    endpoint_url: None,
                    state_dir: fossa_contract::config::DEFAULT_STATE_DIR.into(),
                    listen: fossa_contract::config::DEFAULT_LISTEN
                        .parse()
                        .expect("constant"),
                    registry: None,
                    base_image: None,
                    broker_image: None,
                    broker_address: None,
                    egress_check: None,
                    duties: None,
                    tls_cert: None,
                    tls_key: None,
                };
                let user_data = UserData {
                    agent: &agent_toml,
                    agent_url: url.uri(),
                    agent_sha256: agent_sha,
                }
                .render()
                .map_err(|e| Error::Unexpected(e.to_string()))?;
                self.p.working("starting the gateway instance");
                let mut attempt = 0;
                let out = loop {
                    attempt += 1;
                    let r = ec2
                        .run_instances()
                        .image_id(&ami)
                        .instance_type(InstanceType::from(args.instance_type.as_str()))
                        .min_count(1)
                        .max_count(1)
                        .user_data(aws_smithy_types::base64::encode(user_data.as_bytes()))
                        .iam_instance_profile(
                            IamInstanceProfileSpecification::builder()
                                .name(self.stack.instance_profile())
                                .build(),
                        )
                        .metadata_options(
                            InstanceMetadataOptionsRequest::builder()
                                .http_tokens(HttpTokensState::Required)
                                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                                // No container on the gateway uses a bridge network,
                                // so no extra hop: containers cannot reach IMDS.
                                .http_put_response_hop_limit(1)
                                .build(),
                        )
                        .network_interfaces(
                            InstanceNetworkInterfaceSpecification::builder()
                                .device_index(0)
                                .subnet_id(subnet)
                                .groups(sg)
                                .associate_public_ip_address(true)
                                .build(),
                        )
                        .tag_specifications(ec2_tags(
                            ResourceType::Instance,
                            &self.stack,
                            &name,
                            Some("gateway"),
                        ))
                        .tag_specifications(ec2_tags(
                            ResourceType::Volume,
                            &self.stack,
                            &name,
                            None,
                        ))
                        .tag_specifications(ec2_tags(
                            ResourceType::NetworkInterface,
                            &self.stack,
                            &name,
                            None,
                        ))
                        .send()
                        .await
                        .aws("ec2:RunInstances", &name);
                    match r {
                        // A new instance profile takes a few seconds to be usable.
                        Err(e) if attempt < 20 && e.detail.contains("nstance profile") => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        other => break other?,
                    }
                };
                (
                    out.instances()
                        .first()
                        .cloned()
                        .ok_or_else(|| missing("instance"))?,
                    Outcome::Created,
                )
            }
        };
        let id = instance
            .instance_id()
            .ok_or_else(|| missing("instance id"))?
            .to_owned();
        let eni = instance
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id())
            .ok_or_else(|| missing("instance network interface"))?
            .to_owned();
        let imds_ok = instance.metadata_options().is_some_and(|m| {
            m.http_tokens() == Some(&HttpTokensState::Required)
                && m.http_put_response_hop_limit() == Some(1)
        });
        if !imds_ok {
            ec2.modify_instance_metadata_options()
                .instance_id(&id)
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .send()
                .await
                .aws("ec2:ModifyInstanceMetadataOptions", &id)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        if instance.source_dest_check() != Some(false) {
            ec2.modify_instance_attribute()
                .instance_id(&id)
                .source_dest_check(off())
                .send()
                .await
                .aws("ec2:ModifyInstanceAttribute", &id)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let ip = instance.public_ip_address().map(str::to_owned);
        self.p.done(
            outcome,
            "gateway instance",
            &format!(
                "{id} {} {}",
                args.instance_type,
                ip.as_deref().unwrap_or("")
            ),
        );
        Ok((id, eni, ip))
    }

    async fn public_ip(&self, instance: &str) -> Result<Option<String>> {
        let out = self
            .c
            .ec2
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .aws("ec2:DescribeInstances", instance)?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.public_ip_address().map(str::to_owned)))
    }
}

/// `launch`: see the module docs.
pub async fn run(args: &LaunchArgs) -> Result<()> {
    let launched = launch(args).await?;
    let stack = &args.stack.stack;
    let mut out = std::io::stdout().lock();
    let ip = launched
        .public_ip
        .as_deref()
        .unwrap_or("<public ip pending>");
    let _ = writeln!(
        out,
        "fossa-gateway stack {stack} is {}.",
        if args.no_wait {
            "launched (not waiting for the agent)"
        } else {
            "up"
        }
    );
    let _ = writeln!(out, "  URL:       https://{ip}/");
    let _ = writeln!(out, "  user:      {UI_USER}");
    let _ = writeln!(out, "  password:  fossa-bootstrap password --stack {stack}");
    let _ = writeln!(
        out,
        "  shell:     aws ssm start-session --target {} --region {}",
        launched.instance_id, launched.config.region
    );
    let _ = writeln!(out, "  status:    fossa-bootstrap status --stack {stack}");
    Ok(())
}

/// Runs every step and returns what the stack holds.
pub async fn launch(args: &LaunchArgs) -> Result<Launched> {
    let progress = Progress::new();
    let inputs = check_inputs(args, &progress)?;
    let c = Clients::new(&args.stack.aws()).await?;
    progress.working("checking AWS credentials");
    let id = c.identity().await?;
    let stack = args.stack.stack.clone();
    let mut l = Launcher {
        c: &c,
        stack: stack.clone(),
        p: progress,
        id,
    };
    let ui = l.ui_sources(args.allow_cidr).await?;
    l.p.note(&format!(
        "launching stack {stack} in {} (account {}), agent {}",
        c.region,
        l.id.account,
        inputs.agent_path.display()
    ));
    let vpc = l.vpc(&args.vpc_cidr).await?;
    let igw = l.internet_gateway(&vpc).await?;
    let (public, private) = l.subnets(&vpc, &inputs.layout).await?;
    l.route_table(&vpc, "public", Target::Gateway(&igw), &[&public.id])
        .await?;
    let (gw_sg, task_sg) = l.security_groups(&vpc, &ui, &inputs.layout).await?;

    let bucket = stack.bucket(&l.id.account, &c.region);
    let scope = Scope {
        stack: &stack,
        partition: &l.id.partition.clone(),
        region: &c.region,
        account: &l.id.account.clone(),
        bucket: &bucket,
    };
    let mut role_arns = Vec::new();
    for role in scope.roles() {
        role_arns.push(l.role(&role, scope.partition).await?);
        if role.name == stack.gateway_role() {
            l.instance_profile().await?;
        }
    }
    let [_, execution_role_arn, task_role_arn] = <[String; 3]>::try_from(role_arns)
        .map_err(|_| Error::Unexpected("the plan has three roles".into()))?;

    l.bucket(&bucket, &plan::storage::bucket_policy(&scope))
        .await?;
    let agent_sha = l
        .artifact(&bucket, AGENT_OBJECT_KEY, &inputs.agent, "agent binary")
        .await?;
    if let Some(models) = &inputs.models {
        l.artifact(&bucket, MODELS_OBJECT_KEY, models, "models tarball")
            .await?;
    }

    let config = StackConfig {
        version: STACK_CONFIG_VERSION,
        stack: stack.clone(),
        region: c.region.clone(),
        account_id: l.id.account.clone(),
        vpc_id: vpc.clone(),
        vpc_cidr: args.vpc_cidr.to_string(),
        public_subnet: public.clone(),
        private_subnets: private.clone(),
        gateway_security_group: gw_sg.clone(),
        task_security_group: task_sg,
        execution_role_arn,
        task_role_arn,
        bucket: bucket.clone(),
        has_models: inputs.models.is_some(),
        workers: args.workers,
        cpu: args.cpu,
        memory: args.memory,
    };
    let config_json = serde_json::to_string_pretty(&config).expect("config serialises");
    let o = l.parameter(ssm::CONFIG, &config_json, false, true).await?;
    l.p.done(o, "SSM parameter", &stack.ssm_parameter(ssm::CONFIG));
    let o = l
        .parameter(ssm::AGENT_SHA256, &agent_sha, false, true)
        .await?;
    l.p.done(o, "SSM parameter", &stack.ssm_parameter(ssm::AGENT_SHA256));
    let (password, overwrite) = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => (p, true),
        _ => (Alphanumeric.sample_string(&mut rand::rng(), 24), false),
    };
    let o = l
        .parameter(ssm::UI_PASSWORD, &password, true, overwrite)
        .await?;
    l.p.done(
        o,
        "SSM SecureString",
        &stack.ssm_parameter(ssm::UI_PASSWORD),
    );

    let (instance_id, eni, mut public_ip) = l
        .instance(args, &inputs, &public.id, &gw_sg, &agent_sha, &bucket)
        .await?;
    let private_ids: Vec<&str> = private.iter().map(|s| s.id.as_str()).collect();
    l.route_table(&vpc, "private", Target::Eni(&eni), &private_ids)
        .await?;

    if !args.no_wait {
        public_ip = wait_for_agent(&mut l, &instance_id, public_ip).await?;
    }
    l.p.note(&format!(
        "{} AWS API calls in {:.1}s",
        c.counter.get(),
        l.p.elapsed().as_secs_f64()
    ));
    l.p.finish();
    Ok(Launched {
        config,
        instance_id,
        public_ip,
    })
}

async fn wait_for_agent(
    l: &mut Launcher<'_>,
    instance: &str,
    mut ip: Option<String>,
) -> Result<Option<String>> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Unexpected(e.to_string()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15 * 60);
    loop {
        if ip.is_none() {
            ip = l.public_ip(instance).await?;
        }
        if let Some(addr) = &ip {
            l.p.working(&format!(
                "waiting for the agent at https://{addr}/healthz (first boot takes a few minutes)"
            ));
            if let Ok(r) = http.get(format!("https://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
        } else {
            l.p.working("waiting for the instance's public IP");
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Unexpected(format!(
                "the agent did not answer within 15 minutes; see `aws ssm start-session --target {instance}` then `journalctl -u fossa-agent` and /var/log/fossa-user-data.log. Re-run launch to keep waiting"
            )));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    l.p.done(
        Outcome::Ready,
        "agent",
        &format!("https://{}/healthz", ip.as_deref().unwrap_or("")),
    );
    let fp = l.stack.ssm_parameter(ssm::TLS_FINGERPRINT);
    if let Ok(p) = l.c.ssm.get_parameter().name(&fp).send().await {
        if let Some(v) = p.parameter().and_then(|p| p.value()) {
            l.p.note(&format!("TLS certificate SHA-256 fingerprint: {v} (your browser will show this self-signed certificate)"));
        }
    }
    Ok(ip)
}

/// `password`: prints the UI password.
pub async fn print_password(args: &StackArgs) -> Result<()> {
    let c = Clients::new(&args.aws()).await?;
    let name = args.stack.ssm_parameter(ssm::UI_PASSWORD);
    match c.ssm.get_parameter().name(&name).with_decryption(true).send().await.aws("ssm:GetParameter", &name) {
        Ok(p) => {
            println!("{}", p.parameter().and_then(|p| p.value()).unwrap_or_default());
            Ok(())
        }
        Err(e) if e.is_code("ParameterNotFound") => Err(Error::Usage(format!(
            "stack {} has no password in region {}: check --stack and --region, or run `fossa-bootstrap launch --stack {}`",
            args.stack, c.region, args.stack
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn models_tarball_is_deterministic() {
        let d = std::env::temp_dir().join(format!("fossa-models-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.py"), "x = 1\n").unwrap();
        std::fs::write(d.join("sub/b.py"), "y = 2\n").unwrap();
        let a = models_tarball(&d).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(d.join("a.py"), "x = 1\n").unwrap();
        assert_eq!(sha256_hex(&a), sha256_hex(&models_tarball(&d).unwrap()));
        std::fs::write(d.join("a.py"), "x = 3\n").unwrap();
        assert_ne!(sha256_hex(&a), sha256_hex(&models_tarball(&d).unwrap()));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
