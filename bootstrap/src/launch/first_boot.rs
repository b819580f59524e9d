//! Following the agent to the end of its first boot (or of a re-run's
//! changes): what `/api/v1/overview` says of each duty and of the workers,
//! one line per change, until every duty is well and every wanted worker
//! answers. The reading of overviews is plain data, unit-tested here; the
//! loop that fetches them is in `launch/mod.rs`.

use std::collections::BTreeMap;

use serde_json::Value;

/// What has been shown so far.
#[derive(Debug, Default)]
pub struct Follow {
    duties: BTreeMap<String, (bool, String)>,
    workers: Option<(u64, u64)>,
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
    /// Reads one overview.
    pub fn observe(&mut self, overview: &Value) -> Seen {
        let mut lines = Vec::new();
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
        let done =
            !duties.is_empty() && duties.iter().all(|d| d["ok"] == true) && answering >= desired;
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
    fn an_overview_without_duties_is_not_done() {
        let mut f = Follow::default();
        assert!(!f.observe(&json!({})).done);
    }
}
