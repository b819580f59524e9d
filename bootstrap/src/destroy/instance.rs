//! `destroy`'s gateway: its Auto Scaling group (so nothing starts another),
//! its launch template, and the instance, terminated and waited for.

use std::time::{Duration, Instant};

use fossa_contract::aws::AwsResultExt;

use super::{absent_ok, Destroyer};
use crate::aws::{find_group, live_instance_filter, stack_filter};
use crate::progress::Outcome;
use crate::{Error, Result};

impl Destroyer<'_> {
    pub(super) async fn instances(&mut self) -> Result<()> {
        self.group().await?;
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
            return self.group_gone().await;
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
        self.group_gone().await
    }

    /// A force-deleted group stays listed ("Delete in progress") until its
    /// instance has terminated; destroy's last inventory must not find it.
    async fn group_gone(&mut self) -> Result<()> {
        let name = self.stack.gateway_group();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if find_group(&self.c.autoscaling, &name).await?.is_none() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unexpected(format!(
                    "the Auto Scaling group {name} was still being deleted after 5 minutes; run destroy again"
                )));
            }
            self.p.working("waiting for the Auto Scaling group to go");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// The group goes first, with its instance (ForceDelete): otherwise it
    /// would replace the instance terminated below.
    async fn group(&mut self) -> Result<()> {
        let name = self.stack.gateway_group();
        if find_group(&self.c.autoscaling, &name).await?.is_some() {
            self.c
                .autoscaling
                .delete_auto_scaling_group()
                .auto_scaling_group_name(&name)
                .force_delete(true)
                .send()
                .await
                .aws("autoscaling:DeleteAutoScalingGroup", &name)?;
            self.p.done(Outcome::Deleted, "Auto Scaling group", &name);
        }
        let gone = absent_ok(
            self.c
                .ec2
                .delete_launch_template()
                .launch_template_name(&name)
                .send()
                .await
                .aws("ec2:DeleteLaunchTemplate", &name),
            &[
                "InvalidLaunchTemplateName.NotFoundException",
                "InvalidLaunchTemplateId.NotFound",
            ],
        )?;
        if gone.is_some() {
            self.p.done(Outcome::Deleted, "launch template", &name);
        }
        Ok(())
    }
}
