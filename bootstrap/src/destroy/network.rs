//! `destroy`'s network: route tables, security groups, subnets, the
//! internet gateway and the VPC, waiting out released dependencies.

use fossa_contract::aws::AwsResultExt;

use super::{retry_dependency, Destroyer};
use crate::aws::stack_filter;
use crate::progress::Outcome;
use crate::Result;

impl Destroyer<'_> {
    pub(super) async fn network(&mut self) -> Result<()> {
        let ec2 = self.c.ec2.clone();
        let f = || stack_filter(self.stack);
        let tables = ec2
            .describe_route_tables()
            .filters(f())
            .send()
            .await
            .aws("ec2:DescribeRouteTables", self.stack.prefix())?;
        for t in tables.route_tables() {
            let id = t.route_table_id().unwrap_or_default().to_owned();
            for a in t.associations().iter().filter(|a| a.main() != Some(true)) {
                if let Some(assoc) = a.route_table_association_id() {
                    ec2.disassociate_route_table()
                        .association_id(assoc)
                        .send()
                        .await
                        .aws("ec2:DisassociateRouteTable", assoc)?;
                }
            }
            ec2.delete_route_table()
                .route_table_id(&id)
                .send()
                .await
                .aws("ec2:DeleteRouteTable", &id)?;
            self.p.done(Outcome::Deleted, "route table", &id);
        }
        let subnets = ec2
            .describe_subnets()
            .filters(f())
            .send()
            .await
            .aws("ec2:DescribeSubnets", self.stack.prefix())?;
        for s in subnets.subnets() {
            let id = s.subnet_id().unwrap_or_default().to_owned();
            retry_dependency(&id, || async {
                ec2.delete_subnet()
                    .subnet_id(&id)
                    .send()
                    .await
                    .aws("ec2:DeleteSubnet", &id)
            })
            .await?;
            self.p.done(Outcome::Deleted, "subnet", &id);
        }
        let igws = ec2
            .describe_internet_gateways()
            .filters(f())
            .send()
            .await
            .aws("ec2:DescribeInternetGateways", self.stack.prefix())?;
        for g in igws.internet_gateways() {
            let id = g.internet_gateway_id().unwrap_or_default().to_owned();
            for a in g.attachments() {
                if let Some(vpc) = a.vpc_id() {
                    ec2.detach_internet_gateway()
                        .internet_gateway_id(&id)
                        .vpc_id(vpc)
                        .send()
                        .await
                        .aws("ec2:DetachInternetGateway", &id)?;
                }
            }
            ec2.delete_internet_gateway()
                .internet_gateway_id(&id)
                .send()
                .await
                .aws("ec2:DeleteInternetGateway", &id)?;
            self.p.done(Outcome::Deleted, "internet gateway", &id);
        }
        let sgs = ec2
            .describe_security_groups()
            .filters(f())
            .send()
            .await
            .aws("ec2:DescribeSecurityGroups", self.stack.prefix())?;
        // The two groups refer to each other: drop those rules first.
        for g in sgs.security_groups() {
            let id = g.group_id().unwrap_or_default();
            let refs: Vec<_> = g
                .ip_permissions()
                .iter()
                .filter(|p| !p.user_id_group_pairs().is_empty())
                .cloned()
                .collect();
            if !refs.is_empty() {
                ec2.revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(refs))
                    .send()
                    .await
                    .aws("ec2:RevokeSecurityGroupIngress", id)?;
            }
        }
        for g in sgs.security_groups() {
            let id = g.group_id().unwrap_or_default().to_owned();
            retry_dependency(&id, || async {
                ec2.delete_security_group()
                    .group_id(&id)
                    .send()
                    .await
                    .aws("ec2:DeleteSecurityGroup", &id)
            })
            .await?;
            self.p.done(Outcome::Deleted, "security group", &id);
        }
        let vpcs = ec2
            .describe_vpcs()
            .filters(f())
            .send()
            .await
            .aws("ec2:DescribeVpcs", self.stack.prefix())?;
        for v in vpcs.vpcs() {
            let id = v.vpc_id().unwrap_or_default().to_owned();
            retry_dependency(&id, || async {
                ec2.delete_vpc()
                    .vpc_id(&id)
                    .send()
                    .await
                    .aws("ec2:DeleteVpc", &id)
            })
            .await?;
            self.p.done(Outcome::Deleted, "VPC", &id);
        }
        Ok(())
    }
}
