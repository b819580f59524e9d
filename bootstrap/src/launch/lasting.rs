//! `launch`'s lasting parts of the gateway: what outlives any one instance,
//! so that the Auto Scaling group's replacement comes back as the same
//! gateway. A network interface (the private routes' target and the broker's
//! address: the workers keep reaching it), an Elastic IP (the UI's address)
//! and a data volume (the state directory), all in the public subnet's zone.
//! Each new instance attaches them at boot (user-data's `fossa:attach`).

use aws_sdk_ec2::types::{DomainType, ResourceType, VolumeType};
use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::Subnet;
use fossa_contract::limits::DATA_VOLUME_GIB;
use fossa_contract::names::Lasting;

use super::Launcher;
use crate::aws::{after_create, ec2_tags, missing, off, role_filter, stack_filter};
use crate::progress::Outcome;
use crate::Result;

/// The lasting parts, found or made.
#[derive(Debug, Clone)]
pub(crate) struct LastingParts {
    /// The network interface's id.
    pub interface: String,
    /// Its private address: the broker's, for the workers.
    pub private_ip: String,
    /// The Elastic IP's allocation id.
    pub allocation: String,
    /// The Elastic IP: the UI's address.
    pub public_ip: String,
    /// The data volume's id.
    pub volume: String,
}

impl Launcher<'_> {
    /// Finds or makes the interface, the address and the volume.
    pub(super) async fn lasting(&mut self, public: &Subnet, sg: &str) -> Result<LastingParts> {
        let (interface, private_ip) = self.interface(&public.id, sg).await?;
        let (allocation, public_ip) = self.address().await?;
        let volume = self.data_volume(&public.az).await?;
        Ok(LastingParts {
            interface,
            private_ip,
            allocation,
            public_ip,
            volume,
        })
    }

    async fn interface(&mut self, subnet: &str, sg: &str) -> Result<(String, String)> {
        let ec2 = &self.c.ec2;
        let name = self.stack.gateway_lasting(Lasting::Interface);
        let found = ec2
            .describe_network_interfaces()
            .filters(stack_filter(&self.stack))
            .filters(role_filter(Lasting::Interface))
            .send()
            .await
            .aws("ec2:DescribeNetworkInterfaces", &name)?;
        let (eni, mut outcome) = match found.network_interfaces().first() {
            Some(e) => (e.clone(), Outcome::Found),
            None => {
                let out = ec2
                    .create_network_interface()
                    .subnet_id(subnet)
                    .groups(sg)
                    .description(format!(
                        "fossa {}: the gateway's lasting interface (private routes, broker)",
                        self.stack.as_str()
                    ))
                    .tag_specifications(ec2_tags(
                        ResourceType::NetworkInterface,
                        &self.stack,
                        &name,
                        Some(Lasting::Interface.role()),
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateNetworkInterface", &name)?;
                let e = out
                    .network_interface()
                    .cloned()
                    .ok_or_else(|| missing("network interface"))?;
                (e, Outcome::Created)
            }
        };
        let id = eni
            .network_interface_id()
            .ok_or_else(|| missing("network interface id"))?
            .to_owned();
        // It forwards the workers' traffic: EC2 must not drop packets that
        // are neither from nor to its own address.
        if eni.source_dest_check() != Some(false) {
            let req = ec2
                .modify_network_interface_attribute()
                .network_interface_id(&id)
                .source_dest_check(off());
            after_create(|| async {
                req.clone()
                    .send()
                    .await
                    .aws("ec2:ModifyNetworkInterfaceAttribute", &id)
            })
            .await?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let ip = eni
            .private_ip_address()
            .ok_or_else(|| missing("the interface's private address"))?
            .to_owned();
        self.p
            .done(outcome, "gateway interface", &format!("{id} {ip}"));
        Ok((id, ip))
    }

    async fn address(&mut self) -> Result<(String, String)> {
        let ec2 = &self.c.ec2;
        let name = self.stack.gateway_lasting(Lasting::Address);
        let found = ec2
            .describe_addresses()
            .filters(stack_filter(&self.stack))
            .filters(role_filter(Lasting::Address))
            .send()
            .await
            .aws("ec2:DescribeAddresses", &name)?;
        let (allocation, ip, outcome) = match found.addresses().first() {
            Some(a) => (
                a.allocation_id().map(str::to_owned),
                a.public_ip().map(str::to_owned),
                Outcome::Found,
            ),
            None => {
                let out = ec2
                    .allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(ec2_tags(
                        ResourceType::ElasticIp,
                        &self.stack,
                        &name,
                        Some(Lasting::Address.role()),
                    ))
                    .send()
                    .await
                    .aws("ec2:AllocateAddress", &name)?;
                (
                    out.allocation_id().map(str::to_owned),
                    out.public_ip().map(str::to_owned),
                    Outcome::Created,
                )
            }
        };
        let allocation = allocation.ok_or_else(|| missing("Elastic IP allocation id"))?;
        let ip = ip.ok_or_else(|| missing("Elastic IP address"))?;
        self.p
            .done(outcome, "gateway address", &format!("{allocation} {ip}"));
        Ok((allocation, ip))
    }

    async fn data_volume(&mut self, zone: &str) -> Result<String> {
        let ec2 = &self.c.ec2;
        let name = self.stack.gateway_lasting(Lasting::Volume);
        let found = ec2
            .describe_volumes()
            .filters(stack_filter(&self.stack))
            .filters(role_filter(Lasting::Volume))
            .send()
            .await
            .aws("ec2:DescribeVolumes", &name)?;
        let live = found.volumes().iter().find(|v| {
            !matches!(
                v.state(),
                Some(aws_sdk_ec2::types::VolumeState::Deleting)
                    | Some(aws_sdk_ec2::types::VolumeState::Deleted)
                    | Some(aws_sdk_ec2::types::VolumeState::Error)
            )
        });
        let (id, outcome) = match live {
            Some(v) => {
                if v.availability_zone() != Some(zone) {
                    return Err(crate::Error::Usage(format!(
                        "the data volume {} is in {}, not in the public subnet's zone {zone}; \
                         the gateway could not attach it. Snapshot it and make a volume from \
                         the snapshot in {zone}, tagged as this one is",
                        v.volume_id().unwrap_or(""),
                        v.availability_zone().unwrap_or("?")
                    )));
                }
                (v.volume_id().map(str::to_owned), Outcome::Found)
            }
            None => {
                let out = ec2
                    .create_volume()
                    .availability_zone(zone)
                    .size(DATA_VOLUME_GIB)
                    .volume_type(VolumeType::Gp3)
                    .encrypted(true)
                    .tag_specifications(ec2_tags(
                        ResourceType::Volume,
                        &self.stack,
                        &name,
                        Some(Lasting::Volume.role()),
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateVolume", &name)?;
                (out.volume_id().map(str::to_owned), Outcome::Created)
            }
        };
        let id = id.ok_or_else(|| missing("volume id"))?;
        self.p.done(
            outcome,
            "gateway data volume",
            &format!("{id} {DATA_VOLUME_GIB} GiB {zone}"),
        );
        Ok(id)
    }
}
