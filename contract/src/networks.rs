//! The gateway's own Docker networks: where image builds and the broker run,
//! off the host's network. Each is a bridge with a fixed name and subnet, so
//! the NAT duty's iptables rules can name it before it exists, and `launch`
//! can refuse a VPC CIDR that would overlap it.
//!
//! On the host's network a build step (anything a models `requirements.txt`
//! installs) could ask the instance metadata service for the gateway role's
//! credentials: IMDSv2's hop limit of 1 stops only packets that were
//! forwarded. On a bridge every packet is forwarded, so the hop limit holds,
//! and the NAT duty also drops whatever a container sends to link-local
//! addresses, to the gateway itself or to the workers' subnets.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// One Docker bridge network of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeNetwork {
    /// The Docker network's name.
    pub name: &'static str,
    /// Its Linux bridge (`com.docker.network.bridge.name`), which iptables rules match.
    pub bridge: &'static str,
    /// Its subnet's address; the prefix is [`BridgeNetwork::PREFIX`].
    pub address: Ipv4Addr,
}

impl BridgeNetwork {
    /// The prefix length of every bridge's subnet.
    pub const PREFIX: u8 = 24;

    /// Its subnet.
    pub fn subnet(&self) -> Ipv4Net {
        Ipv4Net::new(self.address, Self::PREFIX).expect("a /24 is a valid prefix")
    }
}

/// Where `RUN` steps of the worker image's builds run: out to the internet
/// (PyPI) only.
pub const BUILD: BridgeNetwork = BridgeNetwork {
    name: "fossa-build",
    bridge: "fossa-build0",
    address: Ipv4Addr::new(172, 30, 252, 0),
};

/// Where the broker runs: it opens no connection of its own; its port is
/// published on the gateway's private address.
pub const BROKER: BridgeNetwork = BridgeNetwork {
    name: "fossa-broker",
    bridge: "fossa-broker0",
    address: Ipv4Addr::new(172, 30, 253, 0),
};

/// Both, in the order the agent makes them.
pub const ALL: [BridgeNetwork; 2] = [BUILD, BROKER];

/// Docker's default bridge: nothing of ours runs on it, but whatever does is
/// kept off the metadata service and the gateway like our own.
pub const DOCKER_DEFAULT_BRIDGE: &str = "docker0";

/// The first of [`ALL`] that overlaps `net`, if any.
pub fn overlapping(net: Ipv4Net) -> Option<BridgeNetwork> {
    ALL.into_iter().find(|b| {
        let s = b.subnet();
        s.contains(&net.network()) || net.contains(&s.network())
    })
}

/// Where the agent's containers (builds, the broker) are networked:
/// `container_network` in agent.toml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerNetwork {
    /// The bridges [`BUILD`] and [`BROKER`], fenced by the NAT duty's rules:
    /// the gateway's setting, and the default.
    #[default]
    Isolated,
    /// The host's own network, as local mode's containers run: for a machine
    /// with no instance metadata service and no NAT duty, never a gateway.
    Host,
}

impl ContainerNetwork {
    /// Whether this is the default (so agent.toml leaves it out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The Docker network mode for `net`'s containers and builds.
    pub fn mode(self, net: BridgeNetwork) -> &'static str {
        match self {
            Self::Isolated => net.name,
            Self::Host => "host",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridges_are_disjoint_and_found_by_overlap() {
        assert!(!BUILD.subnet().contains(&BROKER.subnet().network()));
        assert_eq!(BUILD.subnet().to_string(), "172.30.252.0/24");
        assert_eq!(
            overlapping("172.16.0.0/12".parse().unwrap()),
            Some(BUILD),
            "a VPC around them"
        );
        assert_eq!(
            overlapping("172.30.253.128/25".parse().unwrap()),
            Some(BROKER),
            "inside one"
        );
        assert_eq!(overlapping("192.168.0.0/16".parse().unwrap()), None);
        assert_eq!(overlapping("172.30.0.0/23".parse().unwrap()), None);
        // Linux bridge names are at most 15 bytes.
        assert!(ALL.iter().all(|b| b.bridge.len() <= 15));
    }

    #[test]
    fn the_setting_reads_as_agent_toml_writes_it() {
        #[derive(Deserialize)]
        struct T {
            n: ContainerNetwork,
        }
        let t: T = toml::from_str("n = \"host\"").unwrap();
        assert_eq!(t.n, ContainerNetwork::Host);
        assert_eq!(ContainerNetwork::default().mode(BUILD), "fossa-build");
        assert_eq!(ContainerNetwork::Host.mode(BROKER), "host");
        let e = toml::from_str::<T>("n = \"bridge\"").err().unwrap();
        assert!(e.to_string().contains("isolated"), "{e}");
    }
}
