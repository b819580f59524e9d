//! Finds every resource of a stack, in every service, by tag and by derived
//! name; `status` prints it and `destroy` ends by listing what is left.

use std::time::Duration;

use fossa_contract::aws::AwsResultExt;
use fossa_contract::{ssm, StackName};

use crate::aws::{live_instance_filter, stack_filter};
use crate::cli::{Output, StatusArgs};
use crate::clients::Clients;
use crate::{Error, Result};

/// One resource of the stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resource {
    /// Kind, e.g. `ec2:vpc`.
    pub kind: &'static str,
    /// Id or name.
    pub id: String,
    /// State or a short description.
    pub detail: String,
}

fn r(kind: &'static str, id: impl Into<String>, detail: impl Into<String>) -> Resource {
    Resource {
        kind,
        id: id.into(),
        detail: detail.into(),
    }
}

/// The gateway's Auto Scaling group (with its last replacement), launch
/// template and lasting parts.
async fn gateway_parts(c: &Clients, stack: &StackName) -> Result<Vec<Resource>> {
    use fossa_contract::names::Lasting;
    let mut out = Vec::new();
    let group = stack.gateway_group();
    if let Some(g) = crate::aws::find_group(&c.autoscaling, &group).await? {
        let activities = c
            .autoscaling
            .describe_scaling_activities()
            .auto_scaling_group_name(&group)
            .send()
            .await
            .aws("autoscaling:DescribeScalingActivities", &group)?;
        let detail = format!(
            "{} of {} instances; {}",
            g.instances().len(),
            g.desired_capacity().unwrap_or(0),
            crate::aws::last_replacement(activities.activities())
        );
        out.push(r("autoscaling:group", group.clone(), detail));
    }
    let templates = c
        .ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .send()
        .await
        .aws("ec2:DescribeLaunchTemplates", &group)?;
    for t in templates.launch_templates() {
        out.push(r(
            "ec2:launch-template",
            t.launch_template_name().unwrap_or_default(),
            format!(
                "default version {}",
                t.default_version_number().unwrap_or(0)
            ),
        ));
    }
    let role = |w: Lasting| crate::aws::role_filter(w);
    let enis = c
        .ec2
        .describe_network_interfaces()
        .filters(stack_filter(stack))
        .filters(role(Lasting::Interface))
        .send()
        .await
        .aws("ec2:DescribeNetworkInterfaces", stack.prefix())?;
    for e in enis.network_interfaces() {
        let on = e
            .attachment()
            .and_then(|a| a.instance_id())
            .unwrap_or("detached");
        out.push(r(
            "ec2:network-interface",
            e.network_interface_id().unwrap_or_default(),
            format!("{} on {on}", e.private_ip_address().unwrap_or_default()),
        ));
    }
    let eips = c
        .ec2
        .describe_addresses()
        .filters(stack_filter(stack))
        .filters(role(Lasting::Address))
        .send()
        .await
        .aws("ec2:DescribeAddresses", stack.prefix())?;
    for a in eips.addresses() {
        out.push(r(
            "ec2:elastic-ip",
            a.allocation_id().unwrap_or_default(),
            format!(
                "{} on {}",
                a.public_ip().unwrap_or_default(),
                a.instance_id().unwrap_or("nothing")
            ),
        ));
    }
    let vols = c
        .ec2
        .describe_volumes()
        .filters(stack_filter(stack))
        .filters(role(Lasting::Volume))
        .send()
        .await
        .aws("ec2:DescribeVolumes", stack.prefix())?;
    for v in vols.volumes() {
        let on = v
            .attachments()
            .first()
            .and_then(|a| a.instance_id())
            .unwrap_or("detached");
        out.push(r(
            "ec2:volume",
            v.volume_id().unwrap_or_default(),
            format!("data {} GiB on {on}", v.size().unwrap_or(0)),
        ));
    }
    Ok(out)
}

/// Every resource of `stack` that still exists.
pub async fn inventory(c: &Clients, stack: &StackName, account: &str) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    let ec2 = &c.ec2;
    let f = || stack_filter(stack);
    let live = live_instance_filter();
    let inst = ec2
        .describe_instances()
        .filters(f())
        .filters(live)
        .send()
        .await
        .aws("ec2:DescribeInstances", stack.prefix())?;
    for i in inst.reservations().iter().flat_map(|r| r.instances()) {
        let state = i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let ip = i.public_ip_address().unwrap_or("-");
        out.push(r(
            "ec2:instance",
            i.instance_id().unwrap_or_default(),
            format!("{state} public {ip}"),
        ));
    }
    out.extend(gateway_parts(c, stack).await?);
    let vpcs = ec2
        .describe_vpcs()
        .filters(f())
        .send()
        .await
        .aws("ec2:DescribeVpcs", stack.prefix())?;
    out.extend(vpcs.vpcs().iter().map(|v| {
        r(
            "ec2:vpc",
            v.vpc_id().unwrap_or_default(),
            v.cidr_block().unwrap_or_default(),
        )
    }));
    let igws = ec2
        .describe_internet_gateways()
        .filters(f())
        .send()
        .await
        .aws("ec2:DescribeInternetGateways", stack.prefix())?;
    out.extend(igws.internet_gateways().iter().map(|g| {
        let att = if g.attachments().is_empty() {
            "detached"
        } else {
            "attached"
        };
        r(
            "ec2:internet-gateway",
            g.internet_gateway_id().unwrap_or_default(),
            att,
        )
    }));
    let subnets = ec2
        .describe_subnets()
        .filters(f())
        .send()
        .await
        .aws("ec2:DescribeSubnets", stack.prefix())?;
    out.extend(subnets.subnets().iter().map(|s| {
        r(
            "ec2:subnet",
            s.subnet_id().unwrap_or_default(),
            format!(
                "{} {}",
                s.cidr_block().unwrap_or_default(),
                s.availability_zone().unwrap_or_default()
            ),
        )
    }));
    let rts = ec2
        .describe_route_tables()
        .filters(f())
        .send()
        .await
        .aws("ec2:DescribeRouteTables", stack.prefix())?;
    out.extend(rts.route_tables().iter().map(|t| {
        r(
            "ec2:route-table",
            t.route_table_id().unwrap_or_default(),
            format!("{} associations", t.associations().len()),
        )
    }));
    let sgs = ec2
        .describe_security_groups()
        .filters(f())
        .send()
        .await
        .aws("ec2:DescribeSecurityGroups", stack.prefix())?;
    out.extend(sgs.security_groups().iter().map(|g| {
        r(
            "ec2:security-group",
            g.group_id().unwrap_or_default(),
            g.group_name().unwrap_or_default(),
        )
    }));

    for role in [
        stack.gateway_role(),
        stack.execution_role(),
        stack.task_role(),
    ] {
        match c
            .iam
            .get_role()
            .role_name(&role)
            .send()
            .await
            .aws("iam:GetRole", &role)
        {
            Ok(_) => out.push(r("iam:role", role, "")),
            Err(e) if e.is_code("NoSuchEntity") => {}
            Err(e) => return Err(e.into()),
        }
    }
    let profile = stack.instance_profile();
    match c
        .iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .aws("iam:GetInstanceProfile", &profile)
    {
        Ok(_) => out.push(r("iam:instance-profile", profile, "")),
        Err(e) if e.is_code("NoSuchEntity") => {}
        Err(e) => return Err(e.into()),
    }

    let bucket = stack.bucket(account, &c.region);
    if c.s3.head_bucket().bucket(&bucket).send().await.is_ok() {
        let objects =
            c.s3.list_objects_v2()
                .bucket(&bucket)
                .send()
                .await
                .aws("s3:ListObjectsV2", &bucket)?;
        out.push(r(
            "s3:bucket",
            bucket,
            format!("{} objects", objects.key_count().unwrap_or(0)),
        ));
    }

    let params = c
        .ssm
        .get_parameters_by_path()
        .path(stack.ssm_path())
        .recursive(true)
        .send()
        .await
        .aws("ssm:GetParametersByPath", stack.ssm_path())?;
    out.extend(params.parameters().iter().map(|p| {
        let kind = p
            .r#type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        r("ssm:parameter", p.name().unwrap_or_default(), kind)
    }));

    let clusters = c
        .ecs
        .describe_clusters()
        .clusters(stack.cluster())
        .send()
        .await
        .aws("ecs:DescribeClusters", stack.cluster())?;
    for cl in clusters
        .clusters()
        .iter()
        .filter(|c| c.status() == Some("ACTIVE"))
    {
        out.push(r(
            "ecs:cluster",
            cl.cluster_name().unwrap_or_default(),
            format!("{} running tasks", cl.running_tasks_count()),
        ));
        let services = c
            .ecs
            .list_services()
            .cluster(stack.cluster())
            .send()
            .await
            .aws("ecs:ListServices", stack.cluster())?;
        out.extend(
            services
                .service_arns()
                .iter()
                .map(|s| r("ecs:service", s, "")),
        );
    }
    let defs = c
        .ecs
        .list_task_definitions()
        .family_prefix(stack.task_family())
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .aws("ecs:ListTaskDefinitions", stack.task_family())?;
    out.extend(
        defs.task_definition_arns()
            .iter()
            .map(|d| r("ecs:task-definition", d, "")),
    );
    match c
        .ecr
        .describe_repositories()
        .repository_names(stack.ecr_repository())
        .send()
        .await
        .aws("ecr:DescribeRepositories", stack.ecr_repository())
    {
        Ok(repos) => out.extend(repos.repositories().iter().map(|x| {
            r(
                "ecr:repository",
                x.repository_name().unwrap_or_default(),
                x.repository_uri().unwrap_or_default(),
            )
        })),
        Err(e) if e.is_code("RepositoryNotFoundException") => {}
        Err(e) => return Err(e.into()),
    }
    let groups = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/fossa/{stack}/"))
        .send()
        .await
        .aws("logs:DescribeLogGroups", stack.log_group())?;
    out.extend(
        groups
            .log_groups()
            .iter()
            .map(|g| r("logs:log-group", g.log_group_name().unwrap_or_default(), "")),
    );
    Ok(out)
}

/// `status`.
pub async fn status(args: &StatusArgs) -> Result<()> {
    let c = Clients::new(&args.stack.aws()).await?;
    let id = c.identity().await?;
    let stack = &args.stack.stack;
    let resources = inventory(&c, stack, &id.account).await?;
    if resources.is_empty() {
        return Err(Error::Usage(format!(
            "stack {stack} does not exist in {} (account {}): check --stack and --region, or create it with `fossa-bootstrap launch --stack {stack}`",
            c.region, id.account
        )));
    }
    let ip = resources
        .iter()
        .find(|r| r.kind == "ec2:instance")
        .and_then(|r| r.detail.split("public ").nth(1))
        .filter(|ip| *ip != "-")
        .map(str::to_owned);
    let address = args.ui_address.clone().or_else(|| ip.clone());
    let agent = match &address {
        Some(a) => agent_health(a).await,
        None => "no public IP".to_owned(),
    };
    let read = |key: &'static str, secret: bool| {
        crate::aws::parameter_value(&c.ssm, stack.ssm_parameter(key), secret)
    };
    let fingerprint = read(ssm::TLS_FINGERPRINT, false).await;
    let password = read(ssm::UI_PASSWORD, true).await;
    // What the agent says of its duties and workers, over HTTPS pinned to its certificate.
    let view = match (&address, &fingerprint, &password) {
        (Some(a), Some(f), Some(p)) => Some(
            crate::agent_api::overview(a, f, p)
                .await
                .map_err(|e| fossa_contract::aws::chain(&e)),
        ),
        _ => None,
    };
    let duties: Vec<serde_json::Value> = view
        .as_ref()
        .and_then(|v| v.as_ref().ok())
        .and_then(|v| v["duties"].as_array().cloned())
        .unwrap_or_default();
    let workers = view.as_ref().and_then(|v| v.as_ref().ok()).map(|v| {
        serde_json::json!({
            "desired": v["desired_workers"], "running": v["running_workers"],
            "answering": v["healthy_workers"],
        })
    });
    let cost = view
        .as_ref()
        .and_then(|v| v.as_ref().ok())
        .map(|v| v["cost"].clone());
    let view_error = view.as_ref().and_then(|v| v.as_ref().err().cloned());
    let running = view
        .as_ref()
        .and_then(|v| v.as_ref().ok())
        .map(|v| v["agent"].clone())
        .filter(|a| !a.is_null());
    match args.output {
        Output::Json => {
            let doc = serde_json::json!({
                "stack": stack, "region": c.region, "account": id.account,
                "url": address.as_ref().map(|a| format!("https://{a}/")),
                "agent": agent, "tls_fingerprint": fingerprint, "resources": resources,
                "duties": duties, "workers": workers, "cost": cost, "agent_api_error": view_error,
                "running_agent": running,
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Output::Text => {
            println!("stack {stack} in {} (account {})", c.region, id.account);
            for r in &resources {
                println!("  {:<22} {:<40} {}", r.kind, r.id, r.detail);
            }
            if let Some(ip) = &ip {
                println!("  UI:    https://{ip}/ (user fossa; `fossa-bootstrap password --stack {stack}`)");
            }
            println!("  agent: {agent}");
            if let Some(a) = &running {
                println!(
                    "  running: fossa-agent {} (binary SHA-256 {})",
                    a["version"].as_str().unwrap_or("?"),
                    a["sha256"].as_str().unwrap_or("?")
                );
                if let Some(r) = a["replaced"].as_object() {
                    println!(
                        "  replaced: {} took over from {} at {} (history, queue, keys and broker data came back on the data volume)",
                        r["current"].as_str().unwrap_or("?"),
                        r["previous"].as_str().unwrap_or("?"),
                        r["at"].as_str().unwrap_or("?")
                    );
                }
            }
            for d in &duties {
                println!(
                    "  {:<14} {:<4} {}",
                    d["title"].as_str().unwrap_or("?"),
                    if d["ok"] == true { "ok" } else { "BAD" },
                    d["detail"].as_str().unwrap_or("")
                );
            }
            if let Some(w) = &workers {
                println!(
                    "  workers: {} desired, {} running, {} answering",
                    w["desired"], w["running"], w["answering"]
                );
            }
            if let Some(c) = cost.as_ref().filter(|c| c.is_object()) {
                let f = |k: &str| c[k].as_f64().unwrap_or_default();
                println!(
                    "  cost:  ${:.3}/h; {} so far ${:.2} over {:.1} h metered",
                    f("stack_hourly"),
                    c["month"].as_str().unwrap_or("this month"),
                    f("month_to_date"),
                    f("metered_hours"),
                );
                println!(
                    "  NAT:   {:.3} GB this month; a NAT Gateway would have cost ${:.2}, so the gateway saved ${:.2}",
                    c["nat_bytes"].as_u64().unwrap_or_default() as f64 / 1e9,
                    f("nat_gateway_month_to_date"),
                    f("saved_month_to_date"),
                );
            }
            if let Some(e) = &view_error {
                println!("  duties: unknown ({e})");
            }
            if let Some(f) = fingerprint {
                println!("  TLS certificate SHA-256: {f}");
            }
        }
    }
    Ok(())
}

async fn agent_health(ip: &str) -> String {
    let Ok(http) = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return "unknown".into();
    };
    match http.get(format!("https://{ip}/healthz")).send().await {
        Ok(r) if r.status().is_success() => r
            .text()
            .await
            .unwrap_or_else(|_| "healthy".into())
            .trim()
            .to_owned(),
        Ok(r) => format!("unhealthy (HTTP {})", r.status()),
        Err(e) => format!("not answering ({})", e.without_url()),
    }
}
