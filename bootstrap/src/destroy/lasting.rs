//! `destroy`'s lasting parts of the gateway (`launch/lasting.rs`): the
//! Elastic IP, the network interface and the data volume, once the instance
//! that held them is gone. The data volume holds the history: destroy means
//! it.

use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::names::Lasting;

use super::{absent_ok, Destroyer};
use crate::aws::{role_filter, stack_filter};
use crate::progress::Outcome;
use crate::Result;

/// Retries `f` while EC2 still holds the part for the terminated instance.
async fn while_held<T, F, Fut>(what: &str, f: F) -> std::result::Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, AwsError>>,
{
    let retry = crate::aws::Retry {
        within: std::time::Duration::from_secs(300),
        first: std::time::Duration::from_secs(2),
        max: std::time::Duration::from_secs(5),
    };
    let held = |e: &AwsError| {
        e.is_code("VolumeInUse")
            || e.is_code("InvalidNetworkInterface.InUse")
            || e.is_code("IncorrectState")
            || e.is_code("InvalidIPAddress.InUse")
    };
    let waiting = |e: &AwsError| tracing::info!("{what}: still held: {e}");
    crate::aws::retry_while(retry, held, waiting, f).await
}

impl Destroyer<'_> {
    pub(super) async fn lasting(&mut self) -> Result<()> {
        let ec2 = &self.c.ec2;
        let stack = stack_filter(self.stack);
        let addresses = ec2
            .describe_addresses()
            .filters(stack.clone())
            .filters(role_filter(Lasting::Address))
            .send()
            .await
            .aws("ec2:DescribeAddresses", self.stack.prefix())?;
        for a in addresses.addresses() {
            let Some(id) = a.allocation_id() else {
                continue;
            };
            if let Some(assoc) = a.association_id() {
                absent_ok(
                    ec2.disassociate_address()
                        .association_id(assoc)
                        .send()
                        .await
                        .aws("ec2:DisassociateAddress", assoc),
                    &["InvalidAssociationID.NotFound"],
                )?;
            }
            while_held("Elastic IP", || async {
                ec2.release_address()
                    .allocation_id(id)
                    .send()
                    .await
                    .aws("ec2:ReleaseAddress", id)
            })
            .await?;
            self.p.done(Outcome::Deleted, "gateway address", id);
        }
        let interfaces = ec2
            .describe_network_interfaces()
            .filters(stack.clone())
            .filters(role_filter(Lasting::Interface))
            .send()
            .await
            .aws("ec2:DescribeNetworkInterfaces", self.stack.prefix())?;
        for e in interfaces.network_interfaces() {
            let Some(id) = e.network_interface_id() else {
                continue;
            };
            while_held("network interface", || async {
                ec2.delete_network_interface()
                    .network_interface_id(id)
                    .send()
                    .await
                    .aws("ec2:DeleteNetworkInterface", id)
            })
            .await?;
            self.p.done(Outcome::Deleted, "gateway interface", id);
        }
        let volumes = ec2
            .describe_volumes()
            .filters(stack)
            .filters(role_filter(Lasting::Volume))
            .send()
            .await
            .aws("ec2:DescribeVolumes", self.stack.prefix())?;
        for v in volumes.volumes() {
            let Some(id) = v.volume_id() else { continue };
            absent_ok(
                while_held("data volume", || async {
                    ec2.delete_volume()
                        .volume_id(id)
                        .send()
                        .await
                        .aws("ec2:DeleteVolume", id)
                })
                .await,
                &["InvalidVolume.NotFound"],
            )?;
            self.p.done(Outcome::Deleted, "gateway data volume", id);
        }
        Ok(())
    }
}
