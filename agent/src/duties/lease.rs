//! Two agents of one stack never act at once (an upgrade, a replacement, a
//! second instance started by mistake). A lease in the stack's bucket
//! ([`LEASE_OBJECT_KEY`]) says which agent acts and until when; it is only
//! ever written with S3's conditional writes: `If-None-Match: *` to create
//! it, `If-Match: <the ETag read>` to renew or take it over, so of two
//! agents writing at once exactly one succeeds (S3 answers the other
//! `412 Precondition Failed`).
//!
//! The holder renews it every [`LEASE_RENEW_SECS`]; another agent takes it
//! only once it has run out ([`LEASE_SECS`] after the last renewal), or at
//! once when the holder gave it up on a clean stop ([`release`]). A holder
//! that cannot renew stops acting [`LEASE_MARGIN_SECS`] before its lease
//! runs out. What "acting" covers is each duty registered with
//! [`super::Registration::acts`] (the image, the cluster, the queue,
//! autoscaling), plus the fleet's rescues, resubmissions and task
//! protection; an agent that waits still serves its UI, polls the workers
//! and keeps its own host's NAT.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::limits::{LEASE_MARGIN_SECS, LEASE_RENEW_SECS, LEASE_SECS};
use fossa_contract::names::LEASE_OBJECT_KEY;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Duty, DutyError, Next, Outcome};
use crate::settings::Settings;

/// The lease as written in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who holds it (host, pid and start of that agent).
    pub holder: String,
    /// Until when, seconds since the epoch (0: given up).
    pub expires_at: i64,
}

/// An agent process, as the lease names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its host name.
    pub host: String,
    /// Its pid there.
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/PID/stat`), so
    /// a reused pid is another process.
    pub started: u64,
}

impl Holder {
    /// This agent.
    pub fn me() -> Holder {
        let pid = std::process::id();
        Holder {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown-host".into()),
            pid,
            started: start_ticks(pid).unwrap_or(0),
        }
    }

    /// The name written in the lease.
    pub fn name(&self) -> String {
        format!("{} pid {} started {}", self.host, self.pid, self.started)
    }

    /// The holder a lease names, when it is one of ours.
    pub fn parse(name: &str) -> Option<Holder> {
        let (host, rest) = name.split_once(" pid ")?;
        let (pid, started) = rest.split_once(" started ")?;
        Some(Holder {
            host: host.to_owned(),
            pid: pid.parse().ok()?,
            started: started.parse().ok()?,
        })
    }

    /// Whether this holder is an agent on this host that is gone (killed,
    /// crashed): its lease need not be waited out. `alive` tells whether a
    /// pid runs and since when.
    pub fn gone_from(&self, host: &str, alive: impl Fn(u32) -> Option<u64>) -> bool {
        self.host == host && alive(self.pid) != Some(self.started)
    }
}

/// When process `pid` started, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: count after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What this agent knows of the lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lease {
    /// Not read yet, or the bucket did not answer.
    #[default]
    Unknown,
    /// This agent holds it until then.
    Held {
        /// Seconds since the epoch.
        until: i64,
    },
    /// Another agent holds it.
    Elsewhere {
        /// Who.
        holder: String,
        /// Until when, unless renewed.
        until: i64,
    },
}

impl Lease {
    /// Whether this agent may act now: it holds the lease, with the margin
    /// to spare.
    pub fn held_at(&self, now: i64) -> bool {
        matches!(self, Lease::Held { until } if now + LEASE_MARGIN_SECS < *until)
    }

    /// Whether this agent may act now.
    pub fn held(&self) -> bool {
        self.held_at(fossa_contract::unix_now())
    }

    /// One line for a duty that waits on it (the same while the same
    /// agent holds it: an event is made only when it changes).
    pub fn waiting_line(&self) -> String {
        match self {
            Lease::Elsewhere { holder, .. } => {
                format!("standing by: another agent ({holder}) acts for this stack")
            }
            Lease::Held { .. } => {
                "standing by: this agent could not renew its lease in time".into()
            }
            Lease::Unknown => {
                "standing by: waiting to learn which agent acts for this stack".into()
            }
        }
    }

    /// Until when the lease runs, unless renewed, for the overview.
    pub fn until_line(&self) -> Option<String> {
        match self {
            Lease::Elsewhere { until, .. } | Lease::Held { until } => Some(format!(
                "its lease runs to {} unless renewed",
                fossa_web::fmt::iso_time(*until)
            )),
            Lease::Unknown => None,
        }
    }
}

/// What to write, given the lease read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// None exists: create it, only if still none.
    Create,
    /// Ours, or run out: replace it, only if unchanged since read.
    Replace {
        /// The ETag read.
        etag: String,
    },
    /// Another agent's, still running.
    Wait {
        /// Who.
        holder: String,
        /// Until when.
        until: i64,
    },
}

/// Decides from `current` (the record and its ETag), for agent `me`, at
/// `now`; `gone` says whether a holder is a dead agent of this host.
pub fn decide(
    current: Option<(&Record, &str)>,
    me: &str,
    now: i64,
    gone: impl Fn(&str) -> bool,
) -> Step {
    match current {
        None => Step::Create,
        Some((r, etag)) if r.holder == me || r.expires_at <= now || gone(&r.holder) => {
            Step::Replace {
                etag: etag.to_owned(),
            }
        }
        Some((r, _)) => Step::Wait {
            holder: r.holder.clone(),
            until: r.expires_at,
        },
    }
}

/// This agent's name in the lease: host, pid and start time, so a
/// restarted agent on the same host is another holder.
pub fn holder_name() -> String {
    Holder::me().name()
}

/// Keeps the lease (holds it, or waits for it) and publishes what it knows.
pub struct LeaseDuty {
    me: String,
    tx: Arc<watch::Sender<Lease>>,
}

impl LeaseDuty {
    /// The duty for agent `me`, publishing on `tx`.
    pub fn new(me: String, tx: Arc<watch::Sender<Lease>>) -> Self {
        LeaseDuty { me, tx }
    }
}

/// Reads the lease: the record and its ETag, or `None` when there is none.
async fn read(s: &Settings) -> Result<Option<(Record, String)>, DutyError> {
    let bucket = &s.stack.bucket;
    let got = s
        .clients
        .s3
        .get_object()
        .bucket(bucket)
        .expected_bucket_owner(&s.stack.account_id)
        .key(LEASE_OBJECT_KEY)
        .send()
        .await;
    let obj = match got {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(aws(e, "s3:GetObject", bucket)),
    };
    let etag = obj.e_tag().unwrap_or_default().to_owned();
    let bytes = obj
        .body
        .collect()
        .await
        .map(|b| b.into_bytes())
        .unwrap_or_default();
    // A damaged record is a lease anyone may replace (its ETag still guards the write).
    let record = serde_json::from_slice(&bytes).unwrap_or(Record {
        holder: "a damaged lease".into(),
        expires_at: 0,
    });
    Ok(Some((record, etag)))
}

fn aws<E>(e: aws_sdk_s3::error::SdkError<E>, call: &'static str, bucket: &str) -> DutyError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let r: Result<(), _> = Err(e);
    DutyError::Aws(
        r.aws(call, format!("s3://{bucket}/{LEASE_OBJECT_KEY}"))
            .unwrap_err(),
    )
}

/// Writes `record` if `step` still holds; `Ok(false)` when another agent
/// wrote first (412).
async fn write(s: &Settings, step: &Step, record: &Record) -> Result<bool, DutyError> {
    let bucket = &s.stack.bucket;
    let body = serde_json::to_vec(record).expect("json");
    let mut put = s
        .clients
        .s3
        .put_object()
        .bucket(bucket)
        .expected_bucket_owner(&s.stack.account_id)
        .key(LEASE_OBJECT_KEY)
        .content_type("application/json")
        .body(ByteStream::from(body));
    put = match step {
        Step::Create => put.if_none_match("*"),
        Step::Replace { etag } => put.if_match(etag),
        Step::Wait { .. } => return Ok(false),
    };
    match put.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
        // S3 answers 409 to two conditional writes of one key at once.
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 409) => Ok(false),
        Err(e) => Err(aws(e, "s3:PutObject", bucket)),
    }
}

#[async_trait]
impl Duty<Settings> for LeaseDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        let now = fossa_contract::unix_now();
        let current = match read(s).await {
            Ok(c) => c,
            Err(e) => {
                // A lease still held stays held until its margin; then the
                // driver's gate stops this agent's acting duties by itself.
                if !matches!(*self.tx.borrow(), Lease::Held { .. }) {
                    self.tx.send_replace(Lease::Unknown);
                }
                return Err(e);
            }
        };
        let host = Holder::me().host;
        // A holder that was an agent of this host and is gone (killed,
        // crashed, restarted by systemd) need not be waited out.
        let gone =
            |name: &str| Holder::parse(name).is_some_and(|h| h.gone_from(&host, start_ticks));
        let step = decide(
            current.as_ref().map(|(r, e)| (r, e.as_str())),
            &self.me,
            now,
            gone,
        );
        if let Step::Wait { holder, until } = &step {
            let lease = Lease::Elsewhere {
                holder: holder.clone(),
                until: *until,
            };
            let line = lease.waiting_line();
            let until = lease.until_line().unwrap_or_default();
            self.tx.send_replace(lease);
            return Ok(Outcome::done(line).with_detail(true, until));
        }
        let record = Record {
            holder: self.me.clone(),
            expires_at: now + LEASE_SECS,
        };
        if write(s, &step, &record).await? {
            let was_held = self.tx.borrow().held_at(now);
            self.tx.send_replace(Lease::Held {
                until: record.expires_at,
            });
            let how = if was_held { "held" } else { "taken" };
            Ok(Outcome::done(format!(
                "this agent acts for the stack (lease {how}, renewed every {LEASE_RENEW_SECS} s)"
            )))
        } else {
            // Another agent wrote first: read again at once.
            Ok(Outcome {
                next: Next::After(std::time::Duration::from_secs(1)),
                ..Outcome::done("another agent wrote the lease first; reading it again")
            })
        }
    }
}

/// Gives the lease up on a clean stop, so a waiting agent takes over at
/// once; does nothing unless this agent holds it.
pub async fn release(s: &Settings, me: &str) -> Result<(), DutyError> {
    if let Some((r, etag)) = read(s).await? {
        if r.holder == me {
            let gone = Record {
                holder: me.to_owned(),
                expires_at: 0,
            };
            write(s, &Step::Replace { etag }, &gone).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, expires_at: i64) -> Record {
        Record {
            holder: holder.into(),
            expires_at,
        }
    }

    #[test]
    fn only_a_missing_ours_run_out_or_dead_holders_lease_is_written() {
        let alive = |_: &str| false;
        assert_eq!(decide(None, "a", 100, alive), Step::Create);
        let r = rec("a", 150);
        assert_eq!(
            decide(Some((&r, "e1")), "a", 100, alive),
            Step::Replace { etag: "e1".into() }
        );
        let r = rec("b", 150);
        assert_eq!(
            decide(Some((&r, "e2")), "a", 100, alive),
            Step::Wait {
                holder: "b".into(),
                until: 150
            }
        );
        // Run out, or given up on a clean stop (0): taken.
        for until in [100, 0] {
            let r = rec("b", until);
            assert_eq!(
                decide(Some((&r, "e3")), "a", 100, alive),
                Step::Replace { etag: "e3".into() }
            );
        }
        // A dead agent of this host: taken at once.
        let r = rec("b", 150);
        assert_eq!(
            decide(Some((&r, "e4")), "a", 100, |h| h == "b"),
            Step::Replace { etag: "e4".into() }
        );
    }

    #[test]
    fn a_holder_is_gone_only_from_this_host_and_by_its_start_time() {
        let me = Holder::me();
        assert_eq!(Holder::parse(&me.name()), Some(me.clone()));
        assert!(me.started > 0, "{me:?}");
        // This very process runs: not gone.
        assert!(!me.gone_from(&me.host, start_ticks));
        // The same pid started at another time is another process.
        let reused = Holder {
            started: me.started + 1,
            ..me.clone()
        };
        assert!(reused.gone_from(&me.host, start_ticks));
        // Another host's agent is never judged from here.
        assert!(!reused.gone_from("elsewhere", start_ticks));
        assert_eq!(Holder::parse("a damaged lease"), None);
    }

    #[test]
    fn a_holder_stops_acting_before_its_lease_runs_out() {
        let l = Lease::Held { until: 1000 };
        assert!(l.held_at(1000 - LEASE_MARGIN_SECS - 1));
        assert!(!l.held_at(1000 - LEASE_MARGIN_SECS));
        assert!(!Lease::Unknown.held_at(0));
        let other = Lease::Elsewhere {
            holder: "b".into(),
            until: 2000,
        };
        assert!(!other.held_at(0));
        assert!(
            other.waiting_line().contains("(b)"),
            "{}",
            other.waiting_line()
        );
        // Renewals do not change the line (no event every 10 s).
        let renewed = Lease::Elsewhere {
            holder: "b".into(),
            until: 2010,
        };
        assert_eq!(renewed.waiting_line(), other.waiting_line());
    }
}
