//! Worker logs: what both backends share. Local workers' output is kept in a
//! bounded ring per worker (for the UI) and a rotated file in the state
//! directory (for the operator); Fargate workers' lines are read from their
//! CloudWatch stream. Either way, secrets the agent knows (the broker's
//! password) are replaced before a line leaves the agent.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fossa_web::model::{LogLine, LogQuery};

/// Lines each local worker keeps in memory.
pub const RING_LINES: usize = 5000;
/// Bytes a worker's log file grows to before it is rotated (one old file kept).
pub const FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Longest line kept; the rest is cut with a note.
pub const LINE_BYTES: usize = 4096;

/// Replaces every secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// The lines of `all` (oldest first) that `q` asks for: after `since` from
/// the head, or else the last ones; both within `until` and `limit`.
pub fn select<'a>(all: impl DoubleEndedIterator<Item = &'a LogLine>, q: &LogQuery) -> Vec<LogLine> {
    let limit = q.limit.max(1) as usize;
    let in_window =
        |l: &&LogLine| q.since_ms.is_none_or(|s| l.at > s) && q.until_ms.is_none_or(|u| l.at <= u);
    if q.since_ms.is_some() {
        all.filter(in_window).take(limit).cloned().collect()
    } else {
        let mut tail: Vec<LogLine> = all.rev().filter(in_window).take(limit).cloned().collect();
        tail.reverse();
        tail
    }
}

/// One worker's ring and file.
#[derive(Debug)]
struct Stream {
    ring: VecDeque<LogLine>,
    file: Option<std::fs::File>,
    path: PathBuf,
    written: u64,
}

/// The local workers' logs, by worker id.
#[derive(Debug, Clone)]
pub struct LocalLogs {
    dir: PathBuf,
    secrets: Arc<Vec<String>>,
    streams: Arc<Mutex<HashMap<String, Stream>>>,
}

impl LocalLogs {
    /// Logs kept under `dir`, with `secrets` redacted.
    pub fn new(dir: PathBuf, secrets: Vec<String>) -> Self {
        LocalLogs {
            dir,
            secrets: Arc::new(secrets),
            streams: Arc::default(),
        }
    }

    /// Adds one line of worker `id`'s output.
    pub fn push(&self, id: &str, line: &str) {
        let mut text = redact(line.trim_end_matches(['\n', '\r']), &self.secrets);
        if text.len() > LINE_BYTES {
            let mut cut = LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = format!("{}… (line cut at {LINE_BYTES} bytes)", &text[..cut]);
        }
        let at = fossa_contract::unix_now_ms();
        let mut streams = self.streams.lock().expect("lock");
        let s = streams.entry(id.to_owned()).or_insert_with(|| {
            let path = self.dir.join(format!("{id}.log"));
            let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            Stream {
                ring: VecDeque::with_capacity(256),
                file: None,
                path,
                written,
            }
        });
        if s.written >= FILE_BYTES {
            s.file = None;
            let _ = std::fs::rename(&s.path, s.path.with_extension("log.1"));
            s.written = 0;
        }
        if s.file.is_none() {
            s.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&s.path)
                .ok();
        }
        if let Some(f) = &mut s.file {
            let stamp = fossa_web::fmt::iso_time(at / 1000);
            if writeln!(f, "{stamp} {text}").is_ok() {
                s.written += (stamp.len() + text.len() + 2) as u64;
            }
        }
        if s.ring.len() == RING_LINES {
            s.ring.pop_front();
        }
        s.ring.push_back(LogLine { at, text });
    }

    /// Worker `id`'s lines that `q` asks for.
    pub fn query(&self, id: &str, q: &LogQuery) -> Vec<LogLine> {
        let streams = self.streams.lock().expect("lock");
        streams
            .get(id)
            .map(|s| select(s.ring.iter(), q))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: i64) -> LogLine {
        LogLine {
            at,
            text: format!("l{at}"),
        }
    }

    #[test]
    fn a_query_takes_the_tail_or_follows_from_since() {
        let all: Vec<LogLine> = (1..=10).map(line).collect();
        let q = |since, until, limit| LogQuery {
            since_ms: since,
            until_ms: until,
            limit,
        };
        let at = |v: Vec<LogLine>| v.into_iter().map(|l| l.at).collect::<Vec<_>>();
        assert_eq!(at(select(all.iter(), &q(None, None, 3))), [8, 9, 10]);
        assert_eq!(at(select(all.iter(), &q(Some(4), None, 3))), [5, 6, 7]);
        assert_eq!(at(select(all.iter(), &q(Some(4), Some(6), 100))), [5, 6]);
        assert_eq!(at(select(all.iter(), &q(None, Some(2), 100))), [1, 2]);
    }

    #[test]
    fn secrets_are_replaced_and_the_ring_and_file_are_bounded() {
        let dir = std::env::temp_dir().join(format!("fossa-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let logs = LocalLogs::new(dir.clone(), vec!["s3cr3t-pw".into()]);
        logs.push(
            "local-1",
            "connecting to amqp://fossa:s3cr3t-pw@127.0.0.1:5672\n",
        );
        let got = logs.query("local-1", &LogQuery::default());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, "connecting to amqp://fossa:***@127.0.0.1:5672");
        let file = std::fs::read_to_string(dir.join("local-1.log")).unwrap();
        assert!(file.contains("fossa:***@") && !file.contains("s3cr3t"));
        for n in 0..RING_LINES + 10 {
            logs.push("local-1", &format!("line {n}"));
        }
        let all = logs.query(
            "local-1",
            &LogQuery {
                limit: u32::MAX,
                ..Default::default()
            },
        );
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all.last().unwrap().text, format!("line {}", RING_LINES + 9));
        let long = "x".repeat(LINE_BYTES * 2);
        logs.push("local-2", &long);
        assert!(logs.query("local-2", &LogQuery::default())[0]
            .text
            .ends_with("(line cut at 4096 bytes)"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
