//! `launch`'s network steps: the VPC, its internet gateway, the subnets,
//! route tables and the two security groups.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, ResourceType};
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::Subnet;
use fossa_contract::tags;
use ipnet::Ipv4Net;

use super::{public_ip_cidr, Launcher, Target};
use fossa_contract::fargate::{choose_zones, Zone};

use crate::aws::{
    after_create, ec2_tags, existing_rules, missing, on, stack_filter, tag_value, to_permission,
};
use crate::plan::{self, SubnetLayout};
use crate::progress::Outcome;
use crate::{Error, Result};

impl<'a> Launcher<'a> {
    pub(super) async fn vpc(&mut self, cidr: &Ipv4Net) -> Result<String> {
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

    pub(super) async fn internet_gateway(&mut self, vpc: &str) -> Result<String> {
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
            let req = ec2
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc);
            after_create(|| async {
                req.clone()
                    .send()
                    .await
                    .aws("ec2:AttachInternetGateway", &id)
            })
            .await?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "internet gateway", &id);
        Ok(id)
    }

    pub(super) async fn subnets(
        &mut self,
        vpc: &str,
        layout: &SubnetLayout,
        instance_type: &str,
    ) -> Result<(Subnet, Vec<Subnet>)> {
        let ec2 = &self.c.ec2;
        let zones = ec2
            .describe_availability_zones()
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .aws("ec2:DescribeAvailabilityZones", &self.c.region)?;
        let mut zones: Vec<Zone> = zones
            .availability_zones()
            .iter()
            .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
            .filter_map(|z| {
                Some(Zone {
                    name: z.zone_name()?.to_owned(),
                    id: z.zone_id().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        zones.sort_by(|a, b| a.name.cmp(&b.name));
        // Which zones offer the gateway's instance type.
        let offered = ec2
            .describe_instance_type_offerings()
            .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
            .filters(
                Filter::builder()
                    .name("instance-type")
                    .values(instance_type)
                    .build(),
            )
            .send()
            .await
            .aws("ec2:DescribeInstanceTypeOfferings", instance_type)?;
        let offered: std::collections::HashSet<String> = offered
            .instance_type_offerings()
            .iter()
            .filter_map(|o| o.location().map(str::to_owned))
            .collect();
        let (first, second) = choose_zones(&self.c.region, instance_type, &zones, |z| {
            offered.contains(z)
        })
        .map_err(|e| Error::Usage(e.to_string()))?;
        let zones = [first, second];
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
    pub(super) async fn route_table(
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
                    after_create(|| async { b.clone().send().await.map(|_| ()).aws($name, &id) })
                        .await?;
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
    pub(super) async fn ui_sources(&self, allow: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
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
    pub(super) async fn security_groups(
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
                let req = ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(add.iter().map(to_permission).collect()));
                after_create(|| async {
                    req.clone()
                        .send()
                        .await
                        .aws("ec2:AuthorizeSecurityGroupIngress", &name)
                })
                .await?;
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
