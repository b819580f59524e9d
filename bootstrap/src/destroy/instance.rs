//! `destroy`'s gateway instance, terminated and waited for.

use std::time::{Duration, Instant};

use fossa_contract::aws::AwsResultExt;

use super::Destroyer;
use crate::aws::{live_instance_filter, stack_filter};
use crate::progress::Outcome;
use crate::{Error, Result};

impl Destroyer<'_> {
    pub(super) async fn instances(&mut self) -> Result<()> {
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
}
