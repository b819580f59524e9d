//! The agent's log lines with their priority for journald. Under systemd
//! the agent's stderr is a journal stream (`JOURNAL_STREAM` is set), and
//! journald reads a `<N>` prefix on each line as its syslog priority
//! (systemd.exec's `SyslogLevelPrefix=`, on by default), so `journalctl -p
//! err` shows the errors. Elsewhere (a terminal, a test) lines are plain.

use std::io::Write;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The syslog priority of a tracing level (`<3>` err … `<7>` debug).
pub fn prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Whether stderr is a journal stream (systemd sets `JOURNAL_STREAM` to its
/// device and inode).
pub fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Stderr, each event's line prefixed with its priority when `prefixed`.
#[derive(Debug, Clone, Copy)]
pub struct Stderr {
    /// Write `<N>` before each line.
    pub prefixed: bool,
}

/// One event's writer: its prefix goes before its first byte.
pub struct Line<W: Write> {
    out: W,
    prefix: Option<&'static str>,
}

impl<W: Write> Write for Line<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(p) = self.prefix.take() {
            // The whole line in one write, so lines of two threads never
            // interleave between the prefix and the text.
            let mut line = Vec::with_capacity(p.len() + buf.len());
            line.extend_from_slice(p.as_bytes());
            line.extend_from_slice(buf);
            self.out.write_all(&line)?;
            return Ok(buf.len());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            out: std::io::stderr(),
            prefix: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            out: std::io::stderr(),
            prefix: self.prefixed.then(|| prefix(meta.level())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_starts_with_its_priority_once() {
        let mut l = Line {
            out: Vec::new(),
            prefix: Some(prefix(&Level::ERROR)),
        };
        l.write_all(b"cannot read the history\n").unwrap();
        l.write_all(b"more").unwrap();
        assert_eq!(l.out, b"<3>cannot read the history\nmore");
        assert_eq!(prefix(&Level::WARN), "<4>");
    }
}
