//! Taking every message from a queue with Basic.Get (no-ack): how the
//! gateway reads the nodes' notes of the subtasks they took
//! ([`fossa_contract::names::TAKEN_QUEUE`]).

use std::time::Duration;

use super::{
    close_reason, frame, shortstr, within, AmqpError, Conn, Login, BASIC, CHANNEL, CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK, FRAME_BODY, FRAME_HEADER, FRAME_METHOD,
};

const BASIC_GET: u16 = 70;
const BASIC_GET_OK: u16 = 71;
const BASIC_GET_EMPTY: u16 = 72;

/// One message taken from a queue, with the properties a note carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Got {
    /// The body.
    pub body: Vec<u8>,
    /// `correlation-id`.
    pub correlation_id: String,
    /// `reply-to`.
    pub reply_to: String,
    /// `app-id` (a note's node).
    pub app_id: String,
    /// `timestamp`, seconds since the epoch.
    pub timestamp: Option<i64>,
}

impl Conn<'_> {
    /// Takes up to `most` messages from `queue` on channel 1, acked as they
    /// are delivered; none when the queue does not exist yet.
    async fn get_all(&mut self, queue: &str, most: usize) -> Result<Vec<Got>, AmqpError> {
        self.open_channel().await?;
        let mut out = Vec::new();
        while out.len() < most {
            let mut args = 0u16.to_be_bytes().to_vec();
            shortstr(&mut args, queue);
            args.push(1); // no-ack: taken is taken
            self.send(&frame(1, BASIC, BASIC_GET, &args)).await?;
            let (kind, m) = self.next_frame().await?;
            if kind != FRAME_METHOD || m.len() < 4 {
                return Err(self.protocol(format!("frame type {kind} where Basic.GetOk was due")));
            }
            let class = u16::from_be_bytes([m[0], m[1]]);
            let id = u16::from_be_bytes([m[2], m[3]]);
            match (class, id) {
                (BASIC, BASIC_GET_OK) => out.push(self.content().await?),
                (BASIC, BASIC_GET_EMPTY) => break,
                // 404: no node declared it yet, so there is nothing in it.
                (CHANNEL, CHANNEL_CLOSE) if m[4..].starts_with(&404u16.to_be_bytes()) => {
                    self.send(&frame(1, CHANNEL, CHANNEL_CLOSE_OK, &[])).await?;
                    return Ok(out);
                }
                (CHANNEL, CHANNEL_CLOSE) => return Err(self.refused(close_reason(&m[4..]))),
                (c, i) => {
                    return Err(self.protocol(format!("method {c}.{i} where Basic.GetOk was due")))
                }
            }
        }
        self.send(&frame(1, CHANNEL, CHANNEL_CLOSE, &[0, 200, 0, 0, 0, 0, 0]))
            .await?;
        let _ = self.next_on_channel().await;
        Ok(out)
    }

    /// A delivered message's content header and body frames.
    async fn content(&mut self) -> Result<Got, AmqpError> {
        let (kind, header) = self.next_frame().await?;
        if kind != FRAME_HEADER {
            return Err(self.protocol(format!("frame type {kind} where a content header was due")));
        }
        let (size, mut got) =
            properties(&header).ok_or_else(|| self.protocol("a content header it cannot read"))?;
        let mut body = Vec::with_capacity(size.min(1 << 20));
        while body.len() < size {
            match self.next_frame().await? {
                (FRAME_BODY, chunk) => body.extend_from_slice(&chunk),
                (kind, _) => {
                    return Err(self.protocol(format!("frame type {kind} where a body was due")))
                }
            }
        }
        got.body = body;
        Ok(got)
    }
}

/// A content header's body size and the properties a note carries
/// (AMQP 0-9-1's Basic properties, in their flag order).
fn properties(h: &[u8]) -> Option<(usize, Got)> {
    let size = u64::from_be_bytes(h.get(4..12)?.try_into().ok()?) as usize;
    let flags = u16::from_be_bytes(h.get(12..14)?.try_into().ok()?);
    let mut at = 14;
    let mut got = Got::default();
    let short = |at: &mut usize| -> Option<String> {
        let n = usize::from(*h.get(*at)?);
        let s = String::from_utf8_lossy(h.get(*at + 1..*at + 1 + n)?).into_owned();
        *at += 1 + n;
        Some(s)
    };
    for bit in (2..=15).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        match bit {
            13 => {
                let n = u32::from_be_bytes(h.get(at..at + 4)?.try_into().ok()?) as usize;
                at += 4 + n;
            }
            12 | 11 => at += 1,
            6 => {
                let t = u64::from_be_bytes(h.get(at..at + 8)?.try_into().ok()?);
                got.timestamp = i64::try_from(t).ok();
                at += 8;
            }
            10 => got.correlation_id = short(&mut at)?,
            9 => got.reply_to = short(&mut at)?,
            3 => got.app_id = short(&mut at)?,
            _ => {
                short(&mut at)?;
            }
        }
    }
    Some((size, got))
}

/// Takes up to `most` messages from `queue` as `login`, within `limit`.
/// Each is acked as it is delivered, so what this returns is gone from the
/// queue: the caller keeps it.
pub async fn take_all(
    login: &Login<'_>,
    queue: &str,
    most: usize,
    limit: Duration,
) -> Result<Vec<Got>, AmqpError> {
    within(login, limit, async |c| {
        c.login().await?;
        let got = c.get_all(queue, most).await?;
        c.close().await?;
        Ok(got)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u16, props: &[u8]) -> Vec<u8> {
        let mut h = BASIC.to_be_bytes().to_vec();
        h.extend_from_slice(&0u16.to_be_bytes());
        h.extend_from_slice(&42u64.to_be_bytes());
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(props);
        h
    }

    #[test]
    fn a_notes_properties_are_read_in_flag_order() {
        let mut p = Vec::new();
        shortstr(&mut p, "application/json"); // 15
        p.extend_from_slice(&3u32.to_be_bytes()); // 13: a table of 3 bytes, skipped
        p.extend_from_slice(&[1, 2, 3]);
        p.push(2); // 12: delivery mode
        shortstr(&mut p, "pool:4"); // 10
        shortstr(&mut p, "amq.gen-x"); // 9
        p.extend_from_slice(&1_700_000_000u64.to_be_bytes()); // 6
        shortstr(&mut p, "123:abc"); // 3
        let flags = (1 << 15) | (1 << 13) | (1 << 12) | (1 << 10) | (1 << 9) | (1 << 6) | (1 << 3);
        let (size, got) = properties(&header(flags, &p)).unwrap();
        assert_eq!(size, 42);
        assert_eq!(got.correlation_id, "pool:4");
        assert_eq!(got.reply_to, "amq.gen-x");
        assert_eq!(got.app_id, "123:abc");
        assert_eq!(got.timestamp, Some(1_700_000_000));
        assert!(properties(&header(1 << 10, &[9, b'a'])).is_none(), "short");
    }
}
