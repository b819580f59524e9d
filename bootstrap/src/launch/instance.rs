//! `launch`'s gateway instance: AMI from SSM, IMDSv2 with hop limit 1,
//! user-data that fetches the agent with the instance's own role, source/dest check off.

use std::time::Duration;

use fossa_contract::config::AgentToml;
use fossa_contract::names::AGENT_OBJECT_KEY;

use super::lasting::LastingParts;
use super::Inputs;
use crate::aws::state_filter;
use crate::aws::USABLE_STATES;
use crate::cli::LaunchArgs;
use crate::userdata::UserData;
use aws_sdk_ec2::types::{
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType,
};
use fossa_contract::aws::AwsResultExt;

use super::Launcher;
use crate::aws::{missing, stack_filter};
use crate::progress::Outcome;
use crate::{Error, Result};

/// What the gateway's user-data names: the agent's hash, the bucket it is
/// fetched from and the lasting parts it takes over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Boot<'a> {
    pub agent_sha: &'a str,
    pub bucket: &'a str,
    pub lasting: &'a LastingParts,
}

/// The tag EC2 Auto Scaling puts on the instances it launches.
const GROUP_TAG: &str = "aws:autoscaling:groupName";

impl Launcher<'_> {
    /// The gateway: a launch template and an Auto Scaling group of one that
    /// keeps an instance of it running (a terminated or failed instance is
    /// replaced without anyone), and the instance it runs now.
    pub(super) async fn instance(
        &mut self,
        args: &LaunchArgs,
        inputs: &Inputs,
        subnet: &str,
        sg: &str,
        boot: Boot<'_>,
    ) -> Result<String> {
        self.no_lone_instance().await?;
        let user_data = self.user_data(boot.agent_sha, boot.bucket, boot.lasting)?;
        let ami = match &args.ami {
            Some(a) => a.clone(),
            None => {
                let p = inputs.arch.al2023_parameter();
                let out = fossa_contract::ssm::get(&self.c.ssm, &p, false).await?;
                Some(out.value)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| missing("AMI id"))?
            }
        };
        let data = self.template_data(&ami, &args.instance_type, sg, &user_data);
        self.launch_template(data, &ami, &args.instance_type, &user_data)
            .await?;
        self.group(subnet).await?;
        self.group_instance(&args.instance_type).await
    }

    /// An instance an older `launch` ran on its own (no group) would keep
    /// running beside the group's: refused, with what to do.
    async fn no_lone_instance(&self) -> Result<()> {
        let found = self
            .c
            .ec2
            .describe_instances()
            .filters(stack_filter(&self.stack))
            .filters(state_filter(&USABLE_STATES))
            .send()
            .await
            .aws("ec2:DescribeInstances", self.stack.gateway_instance())?;
        let lone = found
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| crate::aws::tag_value(i.tags(), GROUP_TAG).is_none());
        match lone.and_then(|i| i.instance_id()) {
            Some(id) => Err(Error::Usage(format!(
                "the gateway {id} was launched on its own by an older fossa-bootstrap; \
                 gateways now run in an Auto Scaling group of one with a data volume. \
                 Its history is on its own disk: run `fossa-bootstrap destroy --stack {}` \
                 and launch again, or terminate {id} and re-run launch",
                self.stack.as_str()
            ))),
            None => Ok(()),
        }
    }

    fn user_data(&self, agent_sha: &str, bucket: &str, lasting: &LastingParts) -> Result<String> {
        let url = crate::userdata::agent_object_url(
            bucket,
            AGENT_OBJECT_KEY,
            &self.c.region,
            self.c.endpoint.as_deref(),
        );
        let broker = lasting
            .private_ip
            .parse()
            .map_err(|_| missing("the interface's IPv4 address"))?;
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
            // The lasting interface's address: the workers keep it across
            // replacements.
            broker_address: Some(broker),
            egress_check: None,
            duties: None,
            tls_cert: None,
            tls_key: None,
            history: Default::default(),
            container_network: Default::default(),
            timeouts: Default::default(),
        };
        UserData {
            agent: &agent_toml,
            agent_url: &url,
            ec2_url: &crate::userdata::ec2_url(&self.c.region, self.c.endpoint.as_deref()),
            profile: &self.stack.instance_profile(),
            account: &self.id.account,
            agent_sha256: agent_sha,
            lasting: crate::userdata::Lasting {
                interface: &lasting.interface,
                allocation: &lasting.allocation,
                volume: &lasting.volume,
            },
        }
        .render()
        .map_err(|e| Error::Unexpected(e.to_string()))
    }

    fn template_data(
        &self,
        ami: &str,
        instance_type: &str,
        sg: &str,
        user_data: &str,
    ) -> RequestLaunchTemplateData {
        let name = self.stack.gateway_instance();
        let tags = |rt: ResourceType, role: Option<&str>| {
            let spec = crate::aws::ec2_tags(rt.clone(), &self.stack, &name, role);
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(rt)
                .set_tags(Some(spec.tags().to_vec()))
                .build()
        };
        RequestLaunchTemplateData::builder()
            .image_id(ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
            .user_data(aws_smithy_types::base64::encode(user_data.as_bytes()))
            .block_device_mappings(root_volume())
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(self.stack.instance_profile())
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    // The gateway's containers are on bridges (builds, the
                    // broker): one hop more than the limit, and the NAT duty
                    // drops their link-local packets as well.
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            // A public address until user-data moves the Elastic IP onto it.
            .network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .groups(sg)
                    .associate_public_ip_address(true)
                    .delete_on_termination(true)
                    .build(),
            )
            .tag_specifications(tags(ResourceType::Instance, Some("gateway")))
            .tag_specifications(tags(ResourceType::Volume, None))
            .tag_specifications(tags(ResourceType::NetworkInterface, None))
            .build()
    }

    /// The launch template: made, or given a new default version when the
    /// AMI, the instance type or user-data (a new agent) changed. The
    /// running instance keeps going; its replacement boots the new version.
    async fn launch_template(
        &mut self,
        data: RequestLaunchTemplateData,
        ami: &str,
        instance_type: &str,
        user_data: &str,
    ) -> Result<()> {
        let ec2 = &self.c.ec2;
        let name = self.stack.gateway_group();
        let current = ec2
            .describe_launch_template_versions()
            .launch_template_name(&name)
            .versions("$Default")
            .send()
            .await;
        let current = match current.aws("ec2:DescribeLaunchTemplateVersions", &name) {
            Ok(out) => out.launch_template_versions().first().cloned(),
            Err(e) if e.code.as_deref().is_some_and(|c| c.contains("NotFound")) => None,
            Err(e) => return Err(e.into()),
        };
        let encoded = aws_smithy_types::base64::encode(user_data.as_bytes());
        let outcome = match current.as_ref().and_then(|v| v.launch_template_data()) {
            None => {
                // EC2 checks the instance profile when the group launches,
                // not here; a profile IAM has not propagated yet fails that
                // launch, and the group tries again by itself.
                ec2.create_launch_template()
                    .launch_template_name(&name)
                    .launch_template_data(data.clone())
                    .tag_specifications(crate::aws::ec2_tags(
                        ResourceType::LaunchTemplate,
                        &self.stack,
                        &name,
                        Some("gateway"),
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateLaunchTemplate", &name)?;
                Outcome::Created
            }
            Some(d)
                if d.image_id() == Some(ami)
                    && d.instance_type().map(|t| t.as_str()) == Some(instance_type)
                    && d.user_data() == Some(encoded.as_str()) =>
            {
                Outcome::Found
            }
            Some(_) => {
                let made = ec2
                    .create_launch_template_version()
                    .launch_template_name(&name)
                    .launch_template_data(data)
                    .version_description("fossa-bootstrap launch")
                    .send()
                    .await
                    .aws("ec2:CreateLaunchTemplateVersion", &name)?;
                let version = made
                    .launch_template_version()
                    .and_then(|v| v.version_number())
                    .ok_or_else(|| missing("launch template version"))?;
                ec2.modify_launch_template()
                    .launch_template_name(&name)
                    .default_version(version.to_string())
                    .send()
                    .await
                    .aws("ec2:ModifyLaunchTemplate", &name)?;
                self.p.note(
                    "the gateway's launch template changed: a replacement instance boots the new \
                     version; the running one keeps going (it upgrades its agent itself). To \
                     move to a new instance type or AMI now, terminate the gateway instance: \
                     the group starts one from the new version, with the same state",
                );
                Outcome::Updated
            }
        };
        self.p.done(outcome, "launch template", &name);
        Ok(())
    }

    /// The Auto Scaling group of one, in the public subnet (the lasting
    /// parts' zone), with EC2 health checks.
    async fn group(&mut self, subnet: &str) -> Result<()> {
        let asg = &self.c.autoscaling;
        let name = self.stack.gateway_group();
        let found = crate::aws::find_group(asg, &name).await?;
        let spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
            .launch_template_name(&name)
            .version("$Default")
            .build();
        let outcome = match found {
            Some(g) if g.min_size() == Some(1) && g.max_size() == Some(1) => Outcome::Found,
            Some(_) => {
                asg.update_auto_scaling_group()
                    .auto_scaling_group_name(&name)
                    .min_size(1)
                    .max_size(1)
                    .desired_capacity(1)
                    .send()
                    .await
                    .aws("autoscaling:UpdateAutoScalingGroup", &name)?;
                Outcome::Updated
            }
            None => {
                let mut req = asg
                    .create_auto_scaling_group()
                    .auto_scaling_group_name(&name)
                    .launch_template(spec)
                    .min_size(1)
                    .max_size(1)
                    .desired_capacity(1)
                    .vpc_zone_identifier(subnet)
                    .health_check_type("EC2")
                    .health_check_grace_period(fossa_contract::limits::GATEWAY_GRACE_SECS);
                for (k, v) in
                    fossa_contract::tags::standard(&self.stack, fossa_contract::tags::BY_BOOTSTRAP)
                {
                    req = req.tags(
                        aws_sdk_autoscaling::types::Tag::builder()
                            .resource_id(&name)
                            .resource_type("auto-scaling-group")
                            .key(k)
                            .value(v)
                            .propagate_at_launch(false)
                            .build(),
                    );
                }
                req.send()
                    .await
                    .aws("autoscaling:CreateAutoScalingGroup", &name)?;
                Outcome::Created
            }
        };
        self.p.done(
            outcome,
            "Auto Scaling group",
            &format!("{name} (one gateway)"),
        );
        Ok(())
    }

    /// The instance the group runs now, waited for a while after creation.
    async fn group_instance(&mut self, instance_type: &str) -> Result<String> {
        let name = self.stack.gateway_group();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(id) = crate::aws::group_instance(&self.c.autoscaling, &name).await? {
                self.p.done(
                    Outcome::Found,
                    "gateway instance",
                    &format!("{id} {instance_type}"),
                );
                return Ok(id);
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Unexpected(format!(
                    "the Auto Scaling group {name} has started no instance in 120 s; see its \
                     activity (`aws autoscaling describe-scaling-activities --auto-scaling-group-name {name}`)"
                )));
            }
            self.p.working("waiting for the group to start the gateway");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
}

/// The gateway's root volume: sized for the images it builds and keeps,
/// encrypted (with the account's default EBS key), gone with the instance.
/// What must outlive it is on the data volume.
fn root_volume() -> aws_sdk_ec2::types::LaunchTemplateBlockDeviceMappingRequest {
    aws_sdk_ec2::types::LaunchTemplateBlockDeviceMappingRequest::builder()
        .device_name(fossa_contract::limits::ROOT_DEVICE)
        .ebs(
            aws_sdk_ec2::types::LaunchTemplateEbsBlockDeviceRequest::builder()
                .volume_size(fossa_contract::limits::ROOT_VOLUME_GIB)
                .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                .encrypted(true)
                .delete_on_termination(true)
                .build(),
        )
        .build()
}
