//! On-demand list prices (Linux, USD) per region, for the cost the UI and
//! `status` show: the gateway instance, its public IPv4 address, the Fargate
//! workers, and the managed NAT Gateway the gateway instance stands in for.
//!
//! Source: the AWS pricing pages <https://aws.amazon.com/ec2/pricing/on-demand/>,
//! <https://aws.amazon.com/fargate/pricing/> and <https://aws.amazon.com/vpc/pricing/>
//! (public IPv4: $0.005 per address-hour in every region since 2024-02-01).
//! Transcribed on [`PRICES_DATE`]; the Price List API is not called, so a
//! region or instance type missing here is named in the quote's basis
//! instead of guessed. The burstable families are derived from the t3.small
//! price: t3a at 0.9 and t4g at 0.8 of t3 (AWS lists them about 10 % and
//! 20 % below t3 in each region; the derived prices are within 2 % of the
//! list, t4g.small in us-east-1 being $0.0168 against $0.01664 here), and
//! each size doubles the one below.

/// When the table was transcribed.
pub const PRICES_DATE: &str = "2026-11-26";
/// Where the figures come from, for the UI's basis line.
pub const PRICES_SOURCE: &str = "AWS on-demand list prices (EC2, Fargate, VPC pricing pages)";

/// One region's prices, per hour unless named per GB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionPrices {
    /// The region code.
    pub region: &'static str,
    /// A `t3.small`.
    pub t3_small: f64,
    /// Fargate (Linux/x86), per vCPU-hour.
    pub fargate_vcpu: f64,
    /// Fargate (Linux/x86), per GB-hour.
    pub fargate_gb: f64,
    /// A NAT Gateway, per hour.
    pub nat_gateway_hour: f64,
    /// A NAT Gateway, per GB processed.
    pub nat_gateway_gb: f64,
}

/// Fargate Spot's price as a share of Fargate's. Spot prices move with
/// spare capacity and differ by region; us-east-1's listed Fargate Spot
/// price ($0.01334053 per vCPU-hour, $0.00146489 per GB-hour, against
/// $0.04048 and $0.004445) is 32.96 % of on-demand for both, and the other
/// regions are taken at the same share. The quote's part says so.
pub const FARGATE_SPOT_SHARE: f64 = 0.3296;

/// A public IPv4 address, per hour (every region).
pub const PUBLIC_IPV4_HOUR: f64 = 0.005;

/// The regions priced here.
pub const REGIONS: [RegionPrices; 8] = [
    RegionPrices {
        region: "us-east-1",
        t3_small: 0.0208,
        fargate_vcpu: 0.040_48,
        fargate_gb: 0.004_445,
        nat_gateway_hour: 0.045,
        nat_gateway_gb: 0.045,
    },
    RegionPrices {
        region: "us-east-2",
        t3_small: 0.0208,
        fargate_vcpu: 0.040_48,
        fargate_gb: 0.004_445,
        nat_gateway_hour: 0.045,
        nat_gateway_gb: 0.045,
    },
    RegionPrices {
        region: "us-west-2",
        t3_small: 0.0208,
        fargate_vcpu: 0.040_48,
        fargate_gb: 0.004_445,
        nat_gateway_hour: 0.045,
        nat_gateway_gb: 0.045,
    },
    RegionPrices {
        region: "eu-west-1",
        t3_small: 0.0228,
        fargate_vcpu: 0.040_48,
        fargate_gb: 0.004_445,
        nat_gateway_hour: 0.048,
        nat_gateway_gb: 0.048,
    },
    RegionPrices {
        region: "eu-west-2",
        t3_small: 0.0236,
        fargate_vcpu: 0.046_56,
        fargate_gb: 0.005_11,
        nat_gateway_hour: 0.050,
        nat_gateway_gb: 0.050,
    },
    RegionPrices {
        region: "eu-central-1",
        t3_small: 0.0240,
        fargate_vcpu: 0.046_56,
        fargate_gb: 0.005_11,
        nat_gateway_hour: 0.052,
        nat_gateway_gb: 0.052,
    },
    RegionPrices {
        region: "ap-southeast-2",
        t3_small: 0.0264,
        fargate_vcpu: 0.048_56,
        fargate_gb: 0.005_32,
        nat_gateway_hour: 0.059,
        nat_gateway_gb: 0.059,
    },
    RegionPrices {
        region: "ap-northeast-1",
        t3_small: 0.0272,
        fargate_vcpu: 0.050_56,
        fargate_gb: 0.005_53,
        nat_gateway_hour: 0.062,
        nat_gateway_gb: 0.062,
    },
];

/// The prices of `region`, if it is in the table.
pub fn region(region: &str) -> Option<&'static RegionPrices> {
    REGIONS.iter().find(|r| r.region == region)
}

impl RegionPrices {
    /// The hourly price of a burstable `instance_type` (t3, t3a, t4g; nano
    /// to 2xlarge), or `None` for a type not in the table.
    pub fn instance_hour(&self, instance_type: &str) -> Option<f64> {
        let (family, size) = instance_type.split_once('.')?;
        let family = match family {
            "t3" => 1.0,
            "t3a" => 0.9,
            "t4g" => 0.8,
            _ => return None,
        };
        let size = match size {
            "nano" => 0.25,
            "micro" => 0.5,
            "small" => 1.0,
            "medium" => 2.0,
            "large" => 4.0,
            "xlarge" => 8.0,
            "2xlarge" => 16.0,
            _ => return None,
        };
        Some(self.t3_small * family * size)
    }

    /// One Fargate task of `cpu` units and `memory` MiB, per hour.
    pub fn fargate_task_hour(&self, cpu: u32, memory: u32) -> f64 {
        self.fargate_vcpu * f64::from(cpu) / 1024.0 + self.fargate_gb * f64::from(memory) / 1024.0
    }
}

/// One priced part of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// What it is (`gateway t3.small`, `4 Fargate workers of 1024 CPU / 2048 MiB`).
    pub what: String,
    /// Its price per hour.
    pub hourly: f64,
}

/// What a stack costs per hour, by part, in a region.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    /// The parts with a price.
    pub parts: Vec<Part>,
    /// What the table lacks, named (empty when every part is priced).
    pub missing: Vec<String>,
    /// The region's NAT Gateway, per hour and per GB (`None`: region unknown).
    pub nat_gateway: Option<(f64, f64)>,
}

impl Quote {
    /// The sum of the priced parts.
    pub fn hourly(&self) -> f64 {
        self.parts.iter().map(|p| p.hourly).sum()
    }

    /// The gateway instance and its address: what stands in for a NAT Gateway.
    pub fn gateway_hourly(&self) -> f64 {
        self.parts
            .iter()
            .filter(|p| p.what.starts_with("gateway") || p.what.starts_with("public IPv4"))
            .map(|p| p.hourly)
            .sum()
    }
}

/// The hourly quote of a stack: the gateway `instance_type` with one
/// public IPv4 address, and `workers` Fargate tasks of `cpu` / `memory`.
pub fn quote(region_code: &str, instance_type: &str, workers: u32, cpu: u32, memory: u32) -> Quote {
    quote_with_spot(region_code, instance_type, workers, 0, cpu, memory)
}

/// [`quote`] with `spot` of the workers on Fargate Spot, at
/// [`FARGATE_SPOT_SHARE`] of the Fargate price.
pub fn quote_with_spot(
    region_code: &str,
    instance_type: &str,
    workers: u32,
    spot: u32,
    cpu: u32,
    memory: u32,
) -> Quote {
    let spot = spot.min(workers);
    let mut q = Quote {
        parts: Vec::new(),
        missing: Vec::new(),
        nat_gateway: None,
    };
    let Some(r) = region(region_code) else {
        q.missing.push(format!(
            "region {region_code} is not in the price table (contract/src/prices.rs, {PRICES_DATE})"
        ));
        return q;
    };
    q.nat_gateway = Some((r.nat_gateway_hour, r.nat_gateway_gb));
    match r.instance_hour(instance_type) {
        Some(h) => q.parts.push(Part {
            what: format!("gateway {instance_type}"),
            hourly: h,
        }),
        None => q.missing.push(format!(
            "instance type {instance_type} is not in the price table"
        )),
    }
    q.parts.push(Part {
        what: "public IPv4 address".into(),
        hourly: PUBLIC_IPV4_HOUR,
    });
    let on_demand = workers - spot;
    if on_demand > 0 || spot == 0 {
        q.parts.push(Part {
            what: format!("{on_demand} Fargate workers of {cpu} CPU units / {memory} MiB"),
            hourly: f64::from(on_demand) * r.fargate_task_hour(cpu, memory),
        });
    }
    if spot > 0 {
        q.parts.push(Part {
            what: format!(
                "{spot} Fargate Spot workers of {cpu} CPU units / {memory} MiB (at {:.2} % of Fargate)",
                FARGATE_SPOT_SHARE * 100.0
            ),
            hourly: f64::from(spot) * r.fargate_task_hour(cpu, memory) * FARGATE_SPOT_SHARE,
        });
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burstable_families_follow_the_t3_small_price() {
        let r = region("us-east-1").unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(r.instance_hour("t3.small").unwrap(), 0.0208));
        assert!(near(r.instance_hour("t3.micro").unwrap(), 0.0104));
        assert!(near(r.instance_hour("t4g.small").unwrap(), 0.01664));
        assert!(near(r.instance_hour("t3a.medium").unwrap(), 0.03744));
        assert_eq!(r.instance_hour("c7g.large"), None);
        assert_eq!(r.instance_hour("t3"), None);
    }

    #[test]
    fn a_quote_names_what_it_cannot_price() {
        let q = quote("eu-west-2", "t3.small", 4, 1024, 2048);
        assert!(q.missing.is_empty());
        assert_eq!(q.parts.len(), 3);
        // 0.0236 + 0.005 + 4 × (0.04656 + 2 × 0.00511)
        assert!((q.hourly() - (0.0236 + 0.005 + 4.0 * (0.04656 + 0.01022))).abs() < 1e-9);
        assert!((q.gateway_hourly() - 0.0286).abs() < 1e-9);
        assert_eq!(q.nat_gateway, Some((0.05, 0.05)));
        let q = quote("eu-west-2", "m5.large", 0, 1024, 2048);
        assert_eq!(
            q.missing,
            ["instance type m5.large is not in the price table"]
        );
        let q = quote("mars-north-1", "t3.small", 1, 1024, 2048);
        assert!(q.parts.is_empty() && q.missing[0].contains("mars-north-1"));
    }

    #[test]
    fn spot_workers_are_priced_at_the_spot_share() {
        let all = quote("us-east-1", "t3.small", 4, 1024, 2048);
        let mixed = quote_with_spot("us-east-1", "t3.small", 4, 3, 1024, 2048);
        let task = region("us-east-1").unwrap().fargate_task_hour(1024, 2048);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(
            all.hourly() - mixed.hourly(),
            3.0 * task * (1.0 - FARGATE_SPOT_SHARE)
        ));
        assert_eq!(mixed.parts.len(), 4);
        assert!(
            mixed.parts[3].what.starts_with("3 Fargate Spot workers"),
            "{:?}",
            mixed.parts
        );
        // The listed us-east-1 Spot price is the share of the listed on-demand one.
        assert!((0.01334053 / 0.04048 - FARGATE_SPOT_SHARE).abs() < 1e-4);
        assert!((0.00146489 / 0.004445 - FARGATE_SPOT_SHARE).abs() < 1e-4);
        // More Spot than workers is capped; all on Spot has no on-demand part.
        let spot = quote_with_spot("us-east-1", "t3.small", 2, 5, 1024, 2048);
        assert_eq!(spot.parts.len(), 3);
        assert!(spot.parts[2].what.starts_with("2 Fargate Spot"));
    }

    #[test]
    fn every_region_is_listed_once_with_sane_prices() {
        for (i, r) in REGIONS.iter().enumerate() {
            assert!(REGIONS[..i].iter().all(|o| o.region != r.region));
            assert!(r.t3_small > 0.01 && r.t3_small < 0.05, "{r:?}");
            assert!(r.fargate_vcpu > 0.03 && r.fargate_vcpu < 0.07, "{r:?}");
            assert!(
                r.nat_gateway_hour >= 0.045 && r.nat_gateway_gb >= 0.045,
                "{r:?}"
            );
        }
    }
}
