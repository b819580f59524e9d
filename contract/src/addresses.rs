//! Addresses for workers: every Fargate task takes one address of its
//! private subnet (awsvpc), and during a deployment ECS runs old and new
//! tasks together. So the most workers a stack may run is bounded by its
//! private subnets' free addresses, counted with that surge.

use ipnet::Ipv4Net;

/// Addresses AWS reserves in every subnet: the network address, the VPC
/// router, the DNS server, one for future use and the broadcast address
/// ("Subnet CIDR blocks",
/// <https://docs.aws.amazon.com/vpc/latest/userguide/subnet-sizing.html>).
pub const RESERVED_PER_SUBNET: u32 = 5;

/// The service's `maximumPercent` (ECS's default for a rolling update,
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeploymentConfiguration.html>):
/// while a deployment replaces the tasks, up to this share of the desired
/// count runs, old and new together.
pub const DEPLOYMENT_MAX_PERCENT: u32 = 200;

/// The most tasks `workers` become while a deployment replaces them.
pub fn with_surge(workers: u32) -> u32 {
    workers.saturating_mul(DEPLOYMENT_MAX_PERCENT) / 100
}

/// The addresses tasks can take in `subnet`.
pub fn usable(subnet: &Ipv4Net) -> u32 {
    let all = 1u64 << (32 - u32::from(subnet.prefix_len()));
    all.saturating_sub(u64::from(RESERVED_PER_SUBNET)) as u32
}

/// The most workers `subnets` hold with a deployment's surge.
pub fn most_workers(subnets: &[Ipv4Net]) -> u32 {
    let have: u32 = subnets.iter().map(usable).sum();
    have * 100 / DEPLOYMENT_MAX_PERCENT
}

/// More workers than the private subnets have addresses for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{workers} workers need up to {need} addresses while a deployment replaces them (ECS runs up to {DEPLOYMENT_MAX_PERCENT} % of the tasks then), and the private subnets {subnets} have {have} (AWS keeps {RESERVED_PER_SUBNET} in each): use --max-workers {most} or fewer, or a new stack whose --vpc-cidr is a /20 or larger (its private subnets are /22s)"
)]
pub struct AddressError {
    /// The most workers asked for.
    pub workers: u32,
    /// The addresses they take with the surge.
    pub need: u32,
    /// The subnets, as text.
    pub subnets: String,
    /// Their usable addresses.
    pub have: u32,
    /// The most workers they hold.
    pub most: u32,
}

/// Checks that `workers` fit `subnets` with a deployment's surge.
pub fn check(workers: u32, subnets: &[Ipv4Net]) -> Result<(), AddressError> {
    let need = with_surge(workers);
    let have: u32 = subnets.iter().map(usable).sum();
    if need <= have {
        return Ok(());
    }
    Err(AddressError {
        workers,
        need,
        subnets: subnets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        have,
        most: most_workers(subnets),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<Ipv4Net> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn two_slash_24s_hold_251_workers_with_the_surge() {
        let old = nets(&["192.168.2.0/24", "192.168.3.0/24"]);
        assert_eq!(usable(&old[0]), 251);
        assert_eq!(most_workers(&old), 251);
        assert!(check(251, &old).is_ok());
        let e = check(300, &old).unwrap_err();
        assert_eq!((e.need, e.have, e.most), (600, 502, 251));
        let text = e.to_string();
        assert!(
            text.contains("300 workers need up to 600 addresses"),
            "{text}"
        );
        assert!(
            text.contains("192.168.2.0/24 and 192.168.3.0/24 have 502"),
            "{text}"
        );
        assert!(text.contains("use --max-workers 251 or fewer"), "{text}");
    }

    #[test]
    fn two_slash_22s_hold_the_most_workers_a_stack_runs() {
        let new = nets(&["192.168.4.0/22", "192.168.8.0/22"]);
        assert_eq!(most_workers(&new), 1019);
        assert!(check(crate::limits::MAX_WORKERS, &new).is_ok());
    }
}
