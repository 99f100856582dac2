//! A raw TCP WebSocket *client* for server tests: the handshake by hand, masked frames built
//! byte by byte, and a frame reader that sees every frame (pings, pongs, close) as it arrives.
//! Unlike awc or tungstenite it never answers anything on its own and lets a test write any
//! number of frames in one `write_all`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// The masking key of every frame built here (any key will do; the server must unmask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame: FIN set, opcode `op`, `payload`.
pub fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | op);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The raw HTTP request of a WebSocket upgrade of `path` (or, with `upgrade` false, a plain GET
/// of it).
pub fn request(addr: SocketAddr, path: &str, upgrade: bool) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if upgrade {
        req.push_str(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Read an HTTP response head (up to the blank line) within [`WAIT`]; answers its status and
/// any bytes read past the head.
pub async fn response_head(tcp: &mut TcpStream) -> (u16, Vec<u8>) {
    let (status, _, rest) = response_head_text(tcp).await;
    (status, rest)
}

/// [`response_head`] with the head itself, lowercased (header names and values compared without
/// case).
pub async fn response_head_text(tcp: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a response head in time")
            .expect("read the response head");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {head}"));
    (status, head, buf[end..].to_vec())
}

/// A WebSocket connection over a plain `TcpStream`, after a successful handshake.
pub struct RawWs {
    rx: tokio::net::tcp::OwnedReadHalf,
    /// The writing half; a test may take it to write from another task while it reads.
    pub tx: Option<tokio::net::tcp::OwnedWriteHalf>,
    /// Bytes read from the socket, not yet taken as frames.
    buf: Vec<u8>,
    /// A slow reader: at most this many bytes per tick of this interval.
    pace: Option<(usize, tokio::time::Interval)>,
}

/// One frame from the server (never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// A close frame's code, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawWs {
    /// Connect to `addr` and upgrade `path`; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        RawWs::upgrade(tcp, path).await
    }

    /// Upgrade `path` over an already connected `tcp` (one with socket options of the test's
    /// choosing); panics unless the server answers 101.
    pub async fn upgrade(mut tcp: TcpStream, path: &str) -> RawWs {
        let addr = tcp.peer_addr().expect("peer address");
        tcp.write_all(&request(addr, path, true))
            .await
            .expect("write the upgrade");
        let (status, rest) = response_head(&mut tcp).await;
        assert_eq!(status, 101, "the upgrade is accepted");
        let (rx, tx) = tcp.into_split();
        RawWs {
            rx,
            tx: Some(tx),
            buf: rest,
            pace: None,
        }
    }

    /// From now on read like a slow client: at most `bytes` per `every` (the scenario of a
    /// client on a slow link; nothing waits on it to synchronise).
    pub fn read_slowly(&mut self, bytes: usize, every: std::time::Duration) {
        self.pace = Some((bytes, tokio::time::interval(every)));
    }

    /// Write `bytes` (frames built with [`masked`]) in one `write_all`.
    pub async fn write(&mut self, bytes: &[u8]) {
        let tx = self.tx.as_mut().expect("the writing half is here");
        tx.write_all(bytes).await.expect("write frames");
    }

    /// The next frame within [`WAIT`]; `None` when the server ended the connection (EOF or
    /// reset).
    pub async fn frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut limit = chunk.len();
            if let Some((bytes, tick)) = &mut self.pace {
                tick.tick().await;
                limit = (*bytes).min(limit);
            }
            let n = tokio::time::timeout(WAIT, self.rx.read(&mut chunk[..limit]))
                .await
                .expect("a frame in time");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read until the server ends the connection, within [`WAIT`]: `Ok` for an orderly end
    /// (EOF: the server shut its side down), the error for a reset. Panics if a frame arrives
    /// meanwhile.
    pub async fn end(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            assert!(parse(&self.buf).is_none(), "a frame before the end");
            let n = tokio::time::timeout(WAIT, self.rx.read(&mut chunk))
                .await
                .expect("the end of the connection in time")?;
            if n == 0 {
                return Ok(());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One server frame from the front of `buf`, and how many bytes it took.
fn parse(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(b)).expect("length fits"),
                10,
            )
        }
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < head + len {
        return None;
    }
    let payload = buf[head..head + len].to_vec();
    Some((
        ServerFrame {
            fin,
            opcode,
            payload,
        },
        head + len,
    ))
}
