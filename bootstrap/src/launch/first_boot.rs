//! Following the agent to the end of its first boot (or of a re-run's
//! changes): what `/api/v1/overview` says of each duty and of the workers,
//! one line per change, until every duty is well and every wanted worker
//! answers. The reading of overviews is plain data, unit-tested here; the
//! loop that fetches them is in `launch/wait.rs`.

use std::collections::BTreeMap;

use serde_json::Value;

/// What has been shown so far.
#[derive(Debug, Default)]
pub struct Follow {
    duties: BTreeMap<String, (bool, String)>,
    workers: Option<(u64, u64)>,
    /// The SHA-256 of the agent binary `launch` uploaded: done only once it runs.
    wanted_sha: Option<String>,
    running_sha: Option<String>,
}

/// One overview, read.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// New lines to print: a duty whose state changed, or the worker count.
    pub lines: Vec<String>,
    /// Every duty is well and every wanted worker answers.
    pub done: bool,
    /// The spinner's line: "x/N workers answering".
    pub workers: String,
}

impl Follow {
    /// Follows until, besides the duties and workers, the agent binary with
    /// SHA-256 `wanted` is the one running.
    pub fn new(wanted: Option<String>) -> Self {
        Follow {
            wanted_sha: wanted,
            ..Follow::default()
        }
    }

    /// Reads one overview.
    pub fn observe(&mut self, overview: &Value) -> Seen {
        let mut lines = Vec::new();
        let running = overview["agent"]["sha256"].as_str().map(str::to_owned);
        let upgraded = match (&self.wanted_sha, &running) {
            (Some(w), Some(r)) => w.eq_ignore_ascii_case(r),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if running != self.running_sha {
            if let (Some(r), Some(w)) = (&running, &self.wanted_sha) {
                lines.push(if upgraded {
                    format!("Agent: the uploaded binary runs ({})", short(r))
                } else {
                    format!(
                        "Agent: {} runs; waiting for the uploaded {} (the agent checks every 15 s)",
                        short(r),
                        short(w)
                    )
                });
            }
            self.running_sha = running;
        }
        let duties = overview["duties"].as_array().cloned().unwrap_or_default();
        for d in &duties {
            let title = d["title"].as_str().unwrap_or("?").to_owned();
            let now = (
                d["ok"] == true,
                d["detail"].as_str().unwrap_or("").to_owned(),
            );
            if self.duties.get(&title) != Some(&now) {
                lines.push(format!(
                    "{title}: {}{}",
                    if now.0 { "" } else { "not yet: " },
                    now.1
                ));
                self.duties.insert(title, now);
            }
        }
        let desired = overview["desired_workers"].as_u64().unwrap_or(0);
        let answering = overview["healthy_workers"].as_u64().unwrap_or(0);
        let workers = format!("{answering}/{desired} workers answering");
        if self.workers != Some((answering, desired)) {
            lines.push(workers.clone());
            self.workers = Some((answering, desired));
        }
        let done = upgraded
            && !duties.is_empty()
            && duties.iter().all(|d| d["ok"] == true)
            && answering >= desired;
        Seen {
            lines,
            done,
            workers,
        }
    }

    /// The duties that are not well, with their last line: what a timeout reports.
    pub fn failing(&self) -> Vec<String> {
        self.duties
            .iter()
            .filter(|(_, (ok, _))| !ok)
            .map(|(title, (_, detail))| format!("{title}: {detail}"))
            .collect()
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn overview(image_ok: bool, image: &str, answering: u64) -> Value {
        json!({
            "duties": [
                {"name": "nat", "title": "NAT", "ok": true, "detail": "NAT verified via ens5"},
                {"name": "image", "title": "Worker image", "ok": image_ok, "detail": image},
            ],
            "desired_workers": 2, "healthy_workers": answering,
        })
    }

    #[test]
    fn each_change_is_one_line_and_done_needs_every_duty_and_worker() {
        let mut f = Follow::default();
        let first = f.observe(&overview(false, "building", 0));
        assert_eq!(
            first.lines,
            vec![
                "NAT: NAT verified via ens5",
                "Worker image: not yet: building",
                "0/2 workers answering"
            ]
        );
        assert!(!first.done);
        let same = f.observe(&overview(false, "building", 0));
        assert!(same.lines.is_empty(), "{same:?}");
        assert_eq!(f.failing(), vec!["Worker image: building"]);
        let pushed = f.observe(&overview(true, "pushed", 1));
        assert_eq!(
            pushed.lines,
            vec!["Worker image: pushed", "1/2 workers answering"]
        );
        assert!(!pushed.done);
        let all = f.observe(&overview(true, "pushed", 2));
        assert!(all.done);
        assert_eq!(all.workers, "2/2 workers answering");
        assert!(f.failing().is_empty());
    }

    #[test]
    fn a_new_binary_must_be_running() {
        let mut f = Follow::new(Some("b".repeat(64)));
        let mut o = overview(true, "pushed", 2);
        o["agent"] = json!({"version": "0.1.0", "sha256": "a".repeat(64)});
        let old = f.observe(&o);
        assert!(!old.done);
        assert!(
            old.lines
                .iter()
                .any(|l| l.contains("waiting for the uploaded bbbbbbbbbbbb")),
            "{old:?}"
        );
        o["agent"]["sha256"] = json!("b".repeat(64));
        let new = f.observe(&o);
        assert!(new.done);
        assert!(new
            .lines
            .contains(&"Agent: the uploaded binary runs (bbbbbbbbbbbb)".to_owned()));
    }

    #[test]
    fn an_overview_without_duties_is_not_done() {
        let mut f = Follow::default();
        assert!(!f.observe(&json!({})).done);
    }
}
