//! The network a stack needs: the subnet layout carved from the VPC CIDR and
//! the ingress rules of the two security groups.

use std::net::Ipv4Addr;

use fossa_contract::names::{BROKER_PORT, FOSSA_PORT};
use ipnet::Ipv4Net;

/// Subnets carved from the VPC CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetLayout {
    /// The gateway's public subnet (the VPC's 2nd /24).
    pub public: Ipv4Net,
    /// The workers' private subnets, one per AZ: the VPC's 2nd and 3rd /22
    /// (1,019 addresses each, room for the most workers a stack runs with a
    /// deployment's surge: `fossa_contract::addresses`), or in a /21 or /22
    /// VPC its 3rd and 4th /24.
    pub private: [Ipv4Net; 2],
}

/// The VPC CIDR cannot hold the layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadVpcCidr {
    /// Not a private /16 to /22 block.
    #[error("--vpc-cidr {0} is not usable: give a private /16 to /22 block such as 192.168.0.0/16 or 10.20.0.0/16")]
    Shape(Ipv4Net),
    /// It overlaps a Docker network of the gateway's own.
    #[error("--vpc-cidr {vpc} overlaps {subnet}, which the gateway keeps for its Docker network {name} (builds and the broker): give a block outside it, such as 192.168.0.0/16 or 10.20.0.0/16")]
    Overlaps {
        /// The VPC CIDR asked for.
        vpc: Ipv4Net,
        /// The bridge's subnet.
        subnet: Ipv4Net,
        /// The Docker network.
        name: &'static str,
    },
}

impl SubnetLayout {
    /// Public = the 2nd /24 of the VPC; private = the 2nd and 3rd /22
    /// (192.168.1.0/24, 192.168.4.0/22, 192.168.8.0/22 for the default), or
    /// the 3rd and 4th /24 in a VPC too small for /22s.
    pub fn for_vpc(vpc: Ipv4Net) -> Result<Self, BadVpcCidr> {
        let private_range = [
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("constant"),
            Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 12).expect("constant"),
            Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("constant"),
        ];
        if !(16..=22).contains(&vpc.prefix_len())
            || vpc.network() != vpc.addr()
            || !private_range.iter().any(|r| r.contains(&vpc))
        {
            return Err(BadVpcCidr::Shape(vpc));
        }
        if let Some(b) = fossa_contract::networks::overlapping(vpc) {
            return Err(BadVpcCidr::Overlaps {
                vpc,
                subnet: b.subnet(),
                name: b.name,
            });
        }
        let mut s = vpc.subnets(24).map_err(|_| BadVpcCidr::Shape(vpc))?.skip(1);
        let mut next = || s.next().ok_or(BadVpcCidr::Shape(vpc));
        let public = next()?;
        let private = if vpc.prefix_len() <= 20 {
            let mut s = vpc.subnets(22).map_err(|_| BadVpcCidr::Shape(vpc))?.skip(1);
            let mut next = || s.next().ok_or(BadVpcCidr::Shape(vpc));
            [next()?, next()?]
        } else {
            [next()?, next()?]
        };
        Ok(Self { public, private })
    }
}

/// Where an ingress rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 CIDR block.
    Cidr(String),
    /// Another security group (by id).
    Group(String),
}

/// One ingress rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressRule {
    /// `tcp`, or `-1` for all.
    pub protocol: String,
    /// First port (-1 for all).
    pub from: i32,
    /// Last port (-1 for all).
    pub to: i32,
    /// Who may connect.
    pub source: Source,
    /// Why the rule exists.
    pub description: String,
}

/// UI port on the gateway.
pub const UI_PORT: i32 = 443;

/// Gateway SG: the UI from each of `allow`, everything from the private
/// subnets (the NAT path: a security group sees forwarded packets too, so the
/// agent's host INPUT rules, not this group, keep the tasks off the gateway's
/// own ports but the broker's), and the broker from the task SG. No SSH:
/// shell access is SSM Session Manager.
pub fn gateway_ingress(
    allow: &[Ipv4Net],
    layout: &SubnetLayout,
    task_sg: &str,
) -> Vec<IngressRule> {
    let mut rules: Vec<IngressRule> = allow
        .iter()
        .map(|a| IngressRule {
            protocol: "tcp".into(),
            from: UI_PORT,
            to: UI_PORT,
            source: Source::Cidr(a.to_string()),
            description: "fossa web UI".into(),
        })
        .collect();
    for p in layout.private {
        rules.push(IngressRule {
            protocol: "-1".into(),
            from: -1,
            to: -1,
            source: Source::Cidr(p.to_string()),
            description: "NAT for the private subnets".into(),
        });
    }
    rules.push(IngressRule {
        protocol: "tcp".into(),
        from: BROKER_PORT.into(),
        to: BROKER_PORT.into(),
        source: Source::Group(task_sg.to_owned()),
        description: "RabbitMQ from the workers".into(),
    });
    rules
}

/// Task SG: Fossa's port from the gateway only.
pub fn task_ingress(gateway_sg: &str) -> Vec<IngressRule> {
    vec![IngressRule {
        protocol: "tcp".into(),
        from: FOSSA_PORT.into(),
        to: FOSSA_PORT.into(),
        source: Source::Group(gateway_sg.to_owned()),
        description: "Fossa API from the gateway".into(),
    }]
}

impl IngressRule {
    /// Whether both rules let in the same traffic (descriptions are not compared).
    fn same_traffic(&self, other: &IngressRule) -> bool {
        self.protocol == other.protocol
            && self.from == other.from
            && self.to == other.to
            && self.source == other.source
    }
}

/// The rules of `desired` that `existing` lacks (descriptions are not compared).
pub fn missing_rules(desired: &[IngressRule], existing: &[IngressRule]) -> Vec<IngressRule> {
    desired
        .iter()
        .filter(|d| !existing.iter().any(|e| e.same_traffic(d)))
        .cloned()
        .collect()
}

/// The rules of `existing` that `desired` does not hold: an old `--allow-cidr`
/// or a rule an earlier version made. `launch` revokes them.
pub fn stale_rules(desired: &[IngressRule], existing: &[IngressRule]) -> Vec<IngressRule> {
    missing_rules(existing, desired)
}

/// The UI's sources among `existing` rules: what a re-run without
/// `--allow-cidr` keeps.
pub fn ui_sources(existing: &[IngressRule]) -> Vec<Ipv4Net> {
    existing
        .iter()
        .filter(|r| r.protocol == "tcp" && r.from == UI_PORT && r.to == UI_PORT)
        .filter_map(|r| match &r.source {
            Source::Cidr(c) => c.parse().ok(),
            Source::Group(_) => None,
        })
        .collect()
}

/// `--allow-cidr` is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadAllowCidr {
    /// Everyone, or a large share of the internet, without saying so.
    #[error("--allow-cidr {0} opens the UI to {addresses} addresses, the whole internet or a large share of it: pass --allow-anywhere as well if that is what you mean, or give your own address as a /32", addresses = 1u64 << (32 - u32::from(.0.prefix_len())))]
    Anywhere(Ipv4Net),
    /// Not a network address.
    #[error("--allow-cidr {given} has host bits set: did you mean {network}?")]
    HostBits {
        /// As given.
        given: Ipv4Net,
        /// Its network.
        network: Ipv4Net,
    },
}

/// Checks `--allow-cidr`: `0.0.0.0/0`, and any range wider than a /8
/// (`0.0.0.0/1` is half the internet), needs `--allow-anywhere`.
pub fn check_allow_cidr(cidr: Ipv4Net, anywhere: bool) -> Result<(), BadAllowCidr> {
    if cidr.addr() != cidr.network() {
        return Err(BadAllowCidr::HostBits {
            given: cidr,
            network: cidr.trunc(),
        });
    }
    if cidr.prefix_len() < fossa_contract::limits::ALLOW_CIDR_WIDEST_PREFIX && !anywhere {
        return Err(BadAllowCidr::Anywhere(cidr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_subnets_hold_the_most_workers_where_the_vpc_allows() {
        let l = SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(l.public.to_string(), "192.168.1.0/24");
        assert_eq!(l.private[0].to_string(), "192.168.4.0/22");
        assert_eq!(l.private[1].to_string(), "192.168.8.0/22");
        let most = |l: &SubnetLayout| fossa_contract::addresses::most_workers(&l.private);
        assert!(most(&l) >= fossa_contract::limits::MAX_WORKERS);
        let l = SubnetLayout::for_vpc("10.20.0.0/20".parse().unwrap()).unwrap();
        assert_eq!(l.private[1].to_string(), "10.20.8.0/22");
        assert!(!l.private[0].contains(&l.public.network()));
        // Too small for /22s: /24s, and the most workers bounded by them.
        let l = SubnetLayout::for_vpc("10.20.0.0/22".parse().unwrap()).unwrap();
        assert_eq!(l.private[1].to_string(), "10.20.3.0/24");
        assert_eq!(most(&l), 251);
    }

    #[test]
    fn unusable_vpc_cidrs_are_refused() {
        for c in [
            "192.168.0.0/24",
            "10.0.0.0/8",
            "8.8.0.0/16",
            "192.168.1.0/16",
        ] {
            let net: Ipv4Net = c.parse().unwrap();
            let e = SubnetLayout::for_vpc(net).unwrap_err();
            assert!(e.to_string().contains("--vpc-cidr"), "{c}");
        }
        // The gateway's own bridges (builds, the broker) must not shadow
        // any address of the VPC.
        let e = SubnetLayout::for_vpc("172.30.0.0/16".parse().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("172.30.252.0/24") && e.to_string().contains("fossa-build"),
            "{e}"
        );
        assert!(SubnetLayout::for_vpc("172.31.0.0/16".parse().unwrap()).is_ok());
    }

    #[test]
    fn gateway_rules_have_no_ssh_and_ui_only_from_allow() {
        let l = SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap();
        let rules = gateway_ingress(&["203.0.113.7/32".parse().unwrap()], &l, "sg-task");
        assert!(rules.iter().all(|r| r.from != 22));
        let ui: Vec<_> = rules.iter().filter(|r| r.from == UI_PORT).collect();
        assert_eq!(ui.len(), 1);
        assert_eq!(ui[0].source, Source::Cidr("203.0.113.7/32".into()));
        assert!(rules
            .iter()
            .any(|r| r.from == 5672 && r.source == Source::Group("sg-task".into())));
        assert!(rules
            .iter()
            .all(|r| r.source != Source::Cidr("0.0.0.0/0".into())));
    }

    #[test]
    fn missing_rules_ignores_descriptions() {
        let want = task_ingress("sg-gw");
        let mut have = want.clone();
        have[0].description = "other".into();
        assert!(missing_rules(&want, &have).is_empty());
        assert_eq!(missing_rules(&want, &[]), want);
    }

    #[test]
    fn stale_rules_are_what_desired_lacks_and_ui_sources_are_kept() {
        let l = SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap();
        let old = gateway_ingress(&["203.0.113.7/32".parse().unwrap()], &l, "sg-task");
        let new = gateway_ingress(&["198.51.100.0/24".parse().unwrap()], &l, "sg-task");
        let stale = stale_rules(&new, &old);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].source, Source::Cidr("203.0.113.7/32".into()));
        assert_eq!(missing_rules(&new, &old).len(), 1);
        assert_eq!(
            ui_sources(&old),
            vec!["203.0.113.7/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(stale_rules(&old, &old).is_empty());
    }

    fn e_says(r: Result<(), BadAllowCidr>, needle: &str) -> bool {
        r.is_err_and(|e| e.to_string().contains(needle))
    }

    #[test]
    fn the_whole_internet_needs_allow_anywhere() {
        let any: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        let e = check_allow_cidr(any, false).unwrap_err();
        assert!(e.to_string().contains("--allow-anywhere"), "{e}");
        assert!(check_allow_cidr(any, true).is_ok());
        assert!(check_allow_cidr("203.0.113.7/32".parse().unwrap(), false).is_ok());
        // Half the internet at a time is the internet too.
        for half in ["0.0.0.0/1", "128.0.0.0/1", "64.0.0.0/2", "32.0.0.0/7"] {
            let e = check_allow_cidr(half.parse().unwrap(), false).unwrap_err();
            assert!(e.to_string().contains("--allow-anywhere"), "{half}: {e}");
            assert!(check_allow_cidr(half.parse().unwrap(), true).is_ok());
        }
        assert!(e_says(
            check_allow_cidr("0.0.0.0/1".parse().unwrap(), false),
            "2147483648 addresses"
        ));
        assert!(check_allow_cidr("10.0.0.0/8".parse().unwrap(), false).is_ok());
        let e = check_allow_cidr("203.0.113.7/24".parse().unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("203.0.113.0/24"), "{e}");
    }
}
