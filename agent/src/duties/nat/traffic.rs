//! The bytes the gateway forwards through NAT, from the packet counters of
//! the NAT duty's own `FOSSA-FORWARD` rules, for the cost figures.
//!
//! The kernel's counters start again at 0 whenever a rule is re-added (a
//! repair) or the chain is flushed, and they outlive the agent. So the
//! duty keeps, in `nat-traffic.json` in the state directory, each rule's
//! last reading and the bytes counted per month: a reading above the last
//! adds the difference, one below it (the rule was re-added) adds all of
//! it, and a restarted agent goes on from the file instead of counting the
//! kernel's totals again.

use fossa_contract::networks;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rules::NatError;
use crate::host::exec::Executor;

/// What the NAT duty counted: this month's bytes, and all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatTraffic {
    /// The month counted (`2026-11`, UTC).
    pub month: String,
    /// Bytes forwarded this month.
    pub month_bytes: u64,
    /// Bytes forwarded since the counting began.
    pub total_bytes: u64,
    /// Packets forwarded since the counting began.
    #[serde(default)]
    pub total_packets: u64,
    /// What the kernel and the interface said at the last reading (not kept).
    #[serde(skip)]
    pub live: Live,
}

/// The NAT's gauges at one reading: connection tracking and ENA's allowances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// Connections tracked now (`nf_conntrack_count`).
    pub conntrack: Option<u64>,
    /// The most tracked (`nf_conntrack_max`).
    pub conntrack_max: Option<u64>,
    /// ENA's allowance counters of the egress interface (empty off ENA).
    pub allowances: BTreeMap<String, u64>,
}

impl Live {
    /// Reads the kernel's connection tracking, and `ethtool -S` of `egress`
    /// (nothing when the module or the tool is not there).
    pub fn read(exec: &dyn Executor, egress: &str) -> Live {
        let proc_u64 = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        let allowances = exec
            .run("ethtool", &["-S", egress])
            .ok()
            .filter(|o| o.success())
            .map(|o| fossa_web::nat::parse_ethtool(&o.stdout))
            .unwrap_or_default();
        Live {
            conntrack: proc_u64("nf_conntrack_count"),
            conntrack_max: proc_u64("nf_conntrack_max"),
            allowances,
        }
    }
}

impl NatTraffic {
    /// What `/metrics` serves of it.
    pub fn figures(&self) -> fossa_web::nat::NatFigures {
        fossa_web::nat::NatFigures {
            bytes: self.total_bytes,
            packets: self.total_packets,
            conntrack: self.live.conntrack,
            conntrack_max: self.live.conntrack_max,
            allowances: self.live.allowances.clone(),
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ledger {
    /// Each rule's last byte reading, keyed by its text.
    rules: BTreeMap<String, u64>,
    /// Each rule's last packet reading, keyed by its text.
    #[serde(default)]
    packets: BTreeMap<String, u64>,
    /// What was counted.
    traffic: NatTraffic,
}

/// The month of `epoch`, UTC (`2026-11`).
pub fn month_of(epoch: i64) -> String {
    let t = fossa_contract::utc(epoch);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// Each ACCEPT rule's byte counter in `iptables -L CHAIN -v -x -n` output,
/// keyed by the rule's text after the counters.
pub fn parse_counters(listing: &str) -> BTreeMap<String, u64> {
    parse_column(listing, true)
}

/// Each ACCEPT rule's packet counter, as [`parse_counters`] reads bytes.
pub fn parse_packets(listing: &str) -> BTreeMap<String, u64> {
    parse_column(listing, false)
}

fn parse_column(listing: &str, bytes_column: bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        let (Some(pkts), Some(bytes)) = (words.next(), words.next()) else {
            continue;
        };
        let (Ok(pkts), Ok(bytes)) = (pkts.parse::<u64>(), bytes.parse::<u64>()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        // The workers' traffic only: builds reaching PyPI are the
        // gateway's own, not the NAT's.
        if rest.first() != Some(&"ACCEPT") || rest.contains(&networks::BUILD.bridge) {
            continue;
        }
        *out.entry(rest.join(" ")).or_default() += if bytes_column { bytes } else { pkts };
    }
    out
}

/// Counts forwarded bytes across readings and restarts.
#[derive(Debug)]
pub struct Counter {
    path: PathBuf,
    ledger: Ledger,
}

impl Counter {
    /// The counter kept in `state_dir` (a missing or unreadable file starts afresh).
    pub fn open(state_dir: &Path) -> Counter {
        let path = state_dir.join("nat-traffic.json");
        let ledger = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Counter { path, ledger }
    }

    /// What was counted so far.
    pub fn traffic(&self) -> &NatTraffic {
        &self.ledger.traffic
    }

    /// Adds what `readings` (each rule's counter now) say was forwarded
    /// since the last reading, in `month`.
    pub fn add(&mut self, readings: &BTreeMap<String, u64>, month: &str) -> u64 {
        let new = since(&self.ledger.rules, readings);
        self.ledger.rules = readings.clone();
        let t = &mut self.ledger.traffic;
        if t.month != month {
            t.month = month.to_owned();
            t.month_bytes = 0;
        }
        t.month_bytes += new;
        t.total_bytes += new;
        new
    }

    /// Adds packets as [`Counter::add`] adds bytes.
    pub fn add_packets(&mut self, readings: &BTreeMap<String, u64>) {
        self.ledger.traffic.total_packets += since(&self.ledger.packets, readings);
        self.ledger.packets = readings.clone();
    }

    /// Keeps the gauges read now.
    pub fn set_live(&mut self, live: Live) {
        self.ledger.traffic.live = live;
    }

    /// Reads the counters of `chain` and adds them; then saves the file.
    pub fn read(&mut self, exec: &dyn Executor, chain: &str, now: i64) -> Result<u64, NatError> {
        let args = ["-t", "filter", "-L", chain, "-v", "-x", "-n"];
        let out = super::rules::iptables(exec, &args)?;
        if !out.success() {
            return Err(NatError::Iptables {
                args: args.join(" "),
                stderr: super::rules::one_line(&out.stderr),
            });
        }
        let new = self.add(&parse_counters(&out.stdout), &month_of(now));
        self.add_packets(&parse_packets(&out.stdout));
        self.save();
        Ok(new)
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec(&self.ledger).expect("the ledger serialises");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

/// What counters read `now` add to those read `before`: the difference,
/// or all of a counter lower than before (its rule was re-added).
fn since(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> u64 {
    now.iter()
        .map(|(rule, &n)| {
            let b = before.get(rule).copied().unwrap_or(0);
            if n >= b {
                n - b
            } else {
                n
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "Chain FOSSA-FORWARD (2 references)
    pkts      bytes target     prot opt in     out     source               destination
      10      840 ACCEPT     all  --  *      gwout   192.168.2.0/24       0.0.0.0/0
       8     1200 ACCEPT     all  --  gwout  *       0.0.0.0/0            192.168.2.0/24       ctstate RELATED,ESTABLISHED
     90   900000 ACCEPT     all  --  fossa-build0 gwout   0.0.0.0/0            0.0.0.0/0
       1       60 DROP       all  --  *      *       0.0.0.0/0            0.0.0.0/0
";

    #[test]
    fn accept_rules_are_read_by_their_text() {
        let c = parse_counters(LISTING);
        assert_eq!(c.len(), 2);
        assert_eq!(c.values().sum::<u64>(), 2040);
        assert!(c.keys().any(|k| k.contains("RELATED,ESTABLISHED")));
        assert_eq!(parse_packets(LISTING).values().sum::<u64>(), 18);
    }

    #[test]
    fn a_re_added_rule_counts_from_zero_and_a_restart_does_not_count_twice() {
        let dir = std::env::temp_dir().join(format!("fossa-nat-traffic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("nat-traffic.json"));
        let mut c = Counter::open(&dir);
        let r = |a: u64, b: u64| BTreeMap::from([("out".to_owned(), a), ("back".to_owned(), b)]);
        assert_eq!(c.add(&r(100, 1000), "2026-11"), 1100);
        assert_eq!(c.add(&r(150, 1500), "2026-11"), 550);
        // The chain was flushed and repaired: the counters start again.
        assert_eq!(c.add(&r(20, 30), "2026-11"), 50);
        c.save();
        // A restarted agent goes on from the file.
        let mut c = Counter::open(&dir);
        assert_eq!(c.traffic().month_bytes, 1700);
        assert_eq!(c.add(&r(20, 30), "2026-11"), 0);
        // A new month starts at 0; the total goes on.
        assert_eq!(c.add(&r(25, 30), "2026-12"), 5);
        assert_eq!(c.traffic().month_bytes, 5);
        assert_eq!(c.traffic().total_bytes, 1705);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_764_115_200), "2025-11"); // 2025-11-26
        assert_eq!(month_of(1_767_225_599), "2025-12"); // 2025-12-31 23:59:59
        assert_eq!(month_of(1_767_225_600), "2026-01");
    }
}
