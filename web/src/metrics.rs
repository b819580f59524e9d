//! `/metrics` in the Prometheus text format (version 0.0.4): the families
//! and how they are written. Every figure comes from the same snapshot the
//! pages show, through [`crate::counts`], so a scrape costs a pass over the
//! workers and never reads the history or calls AWS.
//!
//! Names follow Prometheus's rules (<https://prometheus.io/docs/practices/naming/>):
//! the `fossa_` prefix, base units (seconds, bytes), `_total` on counters and
//! only there, a HELP and a TYPE line on every family. A unit test holds them.

use std::fmt::Write as _;

use crate::counts::{Counts, WorkerState};
use crate::model::{FleetSnapshot, Mode};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (it restarts from 0 with the agent, or where its help says).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family: its name, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// `fossa_…`.
    pub name: &'static str,
    /// One line on what it measures.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// Label names and values.
pub type Labels = Vec<(&'static str, String)>;

/// One sample: a suffix to the family's name (a histogram's `_bucket`,
/// `_sum`, `_count`; empty otherwise), its labels and its value.
pub type Sample = (&'static str, Labels, f64);

/// The buckets of request durations, in seconds.
pub const DURATION_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Observations counted in buckets: [`DURATION_BUCKETS`] unless made
/// [`Histogram::with_bounds`].
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Each bucket's upper bound, rising.
    bounds: &'static [f64],
    /// Observations at most each bucket's bound, and not the one before.
    in_bucket: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(&DURATION_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (rising).
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            in_bucket: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Counts one observation of `secs`.
    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.in_bucket[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Adds `other`'s observations (over the same bounds; others are
    /// counted only in the total).
    pub fn merge(&mut self, other: &Histogram) {
        if self.bounds == other.bounds {
            for (mine, theirs) in self.in_bucket.iter_mut().zip(&other.in_bucket) {
                *mine += theirs;
            }
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Each bucket's own count, the count and the sum.
    pub fn parts(&self) -> (&[u64], u64, f64) {
        (&self.in_bucket, self.count, self.sum)
    }

    /// The histogram over `bounds` that [`Histogram::parts`] gave
    /// (buckets of another length count only in the total).
    pub fn from_parts(bounds: &'static [f64], in_bucket: Vec<u64>, count: u64, sum: f64) -> Self {
        let mut h = Histogram::with_bounds(bounds);
        if in_bucket.len() == bounds.len() {
            h.in_bucket = in_bucket;
        }
        h.count = count;
        h.sum = sum;
        h
    }
}

impl Family {
    /// A gauge with no samples yet.
    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
            samples: Vec::new(),
        }
    }

    /// A histogram with no samples yet.
    pub fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Histogram,
            samples: Vec::new(),
        }
    }

    /// Adds a histogram's samples with these labels: each bucket (counted
    /// up to its bound, as Prometheus wants), `+Inf`, the sum and the count.
    pub fn observed(mut self, labels: &[(&'static str, &str)], h: &Histogram) -> Family {
        let base: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut upto = 0;
        for (bound, n) in h.bounds.iter().zip(&h.in_bucket) {
            upto += *n;
            let mut l = base.clone();
            l.push(("le", bound.to_string()));
            self.samples.push(("_bucket", l, upto as f64));
        }
        let mut l = base.clone();
        l.push(("le", "+Inf".into()));
        self.samples.push(("_bucket", l, h.count as f64));
        self.samples.push(("_sum", base.clone(), h.sum));
        self.samples.push(("_count", base, h.count as f64));
        self
    }

    /// A counter with no samples yet.
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels.
    pub fn with(mut self, labels: &[(&'static str, &str)], value: f64) -> Family {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.samples.push(("", labels, value));
        self
    }

    /// Adds a sample without labels.
    pub fn value(self, value: f64) -> Family {
        self.with(&[], value)
    }
}

/// Every family of `snap`, as seen at `now` (seconds since the epoch).
pub fn families(snap: &FleetSnapshot, now: i64) -> Vec<Family> {
    let counts = Counts::of(snap);
    let mut out = Vec::new();
    let agent = snap.agent.clone().unwrap_or_default();
    out.push(
        Family::gauge(
            "fossa_agent_info",
            "The agent serving these figures: 1, with its version and mode.",
        )
        .with(
            &[
                ("version", &agent.version),
                ("mode", snap.mode.as_str()),
                ("stack", &snap.stack),
            ],
            1.0,
        ),
    );
    out.push(workers(snap, &counts));
    out.push(
        Family::gauge("fossa_workers_desired", "Workers wanted.")
            .value(f64::from(snap.desired_workers)),
    );
    out.push(
        Family::gauge(
            "fossa_workers_protected",
            "Workers kept from scale-in while they run work (ECS task scale-in protection).",
        )
        .value(counts.protected as f64),
    );
    out.push(
        Family::gauge(
            "fossa_task_slots",
            "Task slots of the workers' Fossa nodes.",
        )
        .value(counts.slots as f64),
    );
    out.push(
        Family::gauge("fossa_task_slots_busy", "Of the task slots, those in use.")
            .value(counts.used as f64),
    );
    out.push(
        Family::gauge("fossa_tasks_running", "Tasks the workers' nodes run now.")
            .value(counts.running_tasks as f64),
    );
    out.push(
        Family::gauge(
            "fossa_gateway_queue_depth",
            "Submissions waiting in the gateway for a free slot.",
        )
        .value(snap.queue.len() as f64),
    );
    let oldest = snap
        .queue
        .iter()
        .map(|q| q.enqueued_at)
        .min()
        .map_or(0, |t| (now - t).max(0));
    out.push(
        Family::gauge(
            "fossa_gateway_queue_oldest_age_seconds",
            "How long the oldest submission in the gateway's queue has waited (0 when it is empty).",
        )
        .value(oldest as f64),
    );
    let mut up = Family::gauge(
        "fossa_duty_up",
        "Whether each of the agent's duties is well (1) or failing (0).",
    );
    let mut last_ok = Family::gauge(
        "fossa_duty_last_success_timestamp_seconds",
        "When each duty's last round succeeded, seconds since the epoch.",
    );
    let mut failing = Family::gauge(
        "fossa_duty_consecutive_failures",
        "Rounds of each duty that failed since its last success.",
    );
    for c in &snap.components {
        up = up.with(&[("duty", &c.name)], if c.ok { 1.0 } else { 0.0 });
        failing = failing.with(&[("duty", &c.name)], f64::from(c.failures));
        if let Some(at) = c.last_ok_at {
            last_ok = last_ok.with(&[("duty", &c.name)], at as f64);
        }
    }
    out.extend([up, last_ok, failing]);
    if let Some(cost) = &snap.cost {
        out.push(
            Family::gauge(
                "fossa_cost_dollars_per_hour",
                "This stack's cost per hour at list prices, in US dollars.",
            )
            .value(cost.stack_hourly),
        );
        out.push(
            Family::gauge(
                "fossa_cost_month_to_date_dollars",
                "This stack's cost this month so far, in US dollars.",
            )
            .value(cost.month_to_date),
        );
    }
    if let Some(n) = snap.broker_waiting {
        out.push(
            Family::gauge(
                "fossa_broker_queue_depth",
                "Subtasks waiting in the broker's fossa_task_queue (absent while the broker does not answer).",
            )
            .value(f64::from(n)),
        );
    }
    if let Some(nat) = &snap.nat {
        out.extend(nat.families());
    }
    out.extend(snap.tally.families());
    out.push(
        Family::gauge(
            "fossa_snapshot_timestamp_seconds",
            "When the figures were taken, seconds since the epoch.",
        )
        .value(snap.taken_at as f64),
    );
    out.push(
        Family::gauge(
            "fossa_fleet_refresh_duration_seconds",
            "How long the last poll of every worker took.",
        )
        .value(snap.refresh_ms as f64 / 1000.0),
    );
    out
}

/// The web UI's own figures: logins refused and password checks.
pub fn auth_families(a: &crate::auth::AuthStats) -> Vec<Family> {
    vec![
        Family::counter(
            "fossa_logins_refused_total",
            "Logins refused since the agent started (form and basic auth), by reason.",
        )
        .with(&[("reason", "wrong")], a.wrong as f64)
        .with(&[("reason", "blocked")], a.blocked as f64)
        .with(&[("reason", "busy")], a.busy as f64),
        Family::gauge(
            "fossa_password_checks",
            "Password checks (argon2) running now, and waiting for a turn.",
        )
        .with(&[("state", "running")], a.checks_running as f64)
        .with(&[("state", "waiting")], a.checks_waiting as f64),
    ]
}

/// Workers by state and capacity provider: every state for every provider
/// seen (and the mode's own), so a series is 0 rather than absent.
fn workers(snap: &FleetSnapshot, counts: &Counts) -> Family {
    let mut providers: std::collections::BTreeSet<&str> = snap
        .workers
        .iter()
        .map(|w| w.capacity_provider.as_str())
        .collect();
    providers.insert(match snap.mode {
        Mode::Fargate => "FARGATE",
        Mode::Local => "local",
    });
    let mut f = Family::gauge("fossa_workers", "Workers by state and capacity provider.");
    for p in providers {
        for s in WorkerState::ALL {
            let n = counts
                .by_state
                .get(&(s, p.to_owned()))
                .copied()
                .unwrap_or(0);
            f = f.with(&[("state", s.as_str()), ("capacity_provider", p)], n as f64);
        }
    }
    f
}

/// The text format of `families`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape(f.help, false));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for (suffix, labels, value) in &f.samples {
            out.push_str(f.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    let _ = write!(
                        out,
                        "{}{k}=\"{}\"",
                        if i > 0 { "," } else { "" },
                        escape(v, true)
                    );
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
    out
}

/// Backslash and newline escaped (and `"` in a label value).
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Component, Cost, Queued, Worker};

    fn snapshot() -> FleetSnapshot {
        FleetSnapshot {
            stack: "demo".into(),
            taken_at: 1_000,
            workers: vec![Worker {
                id: "a".into(),
                status: "RUNNING".into(),
                capacity_provider: "FARGATE_SPOT".into(),
                ..Default::default()
            }],
            components: vec![
                Component {
                    name: "nat".into(),
                    ok: true,
                    last_ok_at: Some(990),
                    ..Default::default()
                },
                Component {
                    name: "image".into(),
                    ok: false,
                    failures: 2,
                    ..Default::default()
                },
            ],
            queue: vec![Queued {
                id: 1,
                position: 1,
                model_class: "M".into(),
                method: None,
                enqueued_at: 940,
                sending_to: None,
            }],
            cost: Some(Cost {
                stack_hourly: 0.5,
                ..Default::default()
            }),
            nat: Some(crate::nat::NatFigures {
                bytes: 7,
                conntrack: Some(3),
                ..Default::default()
            }),
            broker_waiting: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn a_histogram_counts_up_to_each_bound() {
        let mut h = Histogram::default();
        for secs in [0.0005, 0.00325, 0.00325, 2.0, 9.0] {
            h.observe(secs);
        }
        let text =
            render(&[Family::histogram("fossa_x_seconds", "x").observed(&[("route", "/")], &h)]);
        assert!(
            text.contains("# TYPE fossa_x_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_bucket{route=\"/\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_bucket{route=\"/\",le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_bucket{route=\"/\",le=\"5\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_bucket{route=\"/\",le=\"+Inf\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_count{route=\"/\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_x_seconds_sum{route=\"/\"} 11.007\n"),
            "{text}"
        );
    }

    #[test]
    fn every_family_follows_the_naming_rules() {
        let stats = crate::auth::AuthStats {
            wrong: 1,
            blocked: 0,
            busy: 0,
            checks_running: 0,
            checks_waiting: 0,
        };
        let mut fams = families(&snapshot(), 1_000);
        fams.extend(auth_families(&stats));
        let mut seen = std::collections::HashSet::new();
        for f in &fams {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("fossa_"), "{}", f.name);
            assert!(
                f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "_total on counters only: {}",
                f.name
            );
            assert!(!f.help.is_empty(), "{}", f.name);
            for unit in ["_ms", "_milliseconds", "_minutes", "_hours", "_kib", "_mib"] {
                assert!(!f.name.contains(unit), "base units: {}", f.name);
            }
        }
    }

    #[test]
    fn the_text_has_help_type_and_escaped_labels() {
        let text = render(&families(&snapshot(), 1_000));
        assert!(text.contains("# TYPE fossa_workers gauge\n"), "{text}");
        assert!(
            text.contains(
                "fossa_workers{state=\"starting\",capacity_provider=\"FARGATE_SPOT\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("fossa_workers{state=\"answering\",capacity_provider=\"FARGATE\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("fossa_duty_up{duty=\"image\"} 0\n"), "{text}");
        assert!(
            text.contains("fossa_duty_consecutive_failures{duty=\"image\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_duty_last_success_timestamp_seconds{duty=\"nat\"} 990\n"),
            "{text}"
        );
        assert!(
            !text.contains("fossa_duty_last_success_timestamp_seconds{duty=\"image\"}"),
            "{text}"
        );
        assert!(
            text.contains("fossa_gateway_queue_oldest_age_seconds 60\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_nat_forwarded_bytes_total 7\n"),
            "{text}"
        );
        assert!(text.contains("fossa_nat_conntrack_entries 3\n"), "{text}");
        assert!(text.contains("fossa_broker_queue_depth 4\n"), "{text}");
        assert!(
            text.contains("fossa_tasks_lost_total{kind=\"subtask\"} 0\n"),
            "{text}"
        );
        let odd =
            render(&[Family::gauge("fossa_x", "a \\ b\nc").with(&[("l", "q\"\\\n")], f64::NAN)]);
        assert_eq!(
            odd,
            "# HELP fossa_x a \\\\ b\\nc\n# TYPE fossa_x gauge\nfossa_x{l=\"q\\\"\\\\\\n\"} NaN\n"
        );
    }
}
