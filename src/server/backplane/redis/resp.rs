//! One Redis connection that this crate owns: connect, authenticate, write commands, read
//! replies (RESP2), with a size limit checked at each reply's header.
//!
//! Why not the `redis` crate's connections: every one of its async connections that can
//! receive pub/sub messages (`aio::PubSub`, the push sender of `MultiplexedConnection` and
//! `ConnectionManager`) hands them over through an unbounded channel, drained by a task of its
//! own. Other nodes publishing faster than this node fans out would then grow its memory
//! without limit, and Redis's own pub/sub output-buffer limit would never trip because the
//! bytes are already in this process. Its streaming decoder (`ValueCodec`) is not public API
//! (`doc(hidden)`) and has no size limit. So the backplane reads the socket itself: a reply
//! is only read when the reader asks for the next one, and a bulk string over the limit is
//! refused at its header, before its bytes are buffered. Commands are still packed by the
//! `redis` crate ([`redis::Cmd`]) and URLs parsed by it, except the one on the hot path,
//! `PUBLISH`, packed here in one copy ([`publish_command`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest status or error line, or number line, accepted from Redis.
const MAX_LINE: usize = 64 * 1024;
/// Most elements of one array reply by default (a subscription confirmation or a message has
/// 3; a history read has 3 more than its publications: see [`Reader::max_array`]).
const MAX_ARRAY: usize = 1024;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 4;
/// Read buffer kept between replies; a larger one (after a large message) is let go.
const KEEP_BUFFER: usize = 64 * 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+OK` and other simple strings.
    Status(Bytes),
    /// `-ERR ...`: Redis refused the command (the connection stays usable).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` with its bytes.
    Bulk(Bytes),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` with its elements.
    Array(Vec<Reply>),
}

impl Reply {
    /// The bytes of a bulk or simple string.
    pub(super) fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Bulk(b) | Reply::Status(b) => Some(b),
            _ => None,
        }
    }
}

/// The reading half: replies in order, each at most `limit` bytes of payload.
pub(super) struct Reader {
    io: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
    limit: usize,
    max_array: usize,
}

/// The writing half. Dropping it closes the connection with a reset (see [`Writer::abandon`]).
pub(super) struct Writer {
    io: WriteHalf,
}

enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
}

/// Connect to the Redis of `info` and authenticate, within `within`. Replies over `limit`
/// bytes end the connection.
pub(super) async fn connect(
    info: &ConnectionInfo,
    limit: usize,
    within: Duration,
) -> Result<(Reader, Writer), String> {
    match tokio::time::timeout(within, connect_untimed(info, limit)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

async fn connect_untimed(info: &ConnectionInfo, limit: usize) -> Result<(Reader, Writer), String> {
    let (read, write): (Box<dyn AsyncRead + Send + Unpin>, WriteHalf) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            (Box::new(r), WriteHalf::Tcp(w))
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (r, w) = stream.into_split();
            (Box::new(r), WriteHalf::Unix(w))
        }
        other => return Err(unsupported(other)),
    };
    let mut reader = Reader {
        io: read,
        buf: BytesMut::with_capacity(16 * 1024),
        limit,
        max_array: MAX_ARRAY,
    };
    let mut writer = Writer { io: write };
    let settings = info.redis_settings();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(password);
        writer
            .write_all(&auth.get_packed_command())
            .await
            .map_err(|e| e.to_string())?;
        if let Reply::Error(e) = reader.next().await.map_err(|e| e.to_string())? {
            return Err(format!("Redis refused AUTH: {e}"));
        }
    }
    // A round trip: a link that takes connections but carries nothing is not "connected".
    writer
        .write_all(&redis::cmd("PING").get_packed_command())
        .await
        .map_err(|e| e.to_string())?;
    match reader.next().await.map_err(|e| e.to_string())? {
        Reply::Error(e) => Err(format!("Redis refused PING: {e}")),
        _ => Ok((reader, writer)),
    }
}

/// Why `rediss://` is refused.
pub(super) const NO_TLS: &str = "rediss:// (Redis over TLS) is not supported yet; use redis:// \
     (for example through a TLS tunnel) or a unix socket";

/// Whether [`connect`] can reach `addr`.
pub(super) fn supported(addr: &ConnectionAddr) -> bool {
    match addr {
        ConnectionAddr::Tcp(..) => true,
        #[cfg(unix)]
        ConnectionAddr::Unix(_) => true,
        _ => false,
    }
}

/// Why an address is not supported, in words (also used to refuse it at configuration time).
pub(super) fn unsupported(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::TcpTls { .. } => NO_TLS.to_owned(),
        other => format!("unsupported Redis address {other}"),
    }
}

impl Reader {
    /// Accept arrays of up to `n` elements (at least the default), for replies that carry that
    /// many publications.
    pub(super) fn max_array(&mut self, n: usize) {
        self.max_array = n.max(MAX_ARRAY);
    }

    /// The next reply. Fails when the connection ends, or Redis sends what is not RESP2 or is
    /// over the limit (the connection is then unusable).
    pub(super) async fn next(&mut self) -> io::Result<Reply> {
        loop {
            if let Some(len) = measure(&self.buf, 0, (self.limit, self.max_array), 0)? {
                let bytes = self.buf.split_to(len).freeze();
                if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
                    self.buf = BytesMut::with_capacity(16 * 1024);
                }
                let mut pos = 0;
                return Ok(build(&bytes, &mut pos));
            }
            self.buf.reserve(16 * 1024);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
        }
    }
}

impl Writer {
    /// Write all of `bytes`.
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.io {
            WriteHalf::Tcp(w) => w.write_all(bytes).await,
            #[cfg(unix)]
            WriteHalf::Unix(w) => w.write_all(bytes).await,
        }
    }

    /// Write some of `bytes` (cancel safe: when the future is dropped, nothing was written).
    /// `waited` is set when the socket had no room: bytes it takes after that are bytes the
    /// other end has taken in, which proves the link carries data (bytes taken by an empty
    /// send buffer prove nothing).
    pub(super) async fn write(&mut self, bytes: &[u8], waited: &AtomicBool) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let polled = match &mut self.io {
                WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, bytes),
                #[cfg(unix)]
                WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, bytes),
            };
            if polled.is_pending() {
                waited.store(true, Ordering::Relaxed);
            }
            polled
        })
        .await
    }

    /// Give the connection up: when both halves are dropped, the socket is reset instead of
    /// closed, so the kernel discards what it still holds for Redis rather than delivering it
    /// late, after what a new connection sends.
    pub(super) fn abandon(&self) {
        if let WriteHalf::Tcp(w) = &self.io {
            let _ = socket2::SockRef::from(w.as_ref()).set_linger(Some(Duration::ZERO));
        }
    }
}

/// The length of the complete reply at the start of `buf[at..]`, `None` when more bytes are
/// needed; an error when it is not RESP2 or is over `limit` (bytes of one string, elements of
/// one array).
fn measure(
    buf: &[u8],
    at: usize,
    (limit, max_array): (usize, usize),
    depth: usize,
) -> io::Result<Option<usize>> {
    let Some((kind, line, next)) = line(buf, at)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(next - at)),
        b'$' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some(next - at));
            }
            let n = n as usize;
            if n > limit {
                return Err(bad(format!(
                    "a Redis message of {n} bytes is over the limit of {limit} bytes"
                )));
            }
            let end = next + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(bad("a Redis bulk string does not end in CRLF".into()));
            }
            Ok(Some(end - at))
        }
        b'*' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some(next - at));
            }
            if n as usize > max_array || depth >= MAX_DEPTH {
                return Err(bad(format!(
                    "a Redis array of {n} elements is not expected"
                )));
            }
            let mut pos = next;
            for _ in 0..n {
                match measure(buf, pos, (limit, max_array), depth + 1)? {
                    Some(len) => pos += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos - at))
        }
        other => Err(bad(format!(
            "Redis sent {:?}, which is not a RESP2 reply",
            other as char
        ))),
    }
}

/// The reply starting at `bytes[*pos..]`, which [`measure`] found complete and valid.
fn build(bytes: &Bytes, pos: &mut usize) -> Reply {
    let start = *pos;
    let end = start
        + bytes[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(0);
    let line = &bytes[start + 1..end];
    *pos = end + 2;
    match bytes[start] {
        b'+' => Reply::Status(bytes.slice(start + 1..end)),
        b'-' => Reply::Error(String::from_utf8_lossy(line).into_owned()),
        b':' => Reply::Int(number(line).unwrap_or(0)),
        b'$' => match number(line).unwrap_or(-1) {
            n if n < 0 => Reply::Nil,
            n => {
                let body = bytes.slice(*pos..*pos + n as usize);
                *pos += n as usize + 2;
                Reply::Bulk(body)
            }
        },
        _ => match number(line).unwrap_or(-1) {
            n if n < 0 => Reply::Nil,
            n => Reply::Array((0..n).map(|_| build(bytes, pos)).collect()),
        },
    }
}

/// The type byte, the rest of the line, and where the next line starts.
fn line(buf: &[u8], at: usize) -> io::Result<Option<(u8, &[u8], usize)>> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > 0 => Ok(Some((rest[0], &rest[1..end], at + end + 2))),
        Some(_) => Err(bad("Redis sent an empty line".into())),
        None if rest.len() > MAX_LINE => Err(bad(format!(
            "Redis sent a line longer than {MAX_LINE} bytes"
        ))),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("Redis sent a malformed number".into()))
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// `PUBLISH <prefix><room> <header><seq>\n<frame>` packed as Redis reads it, in one
/// allocation (the hub's thread runs this for every publish).
pub(super) fn publish_command(
    prefix: &str,
    room: &str,
    header: &[u8],
    seq: u64,
    frame: &[u8],
) -> Vec<u8> {
    use std::io::Write;
    let mut digits = [0u8; 20];
    let len = {
        let mut cursor = io::Cursor::new(&mut digits[..]);
        // 20 digits hold any u64: the write cannot fail.
        let _ = write!(cursor, "{seq}");
        cursor.position() as usize
    };
    let digits = &digits[..len];
    let channel = prefix.len() + room.len();
    let payload = header.len() + digits.len() + 1 + frame.len();
    let mut out = Vec::with_capacity(64 + channel + payload);
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    // Writes into a Vec cannot fail.
    let _ = write!(out, "${channel}\r\n{prefix}{room}\r\n${payload}\r\n");
    out.extend_from_slice(header);
    out.extend_from_slice(digits);
    out.push(b'\n');
    out.extend_from_slice(frame);
    out.extend_from_slice(b"\r\n");
    out
}

/// A command of `args` packed as Redis reads it, in one allocation (the history's publish
/// script runs this on the hub's thread for every publish).
pub(super) fn pack(args: &[&[u8]]) -> Vec<u8> {
    use std::io::Write;
    let size: usize = args.iter().map(|a| a.len() + 24).sum();
    let mut out = Vec::with_capacity(16 + size);
    // Writes into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every complete reply at the start of `input`, and how many bytes they took.
#[cfg(test)]
fn parse_all(mut input: &[u8], limit: usize) -> io::Result<(Vec<Reply>, usize)> {
    use bytes::Buf;
    let mut out = Vec::new();
    let total = input.len();
    while let Some(len) = measure(input, 0, (limit, MAX_ARRAY), 0)? {
        let bytes = Bytes::copy_from_slice(&input[..len]);
        let mut pos = 0;
        out.push(build(&bytes, &mut pos));
        input.advance(len);
    }
    Ok((out, total - input.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_is_packed_as_the_redis_crate_packs_it() {
        let ours = publish_command("wsm:room:", "a", b"n-1 7 ", 9, br#"{"type":"m"}"#);
        let theirs = redis::cmd("PUBLISH")
            .arg("wsm:room:a")
            .arg(&b"n-1 7 9\n{\"type\":\"m\"}"[..])
            .get_packed_command();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn commands_are_packed_as_the_redis_crate_packs_them() {
        let ours = pack(&[b"EVALSHA", b"abc", b"2", b"k{r}:meta", b"", b"{\"a\":1"]);
        let theirs = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("k{r}:meta")
            .arg("")
            .arg("{\"a\":1")
            .get_packed_command();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn replies_parse_whole_and_wait_for_the_rest() {
        let input =
            b"+OK\r\n:3\r\n-ERR no\r\n$-1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n";
        let (replies, used) = parse_all(input, 1024).expect("valid");
        assert_eq!(used, input.len());
        assert_eq!(replies.len(), 5);
        assert_eq!(replies[1], Reply::Int(3));
        assert_eq!(replies[2], Reply::Error("ERR no".into()));
        assert_eq!(
            replies[4],
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"message")),
                Reply::Bulk(Bytes::from_static(b"a")),
                Reply::Bulk(Bytes::from_static(b"hi")),
            ])
        );
        // Every proper prefix of the last reply is incomplete, never an error.
        for cut in 24..input.len() {
            let (replies, _) = parse_all(&input[..cut], 1024).expect("a prefix is valid");
            assert!(replies.len() < 5, "cut at {cut}");
        }
    }

    #[test]
    fn over_the_limit_is_refused_at_the_header() {
        let err = parse_all(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$999999\r\n", 1000)
            .expect_err("over the limit");
        assert!(err.to_string().contains("999999 bytes"), "{err}");
        for junk in [&b"?x\r\n"[..], b"$abc\r\n", b"*99999\r\n", b"\r\n"] {
            assert!(parse_all(junk, 1000).is_err(), "{junk:?}");
        }
        let long = vec![b'+'; MAX_LINE + 2];
        assert!(parse_all(&long, 1000).is_err());
    }
}
