//! `fossa-bootstrap destroy`: deletes everything of the stack in dependency
//! order (what the agent made first, then the instance, the network, IAM, the
//! bucket and the parameters), waits where AWS needs it, and ends by listing
//! what is left.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::StackName;

use crate::cli::DestroyArgs;
use crate::clients::Clients;
use crate::inventory::inventory;
use crate::launch::{live_instance_filter, stack_filter};
use crate::progress::{Outcome, Progress};
use crate::{Error, Result};

fn absent_ok<T>(r: std::result::Result<T, AwsError>, codes: &[&str]) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if codes.iter().any(|c| e.is_code(c)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Retries `f` while AWS reports a dependency that is still being released.
async fn retry_dependency<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, AwsError>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match f().await {
            Err(e)
                if (e.is_code("DependencyViolation") || e.is_code("InvalidParameterValue"))
                    && Instant::now() < deadline =>
            {
                tracing::info!("{what}: waiting for dependencies: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            other => return other.map_err(Into::into),
        }
    }
}

struct Destroyer<'a> {
    c: &'a Clients,
    stack: &'a StackName,
    p: Progress,
}

impl Destroyer<'_> {
    async fn ecs(&mut self) -> Result<()> {
        let ecs = &self.c.ecs;
        let cluster = self.stack.cluster();
        let found = ecs
            .describe_clusters()
            .clusters(&cluster)
            .send()
            .await
            .aws("ecs:DescribeClusters", &cluster)?;
        if found
            .clusters()
            .iter()
            .any(|c| c.status() == Some("ACTIVE"))
        {
            let services = ecs
                .list_services()
                .cluster(&cluster)
                .send()
                .await
                .aws("ecs:ListServices", &cluster)?;
            for arn in services.service_arns() {
                ecs.update_service()
                    .cluster(&cluster)
                    .service(arn)
                    .desired_count(0)
                    .send()
                    .await
                    .aws("ecs:UpdateService", arn)?;
                ecs.delete_service()
                    .cluster(&cluster)
                    .service(arn)
                    .force(true)
                    .send()
                    .await
                    .aws("ecs:DeleteService", arn)?;
                self.p.done(Outcome::Deleted, "ECS service", arn);
            }
            ecs.delete_cluster()
                .cluster(&cluster)
                .send()
                .await
                .aws("ecs:DeleteCluster", &cluster)?;
            self.p.done(Outcome::Deleted, "ECS cluster", &cluster);
        }
        let family = self.stack.task_family();
        let mut token = None;
        loop {
            let page = ecs
                .list_task_definitions()
                .family_prefix(&family)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .aws("ecs:ListTaskDefinitions", &family)?;
            for arn in page.task_definition_arns() {
                ecs.deregister_task_definition()
                    .task_definition(arn)
                    .send()
                    .await
                    .aws("ecs:DeregisterTaskDefinition", arn)?;
                self.p.done(Outcome::Deleted, "task definition", arn);
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }

    async fn ecr_and_logs(&mut self) -> Result<()> {
        let repo = self.stack.ecr_repository();
        let r = self
            .c
            .ecr
            .delete_repository()
            .repository_name(&repo)
            .force(true)
            .send()
            .await
            .aws("ecr:DeleteRepository", &repo);
        if absent_ok(r, &["RepositoryNotFoundException"])?.is_some() {
            self.p
                .done(Outcome::Deleted, "ECR repository (with its images)", &repo);
        }
        let groups = self
            .c
            .logs
            .describe_log_groups()
            .log_group_name_prefix(format!("/fossa/{}/", self.stack))
            .send()
            .await
            .aws("logs:DescribeLogGroups", self.stack.log_group())?;
        for g in groups
            .log_groups()
            .iter()
            .filter_map(|g| g.log_group_name())
        {
            self.c
                .logs
                .delete_log_group()
                .log_group_name(g)
                .send()
                .await
                .aws("logs:DeleteLogGroup", g)?;
            self.p.done(Outcome::Deleted, "log group", g);
        }
        Ok(())
    }

    async fn instances(&mut self) -> Result<()> {
        let ec2 = &self.c.ec2;
        let live = live_instance_filter;
        let found = ec2
            .describe_instances()
            .filters(stack_filter(self.stack))
            .filters(live())
            .send()
            .await
            .aws("ec2:DescribeInstances", self.stack.prefix())?;
        let ids: Vec<String> = found
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ec2.terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .aws("ec2:TerminateInstances", ids.join(","))?;
        self.p
            .working("waiting for the gateway instance to terminate");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let left = ec2
                .describe_instances()
                .filters(stack_filter(self.stack))
                .filters(live())
                .send()
                .await
                .aws("ec2:DescribeInstances", ids.join(","))?;
            if left.reservations().iter().all(|r| r.instances().is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Unexpected(format!(
                    "instances {} did not terminate within 10 minutes; run destroy again",
                    ids.join(",")
                )));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        self.p
            .done(Outcome::Deleted, "gateway instance", &ids.join(","));
        Ok(())
    }

    async fn network(&mut self) -> Result<()> {
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

    async fn iam(&mut self) -> Result<()> {
        let iam = &self.c.iam;
        let profile = self.stack.instance_profile();
        let found = absent_ok(
            iam.get_instance_profile()
                .instance_profile_name(&profile)
                .send()
                .await
                .aws("iam:GetInstanceProfile", &profile),
            &["NoSuchEntity"],
        )?;
        if let Some(found) = found {
            for role in found
                .instance_profile()
                .map(|p| p.roles())
                .unwrap_or_default()
            {
                iam.remove_role_from_instance_profile()
                    .instance_profile_name(&profile)
                    .role_name(role.role_name())
                    .send()
                    .await
                    .aws("iam:RemoveRoleFromInstanceProfile", &profile)?;
            }
            iam.delete_instance_profile()
                .instance_profile_name(&profile)
                .send()
                .await
                .aws("iam:DeleteInstanceProfile", &profile)?;
            self.p.done(Outcome::Deleted, "instance profile", &profile);
        }
        for role in [
            self.stack.gateway_role(),
            self.stack.execution_role(),
            self.stack.task_role(),
        ] {
            let inline = absent_ok(
                iam.list_role_policies()
                    .role_name(&role)
                    .send()
                    .await
                    .aws("iam:ListRolePolicies", &role),
                &["NoSuchEntity"],
            )?;
            let Some(inline) = inline else { continue };
            for name in inline.policy_names() {
                iam.delete_role_policy()
                    .role_name(&role)
                    .policy_name(name)
                    .send()
                    .await
                    .aws("iam:DeleteRolePolicy", &role)?;
            }
            let attached = iam
                .list_attached_role_policies()
                .role_name(&role)
                .send()
                .await
                .aws("iam:ListAttachedRolePolicies", &role)?;
            for p in attached
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn())
            {
                iam.detach_role_policy()
                    .role_name(&role)
                    .policy_arn(p)
                    .send()
                    .await
                    .aws("iam:DetachRolePolicy", &role)?;
            }
            iam.delete_role()
                .role_name(&role)
                .send()
                .await
                .aws("iam:DeleteRole", &role)?;
            self.p.done(Outcome::Deleted, "IAM role", &role);
        }
        Ok(())
    }

    async fn bucket(&mut self, account: &str) -> Result<()> {
        let s3 = &self.c.s3;
        let bucket = self.stack.bucket(account, &self.c.region);
        if s3.head_bucket().bucket(&bucket).send().await.is_err() {
            return Ok(());
        }
        loop {
            let page = s3
                .list_object_versions()
                .bucket(&bucket)
                .send()
                .await
                .aws("s3:ListObjectVersions", &bucket)?;
            let mut ids: Vec<aws_sdk_s3::types::ObjectIdentifier> = Vec::new();
            for v in page.versions() {
                if let Some(k) = v.key() {
                    ids.push(
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .set_version_id(v.version_id().map(str::to_owned))
                            .build()
                            .map_err(|e| Error::Unexpected(e.to_string()))?,
                    );
                }
            }
            for m in page.delete_markers() {
                if let Some(k) = m.key() {
                    ids.push(
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .set_version_id(m.version_id().map(str::to_owned))
                            .build()
                            .map_err(|e| Error::Unexpected(e.to_string()))?,
                    );
                }
            }
            if ids.is_empty() {
                break;
            }
            for chunk in ids.chunks(1000) {
                let del = aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(chunk.to_vec()))
                    .quiet(true)
                    .build()
                    .map_err(|e| Error::Unexpected(e.to_string()))?;
                s3.delete_objects()
                    .bucket(&bucket)
                    .delete(del)
                    .send()
                    .await
                    .aws("s3:DeleteObjects", &bucket)?;
            }
        }
        s3.delete_bucket()
            .bucket(&bucket)
            .send()
            .await
            .aws("s3:DeleteBucket", &bucket)?;
        self.p.done(
            Outcome::Deleted,
            "artifact bucket (with its objects)",
            &bucket,
        );
        Ok(())
    }

    async fn parameters(&mut self) -> Result<()> {
        let path = self.stack.ssm_path();
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .c
                .ssm
                .get_parameters_by_path()
                .path(&path)
                .recursive(true)
                .set_next_token(token)
                .send()
                .await
                .aws("ssm:GetParametersByPath", &path)?;
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_owned)),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for chunk in names.chunks(10) {
            self.c
                .ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .aws("ssm:DeleteParameters", &path)?;
        }
        if !names.is_empty() {
            self.p.done(
                Outcome::Deleted,
                "SSM parameters",
                &format!("{} under {path}", names.len()),
            );
        }
        Ok(())
    }
}

fn confirm(stack: &StackName, region: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!("destroy deletes every resource of stack {stack}: pass --yes to confirm when not at a terminal")));
    }
    print!("Delete every resource of stack {stack} in {region}? Type the stack name to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() != stack.as_str() {
        return Err(Error::Usage("not confirmed; nothing was deleted".into()));
    }
    Ok(())
}

/// `destroy`.
pub async fn run(args: &DestroyArgs) -> Result<()> {
    let c = Clients::new(&args.stack.aws()).await?;
    let id = c.identity().await?;
    let stack = &args.stack.stack;
    let before = inventory(&c, stack, &id.account).await?;
    if before.is_empty() {
        println!("stack {stack} has no resources in {} (account {}): nothing to destroy. Check --stack and --region if you expected some.", c.region, id.account);
        return Ok(());
    }
    if !args.yes {
        confirm(stack, &c.region)?;
    }
    let mut d = Destroyer {
        c: &c,
        stack,
        p: Progress::new(),
    };
    d.ecs().await?;
    d.ecr_and_logs().await?;
    d.instances().await?;
    d.network().await?;
    d.iam().await?;
    d.bucket(&id.account).await?;
    d.parameters().await?;
    let left = inventory(&c, stack, &id.account).await?;
    d.p.note(&format!(
        "{} AWS API calls in {:.1}s",
        c.counter.get(),
        d.p.elapsed().as_secs_f64()
    ));
    d.p.finish();
    if left.is_empty() {
        println!("stack {stack} destroyed: nothing left.");
        Ok(())
    } else {
        for r in &left {
            println!("  left: {:<22} {} {}", r.kind, r.id, r.detail);
        }
        Err(Error::Unexpected(format!(
            "{} resources of stack {stack} are left; run destroy again",
            left.len()
        )))
    }
}
