//! A real health check of a RabbitMQ broker: an AMQP 0-9-1 login with the
//! workers' own credentials, opening their virtual host and closing cleanly
//! (so the broker logs no error for it). A live process or container proves
//! nothing; this proves a worker could connect right now. The same small
//! client reads a queue's depth (a passive declare) and puts a lost subtask
//! back on the task queue ([`publish`], with publisher confirms), and takes
//! the nodes' notes of the subtasks they took ([`get::take_all`]).

pub mod get;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the broker did not let a worker in.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// No TCP connection.
    #[error("cannot connect to {address}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-handshake.
    #[error("the broker at {address} stopped answering during the AMQP handshake")]
    Io {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The whole check took too long.
    #[error("the broker at {address} did not finish an AMQP login within {secs} s")]
    Timeout {
        /// `host:port`.
        address: String,
        /// The limit.
        secs: u64,
    },
    /// The broker refused the login or the virtual host (it closes the
    /// connection, with a reason when it gives one).
    #[error("the broker at {address} refused the login as {user}: {reason}")]
    Refused {
        /// `host:port`.
        address: String,
        /// The user.
        user: String,
        /// What it said.
        reason: String,
    },
    /// Not an AMQP 0-9-1 broker.
    #[error("{address} does not speak AMQP 0-9-1: {what}")]
    Protocol {
        /// `host:port`.
        address: String,
        /// What was wrong.
        what: String,
    },
}

/// Where and as whom to log in.
#[derive(Clone)]
pub struct Login<'a> {
    /// `host:port`.
    pub address: &'a str,
    /// User name.
    pub user: &'a str,
    /// Password (never shown).
    pub password: &'a str,
    /// Virtual host.
    pub vhost: &'a str,
}

const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const CONNECTION: u16 = 10;
const START: u16 = 10;
const START_OK: u16 = 11;
const TUNE: u16 = 30;
const TUNE_OK: u16 = 31;
const OPEN: u16 = 40;
const OPEN_OK: u16 = 41;
const CLOSE: u16 = 50;
const CLOSE_OK: u16 = 51;
const CHANNEL: u16 = 20;
const CHANNEL_OPEN: u16 = 10;
const CHANNEL_OPEN_OK: u16 = 11;
const CHANNEL_CLOSE: u16 = 40;
const CHANNEL_CLOSE_OK: u16 = 41;
const QUEUE: u16 = 50;
const QUEUE_DECLARE: u16 = 10;
const QUEUE_DECLARE_OK: u16 = 11;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const BASIC: u16 = 60;
const BASIC_PUBLISH: u16 = 40;
const BASIC_RETURN: u16 = 50;
const BASIC_ACK: u16 = 80;
const BASIC_NACK: u16 = 120;
const CONFIRM: u16 = 85;
const CONFIRM_SELECT: u16 = 10;
const CONFIRM_SELECT_OK: u16 = 11;
/// Body bytes per body frame: under RabbitMQ's smallest frame-max (4 KiB
/// is AMQP's floor; RabbitMQ offers 128 KiB) less the frame's own 8 bytes.
const BODY_CHUNK: usize = 4096 - 8;
/// The largest frame the probe reads (Connection.Start carries the server's properties).
const MAX_FRAME: usize = 64 * 1024;

fn shortstr(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn longstr(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// One method frame on channel 0.
fn method(id: u16, args: &[u8]) -> Vec<u8> {
    frame(0, CONNECTION, id, args)
}

/// One method frame of `class` on `channel`.
fn frame(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + args.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(args);
    let mut f = vec![FRAME_METHOD];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f.push(FRAME_END);
    f
}

/// A frame of `kind` (content header or body) on `channel`.
fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

/// A message for a queue, through the default exchange, as Fossa's parent
/// sends a subtask: JSON, persistent, with its correlation id and the
/// parent's reply queue.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The queue (the default exchange's routing key).
    pub queue: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
    /// `{pool}:{n}`.
    pub correlation_id: &'a str,
    /// The parent's reply queue.
    pub reply_to: &'a str,
}

/// The payload of a Connection.Close: reply code and text.
fn close_reason(args: &[u8]) -> String {
    if args.len() < 3 {
        return "connection closed".into();
    }
    let code = u16::from_be_bytes([args[0], args[1]]);
    let len = usize::from(args[2]);
    let text = args.get(3..3 + len).unwrap_or_default();
    format!("{code} {}", String::from_utf8_lossy(text))
}

struct Conn<'a> {
    stream: TcpStream,
    login: &'a Login<'a>,
    /// Whether Start-Ok went out: a close after it is a refusal.
    sent_credentials: bool,
}

impl Conn<'_> {
    fn io(&self, source: std::io::Error) -> AmqpError {
        AmqpError::Io {
            address: self.login.address.into(),
            source,
        }
    }

    fn refused(&self, reason: impl Into<String>) -> AmqpError {
        AmqpError::Refused {
            address: self.login.address.into(),
            user: self.login.user.into(),
            reason: reason.into(),
        }
    }

    fn protocol(&self, what: impl Into<String>) -> AmqpError {
        AmqpError::Protocol {
            address: self.login.address.into(),
            what: what.into(),
        }
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), AmqpError> {
        self.stream.write_all(frame).await.map_err(|e| self.io(e))
    }

    /// The next Connection method: its id and arguments. A closed socket
    /// during the login is RabbitMQ's way of refusing it.
    async fn next(&mut self) -> Result<(u16, Vec<u8>), AmqpError> {
        loop {
            let mut head = [0u8; 7];
            match self.stream.read_exact(&mut head).await {
                Ok(_) => {}
                // RabbitMQ refuses a login by closing the socket (a reset when
                // our Start-Ok is still unread).
                Err(e)
                    if self.sent_credentials
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::UnexpectedEof
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::ConnectionAborted
                        ) =>
                {
                    return Err(self.refused(
                        "it closed the connection after the login (wrong user or password?)",
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(self.protocol("it closed the connection before logging in"))
                }
                Err(e) => return Err(self.io(e)),
            }
            if &head[..4] == b"AMQP" {
                return Err(self.protocol(format!(
                    "it wants protocol version {}.{}.{}",
                    head[5], head[6], 0
                )));
            }
            let mut body = self.body(&head).await?;
            match head[0] {
                FRAME_HEARTBEAT => continue,
                FRAME_METHOD if body.len() >= 4 => {
                    let class = u16::from_be_bytes([body[0], body[1]]);
                    let id = u16::from_be_bytes([body[2], body[3]]);
                    if class != CONNECTION {
                        return Err(self.protocol(format!("method {class}.{id} before login")));
                    }
                    let args = body.split_off(4);
                    if id == CLOSE {
                        let reason = close_reason(&args);
                        let _ = self.send(&method(CLOSE_OK, &[])).await;
                        return Err(self.refused(reason));
                    }
                    return Ok((id, args));
                }
                t => return Err(self.protocol(format!("frame type {t} before login"))),
            }
        }
    }

    async fn expect(&mut self, want: u16, name: &str) -> Result<Vec<u8>, AmqpError> {
        let (id, args) = self.next().await?;
        if id != want {
            return Err(self.protocol(format!("method 10.{id} where {name} was due")));
        }
        Ok(args)
    }

    async fn run(&mut self) -> Result<(), AmqpError> {
        self.login().await?;
        self.close().await
    }

    /// The body of the frame whose header is `head`, checked for its size and end marker.
    async fn body(&mut self, head: &[u8; 7]) -> Result<Vec<u8>, AmqpError> {
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        if size > MAX_FRAME {
            return Err(self.protocol(format!("a frame of {size} bytes")));
        }
        let mut body = vec![0u8; size + 1];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        if body[size] != FRAME_END {
            return Err(self.protocol("a frame without its end marker"));
        }
        body.truncate(size);
        Ok(body)
    }

    /// The next frame on any channel: its type and payload, heartbeats skipped.
    async fn next_frame(&mut self) -> Result<(u8, Vec<u8>), AmqpError> {
        loop {
            let mut head = [0u8; 7];
            self.stream
                .read_exact(&mut head)
                .await
                .map_err(|e| self.io(e))?;
            let body = self.body(&head).await?;
            if head[0] != FRAME_HEARTBEAT {
                return Ok((head[0], body));
            }
        }
    }

    /// The next method on a channel: `(class, id, args)`, other frames skipped.
    async fn next_on_channel(&mut self) -> Result<(u16, u16, Vec<u8>), AmqpError> {
        loop {
            let (kind, mut body) = self.next_frame().await?;
            if kind != FRAME_METHOD || body.len() < 4 {
                continue;
            }
            let class = u16::from_be_bytes([body[0], body[1]]);
            let id = u16::from_be_bytes([body[2], body[3]]);
            return Ok((class, id, body.split_off(4)));
        }
    }

    /// Messages ready in `queue` (a passive Queue.Declare on channel 1);
    /// 0 when the queue does not exist yet.
    async fn depth(&mut self, queue: &str) -> Result<u32, AmqpError> {
        self.open_channel().await?;
        let mut args = 0u16.to_be_bytes().to_vec();
        shortstr(&mut args, queue);
        args.push(1); // passive: only ask, never create
        args.extend_from_slice(&0u32.to_be_bytes());
        self.send(&frame(1, QUEUE, QUEUE_DECLARE, &args)).await?;
        match self.next_on_channel().await? {
            (QUEUE, QUEUE_DECLARE_OK, a) => {
                let n = usize::from(*a.first().unwrap_or(&0));
                let count = a
                    .get(1 + n..5 + n)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| self.protocol("a short Queue.DeclareOk"))?;
                self.send(&frame(1, CHANNEL, CHANNEL_CLOSE, &[0, 200, 0, 0, 0, 0, 0]))
                    .await?;
                let _ = self.next_on_channel().await;
                Ok(count)
            }
            // 404: nobody declared it yet, so nothing waits in it.
            (CHANNEL, CHANNEL_CLOSE, a) if a.starts_with(&404u16.to_be_bytes()) => {
                self.send(&frame(1, CHANNEL, CHANNEL_CLOSE_OK, &[])).await?;
                Ok(0)
            }
            (CHANNEL, CHANNEL_CLOSE, a) => Err(self.refused(close_reason(&a))),
            (c, i, _) => {
                Err(self.protocol(format!("method {c}.{i} where Queue.DeclareOk was due")))
            }
        }
    }

    /// Opens channel 1.
    async fn open_channel(&mut self) -> Result<(), AmqpError> {
        self.send(&frame(1, CHANNEL, CHANNEL_OPEN, &[0])).await?;
        match self.next_on_channel().await? {
            (CHANNEL, CHANNEL_OPEN_OK, _) => Ok(()),
            (c, i, _) => Err(self.protocol(format!("method {c}.{i} where Channel.OpenOk was due"))),
        }
    }

    /// Publishes `m` on channel 1 (opened here) with publisher confirms,
    /// `mandatory`: `Ok` once the broker has taken it into the queue.
    async fn publish(&mut self, m: &Message<'_>) -> Result<(), AmqpError> {
        self.open_channel().await?;
        self.send(&frame(1, CONFIRM, CONFIRM_SELECT, &[0])).await?;
        match self.next_on_channel().await? {
            (CONFIRM, CONFIRM_SELECT_OK, _) => {}
            (CHANNEL, CHANNEL_CLOSE, a) => return Err(self.refused(close_reason(&a))),
            (c, i, _) => {
                return Err(self.protocol(format!("method {c}.{i} where Confirm.SelectOk was due")))
            }
        }
        let mut args = 0u16.to_be_bytes().to_vec();
        shortstr(&mut args, ""); // the default exchange: routed by queue name
        shortstr(&mut args, m.queue);
        args.push(1); // mandatory: an unroutable message comes back
        self.send(&frame(1, BASIC, BASIC_PUBLISH, &args)).await?;
        // Content header: class, weight, body size, then the properties
        // Fossa sets (content-type, delivery-mode 2, correlation-id, reply-to).
        let mut header = BASIC.to_be_bytes().to_vec();
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(m.body.len() as u64).to_be_bytes());
        let flags: u16 = (1 << 15) | (1 << 12) | (1 << 10) | (1 << 9);
        header.extend_from_slice(&flags.to_be_bytes());
        shortstr(&mut header, "application/json");
        header.push(2);
        shortstr(&mut header, m.correlation_id);
        shortstr(&mut header, m.reply_to);
        self.send(&raw_frame(FRAME_HEADER, 1, &header)).await?;
        for chunk in m.body.chunks(BODY_CHUNK) {
            self.send(&raw_frame(FRAME_BODY, 1, chunk)).await?;
        }
        let mut returned = None;
        loop {
            match self.next_on_channel().await? {
                (BASIC, BASIC_RETURN, a) => returned = Some(close_reason(&a)),
                (BASIC, BASIC_ACK, _) => break,
                (BASIC, BASIC_NACK, _) => {
                    return Err(
                        self.refused(format!("it would not take the message for {}", m.queue))
                    )
                }
                (CHANNEL, CHANNEL_CLOSE, a) => return Err(self.refused(close_reason(&a))),
                (c, i, _) => {
                    return Err(self.protocol(format!("method {c}.{i} where Basic.Ack was due")))
                }
            }
        }
        if let Some(why) = returned {
            return Err(self.refused(format!("no queue {} to take it ({why})", m.queue)));
        }
        self.send(&frame(1, CHANNEL, CHANNEL_CLOSE, &[0, 200, 0, 0, 0, 0, 0]))
            .await?;
        let _ = self.next_on_channel().await;
        Ok(())
    }

    async fn login(&mut self) -> Result<(), AmqpError> {
        self.send(b"AMQP\x00\x00\x09\x01").await?;
        let start = self.expect(START, "Connection.Start").await?;
        if start.len() < 2 || start[..2] != [0, 9] {
            return Err(self.protocol("Connection.Start is not version 0-9"));
        }
        let mut args = Vec::new();
        args.extend_from_slice(&0u32.to_be_bytes()); // client properties: none
        shortstr(&mut args, "PLAIN");
        let mut response = vec![0u8];
        response.extend_from_slice(self.login.user.as_bytes());
        response.push(0);
        response.extend_from_slice(self.login.password.as_bytes());
        longstr(&mut args, &response);
        shortstr(&mut args, "en_US");
        self.send(&method(START_OK, &args)).await?;
        self.sent_credentials = true;
        let tune = self.expect(TUNE, "Connection.Tune").await?;
        if tune.len() < 8 {
            return Err(self.protocol("a short Connection.Tune"));
        }
        let mut ok = Vec::new();
        ok.extend_from_slice(&tune[..2]); // channel-max as offered
                                          // frame-max: as offered, but no more than the client reads (0 is "no limit").
        let offered = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        let frame_max = match offered {
            0 => MAX_FRAME as u32,
            n => n.min(MAX_FRAME as u32),
        };
        ok.extend_from_slice(&frame_max.to_be_bytes());
        ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        self.send(&method(TUNE_OK, &ok)).await?;
        let mut open = Vec::new();
        shortstr(&mut open, self.login.vhost);
        shortstr(&mut open, "");
        open.push(0);
        self.send(&method(OPEN, &open)).await?;
        self.expect(OPEN_OK, "Connection.OpenOk").await?;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), AmqpError> {
        let mut close = Vec::new();
        close.extend_from_slice(&200u16.to_be_bytes());
        shortstr(&mut close, "fossa-agent health check");
        close.extend_from_slice(&[0, 0, 0, 0]);
        self.send(&method(CLOSE, &close)).await?;
        // Close-Ok ends it; a broker that just drops the socket is fine too.
        match self.next().await {
            Ok((CLOSE_OK, _)) | Err(AmqpError::Refused { .. }) => Ok(()),
            Ok((id, _)) => Err(self.protocol(format!("method 10.{id} after Close"))),
            Err(e) => Err(e),
        }
    }
}

/// Connects as `login` and runs `f` on the connection, all within `limit`.
async fn within<T>(
    login: &Login<'_>,
    limit: Duration,
    f: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, AmqpError>,
) -> Result<T, AmqpError> {
    let attempt = async {
        let stream =
            TcpStream::connect(login.address)
                .await
                .map_err(|source| AmqpError::Connect {
                    address: login.address.into(),
                    source,
                })?;
        let mut c = Conn {
            stream,
            login,
            sent_credentials: false,
        };
        f(&mut c).await
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(AmqpError::Timeout {
                address: login.address.into(),
                secs: limit.as_secs().max(1),
            })
        })
}

/// Messages ready in `queues` together, read as `login` (a passive
/// declare of each: a queue is never created), within `limit`.
pub async fn queue_depth(
    login: &Login<'_>,
    queues: &[&str],
    limit: Duration,
) -> Result<u32, AmqpError> {
    within(login, limit, async |c| {
        c.login().await?;
        let mut n = 0u32;
        for q in queues {
            n = n.saturating_add(c.depth(q).await?);
        }
        c.close().await?;
        Ok(n)
    })
    .await
}

/// Publishes `message` as `login`, within `limit`: `Ok` once the broker
/// confirmed it is in the queue.
pub async fn publish(
    login: &Login<'_>,
    message: &Message<'_>,
    limit: Duration,
) -> Result<(), AmqpError> {
    within(login, limit, async |c| {
        c.login().await?;
        c.publish(message).await?;
        c.close().await
    })
    .await
}

/// Logs in as `login` and closes again, within `limit`.
pub async fn check(login: &Login<'_>, limit: Duration) -> Result<(), AmqpError> {
    within(login, limit, async |c| c.run().await).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn frames_are_method_frames_on_channel_zero() {
        let f = method(START_OK, &[1, 2, 3]);
        assert_eq!(&f[..3], &[1, 0, 0]);
        assert_eq!(u32::from_be_bytes([f[3], f[4], f[5], f[6]]), 7);
        assert_eq!(&f[7..11], &[0, 10, 0, 11]);
        assert_eq!(*f.last().unwrap(), FRAME_END);
    }

    #[test]
    fn a_close_gives_its_code_and_text() {
        let mut args = 403u16.to_be_bytes().to_vec();
        shortstr(&mut args, "ACCESS_REFUSED - Login was refused");
        assert_eq!(
            close_reason(&args),
            "403 ACCESS_REFUSED - Login was refused"
        );
        assert_eq!(close_reason(&[]), "connection closed");
    }

    async fn server(reply: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut hello = [0u8; 8];
            let _ = s.read_exact(&mut hello).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    fn login(address: &str) -> Login<'_> {
        Login {
            address,
            user: "fossa",
            password: "pw",
            vhost: "/",
        }
    }

    #[tokio::test]
    async fn what_is_not_a_broker_is_named() {
        let http = server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let e = check(&login(&http), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, AmqpError::Protocol { .. }), "{e}");
        let silent = server(b"").await;
        let e = check(&login(&silent), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("closed the connection"), "{e}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap().to_string();
        drop(l);
        let e = check(&login(&closed), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, AmqpError::Connect { .. }), "{e}");
        let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = hang.local_addr().unwrap().to_string();
        let e = check(&login(&addr), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, AmqpError::Timeout { .. }), "{e}");
    }
}
