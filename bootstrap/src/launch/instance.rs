//! `launch`'s gateway instance: AMI from SSM, IMDSv2 with hop limit 1,
//! user-data that fetches the agent with the instance's own role, source/dest check off.

use std::time::Duration;

use fossa_contract::config::AgentToml;
use fossa_contract::names::AGENT_OBJECT_KEY;

use super::Inputs;
use crate::aws::state_filter;
use crate::aws::USABLE_STATES;
use crate::cli::LaunchArgs;
use crate::userdata::UserData;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceType,
    ResourceType,
};
use fossa_contract::aws::AwsResultExt;

use super::Launcher;
use crate::aws::{after_create, ec2_tags, missing, off, stack_filter};
use crate::progress::Outcome;
use crate::{Error, Result};

impl Launcher<'_> {
    pub(super) async fn instance(
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
                        let out = fossa_contract::ssm::get(&self.c.ssm, &p, false).await?;
                        Some(out.value)
                            .filter(|v| !v.is_empty())
                            .ok_or_else(|| missing("AMI id"))?
                    }
                };
                let profile = self.stack.instance_profile();
                let url = crate::userdata::agent_object_url(
                    bucket,
                    AGENT_OBJECT_KEY,
                    &self.c.region,
                    self.c.endpoint.as_deref(),
                );
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
                    history: Default::default(),
                    container_network: Default::default(),
                    timeouts: Default::default(),
                };
                let user_data = UserData {
                    agent: &agent_toml,
                    agent_url: &url,
                    profile: &profile,
                    account: &self.id.account,
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
                        .block_device_mappings(root_volume())
                        .iam_instance_profile(
                            IamInstanceProfileSpecification::builder()
                                .name(self.stack.instance_profile())
                                .build(),
                        )
                        .metadata_options(
                            InstanceMetadataOptionsRequest::builder()
                                .http_tokens(HttpTokensState::Required)
                                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                                // The gateway's containers are on bridges (builds,
                                // the broker): one hop more than the limit, and the
                                // NAT duty drops their link-local packets as well.
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
                        Err(e) if attempt < 20 && profile_not_ready(&e) => {
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
            let req = ec2
                .modify_instance_attribute()
                .instance_id(&id)
                .source_dest_check(off());
            after_create(|| async {
                req.clone()
                    .send()
                    .await
                    .aws("ec2:ModifyInstanceAttribute", &id)
            })
            .await?;
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

    pub(super) async fn public_ip(&self, instance: &str) -> Result<Option<String>> {
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

/// The gateway's root volume: sized for the images it builds and keeps,
/// encrypted (with the account's default EBS key), gone with the instance.
fn root_volume() -> aws_sdk_ec2::types::BlockDeviceMapping {
    aws_sdk_ec2::types::BlockDeviceMapping::builder()
        .device_name(fossa_contract::limits::ROOT_DEVICE)
        .ebs(
            aws_sdk_ec2::types::EbsBlockDevice::builder()
                .volume_size(fossa_contract::limits::ROOT_VOLUME_GIB)
                .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                .encrypted(true)
                .delete_on_termination(true)
                .build(),
        )
        .build()
}

/// Whether RunInstances refused an instance profile IAM has not propagated
/// to EC2 yet. AWS answers `InvalidParameterValue: Value (…) for parameter
/// iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name`
/// for seconds after CreateInstanceProfile ("IAM is eventually consistent":
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency>).
/// The match is on the code and on the parameter, in any case.
pub(crate) fn profile_not_ready(e: &fossa_contract::aws::AwsError) -> bool {
    let d = e.detail.to_ascii_lowercase();
    e.is_code("InvalidParameterValue")
        && (d.contains("iaminstanceprofile") || d.contains("iam instance profile"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_contract::aws::AwsError;

    fn err(code: &str, message: &str) -> AwsError {
        AwsError {
            call: "ec2:RunInstances",
            resource: "gw".into(),
            detail: format!("{code}: {message}"),
            code: Some(code.into()),
        }
    }

    #[test]
    fn the_profile_retry_matches_what_ec2_says() {
        // The message EC2 gives right after CreateInstanceProfile (the old
        // matcher looked for "nstance profile" and never matched it).
        let fresh = err(
            "InvalidParameterValue",
            "Value (fossa-dev-gateway) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        );
        assert!(profile_not_ready(&fresh));
        assert!(!fresh.detail.contains("nstance profile"), "the old matcher");
        let arn = err(
            "InvalidParameterValue",
            "Value (arn:aws:iam::1:instance-profile/x) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN",
        );
        assert!(profile_not_ready(&arn));
        assert!(!profile_not_ready(&err(
            "InvalidParameterValue",
            "Value (t9.huge) for parameter instanceType is invalid."
        )));
        assert!(!profile_not_ready(&err(
            "UnauthorizedOperation",
            "You are not authorized to pass the IAM Instance Profile"
        )));
    }
}
