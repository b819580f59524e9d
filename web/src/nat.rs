//! What the gateway's NAT forwards and holds, for `/metrics`: its rules'
//! counters (kept across restarts by the agent's NAT duty), the kernel's
//! connection tracking against its limit, and, on an ENA interface, the
//! counters of packets the instance's allowances dropped (`ethtool -S`),
//! which are the first sign that the gateway's instance type is too small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::Family;

/// The ENA counters `/metrics` passes on, as `ethtool -S` names them
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-network-performance-ena.html>).
pub const ENA_ALLOWANCES: [&str; 5] = [
    "bw_in_allowance_exceeded",
    "bw_out_allowance_exceeded",
    "conntrack_allowance_exceeded",
    "linklocal_allowance_exceeded",
    "pps_allowance_exceeded",
];

/// The NAT's figures at one reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NatFigures {
    /// Bytes forwarded since the counting began.
    pub bytes: u64,
    /// Packets forwarded since the counting began.
    pub packets: u64,
    /// Connections the kernel tracks now, when it says.
    pub conntrack: Option<u64>,
    /// The most it tracks (`nf_conntrack_max`), when it says.
    pub conntrack_max: Option<u64>,
    /// ENA's allowance counters, by `ethtool -S` name (empty off ENA).
    pub allowances: BTreeMap<String, u64>,
}

impl NatFigures {
    /// The families `/metrics` serves.
    pub fn families(&self) -> Vec<Family> {
        let mut out = vec![
            Family::counter(
                "fossa_nat_forwarded_bytes_total",
                "Bytes the gateway forwarded through NAT for the workers.",
            )
            .value(self.bytes as f64),
            Family::counter(
                "fossa_nat_forwarded_packets_total",
                "Packets the gateway forwarded through NAT for the workers.",
            )
            .value(self.packets as f64),
        ];
        if let Some(n) = self.conntrack {
            out.push(
                Family::gauge(
                    "fossa_nat_conntrack_entries",
                    "Connections the gateway's kernel tracks now.",
                )
                .value(n as f64),
            );
        }
        if let Some(n) = self.conntrack_max {
            out.push(
                Family::gauge(
                    "fossa_nat_conntrack_entries_limit",
                    "The most connections the gateway's kernel tracks (nf_conntrack_max).",
                )
                .value(n as f64),
            );
        }
        if !self.allowances.is_empty() {
            let mut f = Family::counter(
                "fossa_nat_allowance_exceeded_packets_total",
                "Packets the instance's network allowances queued or dropped (ENA's ethtool -S counters), by counter.",
            );
            for (name, n) in &self.allowances {
                f = f.with(&[("counter", name)], *n as f64);
            }
            out.push(f);
        }
        out
    }
}

/// ENA's allowance counters in `ethtool -S` output (`     name: value`);
/// empty for a driver without them.
pub fn parse_ethtool(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let k = k.trim();
            ENA_ALLOWANCES
                .contains(&k)
                .then(|| Some((k.to_owned(), v.trim().parse().ok()?)))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_gives_the_allowance_counters_only() {
        let text = "NIC statistics:\n     tx_timeout: 0\n     bw_in_allowance_exceeded: 0\n     bw_out_allowance_exceeded: 12\n     pps_allowance_exceeded: 3\n     conntrack_allowance_exceeded: 0\n     queue_0_tx_cnt: 991\n";
        let m = parse_ethtool(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m["bw_out_allowance_exceeded"], 12);
        assert!(parse_ethtool("NIC statistics:\n     rx_packets: 1\n").is_empty());
    }
}
