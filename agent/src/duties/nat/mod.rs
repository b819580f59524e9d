//! The NAT duty: lets the Fargate tasks in the private subnets reach the
//! internet through this instance, and keeps them off the gateway's own
//! ports but the broker's.
//!
//! The security group must let the private subnets in on every port, since a
//! security group sees forwarded packets too; so the host's INPUT chain is
//! where tasks are kept from the UI (443), epmd (4369) and Erlang
//! distribution (25672): new connections from the private subnets to the
//! gateway itself are dropped unless they are TCP to 5672. Replies to the
//! gateway's own connections (its polls of the workers) pass.
//!
//! [`NatPlan`] is the desired state as plain data (sysctls, two chains of our
//! own, their rules and the jumps into them); [`apply`] adds only what is
//! missing (`-C` before `-A`), then reads everything back and fails if any
//! piece is absent; [`remove`] deletes exactly the jumps and chains it owns;
//! [`check`] reports each piece. It never flushes a chain it does not own.

pub mod rules;
pub mod traffic;

use std::sync::Arc;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use tokio::sync::watch;

use super::{Duty, DutyError, Outcome, Shared};
use crate::host::exec::Executor;
use crate::settings::Settings;
pub use rules::{
    apply, chain_exists, check, default_interface, egress_self_test, egress_target, plan, remove,
    Applied, NatError, NatPlan, Piece, Rule, DOCKER_USER, FORWARD_CHAIN, INPUT_CHAIN, NAT_CHAIN,
};
use traffic::{Counter, NatTraffic};

/// The NAT duty: [`plan`] and [`apply`] for the stack's private subnets, then
/// the egress self-test over the uplink.
pub struct NatDuty {
    exec: Arc<dyn Executor>,
    traffic: Arc<watch::Sender<NatTraffic>>,
    counter: Option<Arc<std::sync::Mutex<Counter>>>,
    /// A repair (rules put back) counts as NAT recovering, for the cluster
    /// duty's failed deployments.
    recoveries: Arc<super::driver::Recoveries>,
}

impl NatDuty {
    /// The duty, on `shared`'s host.
    pub fn new(shared: &Shared) -> Self {
        NatDuty {
            exec: shared.exec.clone(),
            traffic: shared.nat_traffic.clone(),
            counter: None,
            recoveries: shared.recoveries.clone(),
        }
    }
}

#[async_trait]
impl Duty<Settings> for NatDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        let cidrs: Vec<Ipv4Net> = s
            .stack
            .private_cidrs()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let exec = self.exec.clone();
        let counter = self
            .counter
            .get_or_insert_with(|| {
                let c = Counter::open(&s.toml.state_dir);
                self.traffic.send_replace(c.traffic().clone());
                Arc::new(std::sync::Mutex::new(c))
            })
            .clone();
        let traffic = self.traffic.clone();
        let summary = tokio::task::spawn_blocking(move || {
            let plan = NatPlan {
                ui_uid: crate::ui::confine::Account::for_ui().map(|a| a.uid),
                ..plan(exec.as_ref(), &cidrs, None)?
            };
            // Counted before anything is re-added, so a repair loses nothing
            // read so far; a chain that is not there yet has nothing to count.
            let mut c = counter.lock().unwrap_or_else(|p| p.into_inner());
            if chain_exists(exec.as_ref(), "filter", FORWARD_CHAIN)? {
                if let Err(e) = c.read(exec.as_ref(), FORWARD_CHAIN, fossa_contract::unix_now()) {
                    tracing::warn!(
                        "cannot read the NAT counters: {}",
                        fossa_contract::aws::chain(&e)
                    );
                }
            }
            c.set_live(traffic::Live::read(exec.as_ref(), &plan.egress));
            traffic.send_replace(c.traffic().clone());
            drop(c);
            let applied = apply(exec.as_ref(), &plan)?;
            Ok::<_, NatError>(if applied.added.is_empty() {
                (
                    false,
                    format!("NAT verified via {} for {}", plan.egress, cidrs.len()),
                )
            } else {
                let added = applied.added.join(", ");
                (
                    true,
                    format!("NAT applied via {}: added {added}", plan.egress),
                )
            })
        })
        .await
        .map_err(|source| DutyError::Blocking {
            what: "NAT",
            source,
        })??;
        let (repaired, summary) = summary;
        if repaired {
            self.recoveries.bump("nat");
        }
        let (ok, test) = egress_self_test(&egress_target(&s.toml)).await;
        Ok(Outcome::done(summary).with_detail(ok, format!("egress self-test: {test}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::exec::Fake;
    use rules::OUTPUT_CHAIN;

    fn plan_for(fake: &Fake) -> NatPlan {
        let cidrs = [
            "192.168.2.0/24".parse().unwrap(),
            "192.168.3.0/24".parse().unwrap(),
        ];
        plan(fake, &cidrs, None).unwrap()
    }

    #[test]
    fn egress_comes_from_the_default_route() {
        let fake = Fake::new();
        assert_eq!(plan_for(&fake).egress, "eth0");
        assert_eq!(default_interface("Iface\tDestination\n"), None);
        assert!(matches!(plan(&fake, &[], None), Err(NatError::NoCidrs)));
        // With the lasting interface attached (AL2023 gives it a default
        // route too, of a higher metric), the egress stays the primary,
        // which holds the Elastic IP, whichever the kernel lists first.
        let two = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                   ens6\t00000000\t0101A8C0\t0003\t0\t0\t513\t00000000\n\
                   ens5\t00000000\t0101A8C0\t0003\t0\t0\t512\t00000000\n\
                   ens5\t0001A8C0\t00000000\t0001\t0\t0\t512\t00FFFFFF\n";
        assert_eq!(default_interface(two).as_deref(), Some("ens5"));
    }

    #[test]
    fn forwarding_is_enabled_before_any_rule() {
        let fake = Fake::new();
        apply(&fake, &plan_for(&fake)).unwrap();
        let calls = fake.calls();
        let first_ipt = calls
            .iter()
            .position(|c| c.starts_with("iptables"))
            .unwrap();
        let fwd = calls
            .iter()
            .position(|c| c == "write /proc/sys/net/ipv4/ip_forward=1")
            .unwrap();
        assert!(fwd < first_ipt, "{calls:#?}");
        assert_eq!(fake.file("/proc/sys/net/ipv4/ip_forward").unwrap(), "1");
    }

    #[test]
    fn apply_checks_before_adding_and_is_idempotent() {
        let fake = Fake::new();
        let p = NatPlan {
            ui_uid: Some(999),
            ..plan_for(&fake)
        };
        let first = apply(&fake, &p).unwrap();
        assert_eq!(
            first.added.iter().filter(|a| a.starts_with("rule")).count(),
            // 6 rules per private CIDR, the UI process kept off IMDS, the
            // containers' 15 (below), and 4 jumps (FORWARD, POSTROUTING,
            // INPUT, OUTPUT).
            12 + 1 + 15 + 4
        );
        assert!(
            first
                .added
                .iter()
                .any(|a| a
                    .contains("FOSSA-OUTPUT -d 169.254.0.0/16 -m owner --uid-owner 999 -j REJECT")),
            "{:?}",
            first.added
        );
        let snapshot = fake.snapshot();
        for _ in 0..10 {
            assert!(apply(&fake, &p).unwrap().added.is_empty());
        }
        assert_eq!(fake.snapshot(), snapshot);
        assert_eq!(
            fake.rules("nat", NAT_CHAIN),
            [
                "-s 172.30.252.0/24 -o eth0 -j MASQUERADE",
                "-s 192.168.2.0/24 -o eth0 -j MASQUERADE",
                "-s 192.168.3.0/24 -o eth0 -j MASQUERADE"
            ]
        );
        assert_eq!(fake.rules("filter", "FORWARD"), ["-j FOSSA-FORWARD"]);
        assert_eq!(fake.rules("filter", "INPUT"), ["-j FOSSA-INPUT"]);
        assert_eq!(
            fake.rules("filter", INPUT_CHAIN)[3..5],
            [
                "-s 192.168.2.0/24 -p tcp ! --dport 5672 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP",
                "-s 192.168.2.0/24 ! -p tcp -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP"
            ]
        );
        assert_eq!(
            fake.rules("filter", FORWARD_CHAIN)[..2],
            [
                "-s 192.168.3.0/24 -d 169.254.0.0/16 -j DROP",
                "-s 192.168.2.0/24 -d 169.254.0.0/16 -j DROP"
            ],
            "link-local dropped before any ACCEPT"
        );
        for c in fake.calls().iter().filter(|c| c.contains(" -A ")) {
            let check = c.replace(" -A ", " -C ");
            assert!(
                fake.calls().contains(&check),
                "{c} was added without a check"
            );
        }
        assert!(
            fake.calls()
                .iter()
                .all(|c| !c.contains(" -F ") || c.contains("FOSSA-")),
            "flushes only its own chains"
        );
    }

    #[test]
    fn containers_reach_neither_imds_nor_the_gateway_nor_the_workers() {
        let fake = Fake::new();
        let p = NatPlan {
            ui_uid: Some(999),
            ..plan_for(&fake)
        };
        apply(&fake, &p).unwrap();
        let forward = fake.rules("filter", FORWARD_CHAIN);
        let at = |rule: &str| {
            forward
                .iter()
                .position(|r| r == rule)
                .unwrap_or_else(|| panic!("{rule} in {forward:#?}"))
        };
        at("-i fossa-build0 -o eth0 -j ACCEPT");
        let first_accept = forward.iter().position(|r| r.ends_with("ACCEPT")).unwrap();
        for drop in [
            "-i fossa-build0 -d 169.254.0.0/16 -j DROP",
            "-i fossa-broker0 -d 169.254.0.0/16 -j DROP",
            "-i docker0 -d 169.254.0.0/16 -j DROP",
            "-i fossa-build0 ! -o eth0 -j DROP",
            "-i fossa-build0 -d 192.168.2.0/24 -j DROP",
            "-i fossa-build0 -d 192.168.3.0/24 -j DROP",
            "-i fossa-broker0 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP",
        ] {
            assert!(at(drop) < first_accept, "{drop} before every ACCEPT");
        }
        let input = fake.rules("filter", INPUT_CHAIN);
        for b in ["fossa-build0", "fossa-broker0", "docker0"] {
            let rule = format!("-i {b} -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP");
            assert!(input.contains(&rule), "{rule} in {input:#?}");
        }
        let output = fake.rules("filter", OUTPUT_CHAIN);
        for net in ["172.30.252.0/24", "172.30.253.0/24"] {
            let rule = format!("-d {net} -m owner --uid-owner 999 -j REJECT");
            assert!(output.contains(&rule), "{rule} in {output:#?}");
        }
    }

    #[test]
    fn an_older_chain_gets_the_link_local_drop_before_its_accepts() {
        let fake = Fake::new();
        let p = plan_for(&fake);
        apply(&fake, &p).unwrap();
        // An agent from before the rule: its chain has no DROP.
        while fake.rules("filter", FORWARD_CHAIN)[0].contains("DROP") {
            fake.drop_rule("filter", FORWARD_CHAIN, 0);
        }
        assert!(fake.rules("filter", FORWARD_CHAIN)[0].contains("ACCEPT"));
        apply(&fake, &p).unwrap();
        let rules = fake.rules("filter", FORWARD_CHAIN);
        assert!(
            rules[0].contains("169.254.0.0/16 -j DROP")
                && rules[1].contains("169.254.0.0/16 -j DROP"),
            "{rules:?}"
        );
    }

    #[test]
    fn docker_user_gets_a_jump_when_present() {
        let fake = Fake::new();
        fake.add_chain("filter", DOCKER_USER);
        apply(&fake, &plan_for(&fake)).unwrap();
        assert_eq!(fake.rules("filter", DOCKER_USER), ["-j FOSSA-FORWARD"]);
    }

    #[test]
    fn check_reports_a_missing_rule_and_apply_restores_it() {
        let fake = Fake::new();
        let p = plan_for(&fake);
        apply(&fake, &p).unwrap();
        assert!(check(&fake, &p).unwrap().iter().all(|x| x.present));
        fake.drop_rule("nat", NAT_CHAIN, 0);
        let missing: Vec<_> = check(&fake, &p)
            .unwrap()
            .into_iter()
            .filter(|x| !x.present)
            .collect();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].what.contains("MASQUERADE"));
        let again = apply(&fake, &p).unwrap();
        assert_eq!(again.added.len(), 1);
    }

    #[test]
    fn remove_restores_the_original_rules() {
        let fake = Fake::new();
        fake.add_chain("filter", DOCKER_USER);
        let before = fake.snapshot();
        let p = plan_for(&fake);
        apply(&fake, &p).unwrap();
        remove(&fake, &p).unwrap();
        assert_eq!(fake.snapshot(), before);
        assert!(remove(&fake, &p).unwrap().is_empty());
    }
}
