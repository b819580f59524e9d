//! The NAT rules as plain data ([`NatPlan`]) and the iptables steps that
//! apply, check and remove them; the forwarding sysctls; the egress self-test.

use std::path::PathBuf;
use std::time::Duration;

use fossa_contract::config::AgentToml;
use fossa_contract::names::BROKER_PORT;
use fossa_contract::networks::{BROKER, BUILD, DOCKER_DEFAULT_BRIDGE};
use ipnet::Ipv4Net;

use crate::host::exec::{CmdOutput, ExecError, Executor};

/// Our chain in the filter table, jumped to from FORWARD and DOCKER-USER.
pub const FORWARD_CHAIN: &str = "FOSSA-FORWARD";
/// IPv4 link-local addresses (RFC 3927), where the instance metadata
/// service answers.
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// Our chain in the nat table, jumped to from POSTROUTING.
pub const NAT_CHAIN: &str = "FOSSA-POSTROUTING";
/// Our chain in the filter table, jumped to from INPUT.
pub const INPUT_CHAIN: &str = "FOSSA-INPUT";
/// Our chain in the filter table, jumped to from OUTPUT: what the gateway's
/// own unprivileged processes may not reach.
pub const OUTPUT_CHAIN: &str = "FOSSA-OUTPUT";
/// Docker's chain for user rules, evaluated before its own FORWARD rules.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// Why NAT could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// A host call failed to run.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// iptables refused a change.
    #[error("iptables {args} failed: {stderr}")]
    Iptables {
        /// The arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// No default route to find the egress interface from.
    #[error("no default route in /proc/net/route: pass --egress-interface IF")]
    NoDefaultRoute,
    /// No private CIDR to serve.
    #[error("no private CIDR to NAT: pass --private-cidr CIDR (the stack's private subnets, e.g. 192.168.2.0/24)")]
    NoCidrs,
    /// After applying, something is still missing.
    #[error("NAT is incomplete after applying; missing: {}", missing.join("; "))]
    Verify {
        /// What is missing.
        missing: Vec<String>,
    },
}

/// One iptables rule: table, chain and the rule's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `filter` or `nat`.
    pub table: &'static str,
    /// The chain.
    pub chain: String,
    /// The rule, as iptables arguments after the chain.
    pub spec: Vec<String>,
    /// Put first in its chain when missing (a DROP that must come before
    /// the chain's ACCEPTs), not appended.
    pub first: bool,
}

impl Rule {
    fn new(table: &'static str, chain: &str, spec: &str) -> Self {
        Rule {
            table,
            chain: chain.to_owned(),
            spec: spec.split_whitespace().map(str::to_owned).collect(),
            first: false,
        }
    }

    fn first(table: &'static str, chain: &str, spec: &str) -> Self {
        Rule {
            first: true,
            ..Rule::new(table, chain, spec)
        }
    }

    fn args<'a>(&'a self, op: &'a str) -> Vec<&'a str> {
        let mut a = vec!["-t", self.table, op, self.chain.as_str()];
        a.extend(self.spec.iter().map(String::as_str));
        a
    }

    /// `-t nat POSTROUTING -s … -j …`, for messages.
    pub fn describe(&self) -> String {
        format!("-t {} {} {}", self.table, self.chain, self.spec.join(" "))
    }
}

/// The desired NAT state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    /// Interface towards the internet.
    pub egress: String,
    /// Private subnets to serve.
    pub cidrs: Vec<Ipv4Net>,
    /// The user the web UI's process runs as, kept off the instance
    /// metadata service (and so off the gateway role's credentials).
    pub ui_uid: Option<u32>,
}

impl NatPlan {
    /// Sysctls to set before anything else, as `(path, value)`.
    pub fn sysctls(&self) -> Vec<(PathBuf, &'static str)> {
        let conf = |iface: &str, key: &str| {
            PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"))
        };
        vec![
            (PathBuf::from("/proc/sys/net/ipv4/ip_forward"), "1"),
            // Loose reverse-path filtering: replies may come back on the same interface.
            (conf("all", "rp_filter"), "2"),
            (conf(&self.egress, "rp_filter"), "2"),
            // Forwarding out of the interface a packet came in on must not trigger redirects.
            (conf("all", "send_redirects"), "0"),
            (conf(&self.egress, "send_redirects"), "0"),
        ]
    }

    /// Our own chains, as `(table, chain)`.
    pub fn chains(&self) -> [(&'static str, &'static str); 4] {
        [
            ("filter", FORWARD_CHAIN),
            ("nat", NAT_CHAIN),
            ("filter", INPUT_CHAIN),
            ("filter", OUTPUT_CHAIN),
        ]
    }

    /// The rules inside our own chains.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        // A hole in the web UI must not reach the role's credentials: its
        // process runs as its own user, which may not ask IMDS anything.
        if let Some(uid) = self.ui_uid {
            out.push(Rule::new(
                "filter",
                OUTPUT_CHAIN,
                &format!("-d {LINK_LOCAL} -m owner --uid-owner {uid} -j REJECT"),
            ));
        }
        out.extend(self.container_rules());
        for c in &self.cidrs {
            // Link-local (the instance metadata service, 169.254.169.254,
            // and the Amazon DNS and time addresses' link-local forms) is
            // never forwarded for a worker: the IMDS hop limit is not the
            // only guard. The gateway's own addresses are local, so the
            // INPUT rules below cover them.
            out.push(Rule::first(
                "filter",
                FORWARD_CHAIN,
                &format!("-s {c} -d {LINK_LOCAL} -j DROP"),
            ));
            out.push(Rule::new(
                "filter",
                FORWARD_CHAIN,
                &format!("-s {c} -o {} -j ACCEPT", self.egress),
            ));
            out.push(Rule::new(
                "filter",
                FORWARD_CHAIN,
                &format!("-d {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            ));
            out.push(Rule::new(
                "nat",
                NAT_CHAIN,
                &format!("-s {c} -o {} -j MASQUERADE", self.egress),
            ));
            // Two DROPs that match disjoint packets, so their order does not
            // matter and a missing one is simply appended again.
            let new = "-m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP";
            out.push(Rule::new(
                "filter",
                INPUT_CHAIN,
                &format!("-s {c} -p tcp ! --dport {BROKER_PORT} {new}"),
            ));
            out.push(Rule::new(
                "filter",
                INPUT_CHAIN,
                &format!("-s {c} ! -p tcp {new}"),
            ));
        }
        out
    }

    /// What fences the gateway's containers (`fossa_contract::networks`):
    /// none may reach link-local (IMDS) or open a connection to the gateway
    /// itself; builds go out to the internet only, masqueraded, never to
    /// the workers or the broker; the broker opens nothing. The rules name
    /// the bridges, so they hold before the bridges exist and whatever Docker
    /// adds. The UI's process reaches neither bridge.
    fn container_rules(&self) -> Vec<Rule> {
        let new = "-m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP";
        let mut out = Vec::new();
        let bridges = [BUILD.bridge, BROKER.bridge, DOCKER_DEFAULT_BRIDGE];
        for b in bridges {
            out.push(Rule::first(
                "filter",
                FORWARD_CHAIN,
                &format!("-i {b} -d {LINK_LOCAL} -j DROP"),
            ));
            out.push(Rule::new("filter", INPUT_CHAIN, &format!("-i {b} {new}")));
        }
        let build = BUILD.bridge;
        let egress = &self.egress;
        out.push(Rule::first(
            "filter",
            FORWARD_CHAIN,
            &format!("-i {build} ! -o {egress} -j DROP"),
        ));
        for c in &self.cidrs {
            out.push(Rule::first(
                "filter",
                FORWARD_CHAIN,
                &format!("-i {build} -d {c} -j DROP"),
            ));
        }
        out.push(Rule::first(
            "filter",
            FORWARD_CHAIN,
            &format!("-i {} {new}", BROKER.bridge),
        ));
        out.push(Rule::new(
            "filter",
            FORWARD_CHAIN,
            &format!("-i {build} -o {egress} -j ACCEPT"),
        ));
        out.push(Rule::new(
            "filter",
            FORWARD_CHAIN,
            &format!("-o {build} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ));
        out.push(Rule::new(
            "nat",
            NAT_CHAIN,
            &format!("-s {} -o {egress} -j MASQUERADE", BUILD.subnet()),
        ));
        if let Some(uid) = self.ui_uid {
            for net in [BUILD, BROKER] {
                out.push(Rule::new(
                    "filter",
                    OUTPUT_CHAIN,
                    &format!("-d {} -m owner --uid-owner {uid} -j REJECT", net.subnet()),
                ));
            }
        }
        out
    }

    /// Jumps from the built-in chains (and Docker's, when present) into ours.
    pub fn jumps(&self, docker: bool) -> Vec<Rule> {
        let mut out = vec![
            Rule::new("filter", "FORWARD", &format!("-j {FORWARD_CHAIN}")),
            Rule::new("nat", "POSTROUTING", &format!("-j {NAT_CHAIN}")),
            Rule::new("filter", "INPUT", &format!("-j {INPUT_CHAIN}")),
            Rule::new("filter", "OUTPUT", &format!("-j {OUTPUT_CHAIN}")),
        ];
        if docker {
            out.push(Rule::new(
                "filter",
                DOCKER_USER,
                &format!("-j {FORWARD_CHAIN}"),
            ));
        }
        out
    }
}

/// The interface of the default route the kernel uses, from
/// `/proc/net/route`: the one with the lowest metric. A gateway with its
/// lasting interface attached has two (AL2023 gives the second interface a
/// default route of a higher metric); the egress must be the primary one,
/// which holds the Elastic IP.
pub fn default_interface(route_table: &str) -> Option<String> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000")
                .then(|| (f[6].parse::<u32>().unwrap_or(u32::MAX), f[0].to_owned()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, name)| name)
}

/// Builds the plan, finding the egress interface unless given.
pub fn plan(
    exec: &dyn Executor,
    cidrs: &[Ipv4Net],
    egress: Option<&str>,
) -> Result<NatPlan, NatError> {
    if cidrs.is_empty() {
        return Err(NatError::NoCidrs);
    }
    let egress = match egress {
        Some(e) => e.to_owned(),
        None => default_interface(&exec.read("/proc/net/route".as_ref())?)
            .ok_or(NatError::NoDefaultRoute)?,
    };
    Ok(NatPlan {
        egress,
        cidrs: cidrs.to_vec(),
        ui_uid: None,
    })
}

/// `iptables -w N args`: another program holding the xtables lock
/// (iptables-legacy) is waited for at most
/// [`IPTABLES_WAIT_SECS`](fossa_contract::limits::IPTABLES_WAIT_SECS), and
/// exit status 4 (that lock, or a resource problem) is an error naming the
/// call, never a rule that is not there.
pub(crate) fn iptables(exec: &dyn Executor, args: &[&str]) -> Result<CmdOutput, NatError> {
    let wait = fossa_contract::limits::IPTABLES_WAIT_SECS.to_string();
    let mut all = vec!["-w", wait.as_str()];
    all.extend_from_slice(args);
    let out = exec.run("iptables", &all)?;
    if out.status == 4 {
        return Err(NatError::Iptables {
            args: args.join(" "),
            stderr: one_line(&out.stderr),
        });
    }
    Ok(out)
}

/// What iptables printed, on one line.
pub(crate) fn one_line(stderr: &str) -> String {
    stderr
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

fn ipt(exec: &dyn Executor, args: &[&str]) -> Result<bool, NatError> {
    Ok(iptables(exec, args)?.success())
}

fn ipt_must(exec: &dyn Executor, args: &[&str]) -> Result<(), NatError> {
    let out = iptables(exec, args)?;
    if out.success() {
        Ok(())
    } else {
        Err(NatError::Iptables {
            args: args.join(" "),
            stderr: one_line(&out.stderr),
        })
    }
}

/// Whether `chain` exists in `table`.
pub fn chain_exists(exec: &dyn Executor, table: &str, chain: &str) -> Result<bool, NatError> {
    ipt(exec, &["-t", table, "-S", chain])
}

/// One piece of the NAT state and whether it is there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Piece {
    /// What it is.
    pub what: String,
    /// Whether it is in place.
    pub present: bool,
}

/// Reports every piece of `plan` as present or missing.
pub fn check(exec: &dyn Executor, plan: &NatPlan) -> Result<Vec<Piece>, NatError> {
    let mut out = Vec::new();
    for (path, want) in plan.sysctls().into_iter().take(1) {
        let have = exec.read(&path).unwrap_or_default();
        out.push(Piece {
            what: format!("sysctl {}={want}", path.display()),
            present: have.trim() == want,
        });
    }
    let mut chains_ok = true;
    for (table, chain) in plan.chains() {
        let present = chain_exists(exec, table, chain)?;
        chains_ok &= present;
        out.push(Piece {
            what: format!("chain -t {table} {chain}"),
            present,
        });
    }
    let docker = chain_exists(exec, "filter", DOCKER_USER)?;
    for r in plan.rules().iter().chain(plan.jumps(docker).iter()) {
        let present = chains_ok && ipt(exec, &r.args("-C"))?;
        out.push(Piece {
            what: format!("rule {}", r.describe()),
            present,
        });
    }
    Ok(out)
}

/// What [`apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Pieces it added.
    pub added: Vec<String>,
}

/// Applies `plan`: sysctls first, then chains, rules and jumps that are
/// missing; then reads everything back and fails if anything is absent.
pub fn apply(exec: &dyn Executor, plan: &NatPlan) -> Result<Applied, NatError> {
    let mut added = Vec::new();
    for (path, value) in plan.sysctls() {
        if exec.read(&path).map(|v| v.trim() != value).unwrap_or(true) {
            exec.write(&path, value)?;
            added.push(format!("sysctl {}={value}", path.display()));
        }
    }
    for (table, chain) in plan.chains() {
        if !chain_exists(exec, table, chain)? {
            ipt_must(exec, &["-t", table, "-N", chain])?;
            added.push(format!("chain -t {table} {chain}"));
        }
    }
    for r in plan.rules() {
        if !ipt(exec, &r.args("-C"))? {
            if r.first {
                let mut args = vec!["-t", r.table, "-I", r.chain.as_str(), "1"];
                args.extend(r.spec.iter().map(String::as_str));
                ipt_must(exec, &args)?;
            } else {
                ipt_must(exec, &r.args("-A"))?;
            }
            added.push(format!("rule {}", r.describe()));
        }
    }
    let docker = chain_exists(exec, "filter", DOCKER_USER)?;
    for j in plan.jumps(docker) {
        if !ipt(exec, &j.args("-C"))? {
            let mut args = vec!["-t", j.table, "-I", j.chain.as_str(), "1"];
            args.extend(j.spec.iter().map(String::as_str));
            ipt_must(exec, &args)?;
            added.push(format!("rule {}", j.describe()));
        }
    }
    let missing: Vec<String> = check(exec, plan)?
        .into_iter()
        .filter(|p| !p.present)
        .map(|p| p.what)
        .collect();
    if !missing.is_empty() {
        return Err(NatError::Verify { missing });
    }
    Ok(Applied { added })
}

/// Deletes exactly what [`apply`] adds: the jumps into our chains, then our
/// chains. Sysctls are left as they are (Docker needs forwarding too).
pub fn remove(exec: &dyn Executor, plan: &NatPlan) -> Result<Vec<String>, NatError> {
    let mut removed = Vec::new();
    let docker = chain_exists(exec, "filter", DOCKER_USER)?;
    for j in plan.jumps(docker) {
        while ipt(exec, &j.args("-C"))? {
            ipt_must(exec, &j.args("-D"))?;
            removed.push(format!("rule {}", j.describe()));
        }
    }
    for (table, chain) in plan.chains() {
        if chain_exists(exec, table, chain)? {
            ipt_must(exec, &["-t", table, "-F", chain])?;
            ipt_must(exec, &["-t", table, "-X", chain])?;
            removed.push(format!("chain -t {table} {chain}"));
        }
    }
    Ok(removed)
}

/// Where the egress self-test connects: `egress_check` from agent.toml, else
/// the regional ECR API endpoint, which the workers need to pull their image.
pub fn egress_target(toml: &AgentToml) -> String {
    toml.egress_check
        .clone()
        .unwrap_or_else(|| format!("api.ecr.{}.amazonaws.com:443", toml.region))
}

/// Opens a TCP connection to `target` over the gateway's uplink (the path the
/// workers' NATed traffic takes): whether it worked, and a line saying so.
pub async fn egress_self_test(target: &str) -> (bool, String) {
    let t = std::time::Instant::now();
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(_)) => (
            true,
            format!("{target} reached in {} ms", t.elapsed().as_millis()),
        ),
        Ok(Err(e)) => (false, format!("cannot reach {target}: {e}")),
        Err(_) => (
            false,
            format!("cannot reach {target}: no answer within 3 s"),
        ),
    }
}
