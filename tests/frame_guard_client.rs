//! The client's frame-header guard under a forged frame length: a raw peer declares a 1 GiB frame
//! and streams its payload; the client must refuse it at the header (1009) and never buffer the
//! payload. One test in this binary, so that nothing else allocates while the process's resident
//! memory is measured.

mod common;

use std::time::Instant;

use actix_ws_manager::client::{connect, ConnectionState, Event};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};
use common::{recv_until, recv_within, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use common::oversize::*;

/// What the peer saw.
#[derive(Debug)]
struct PeerReport {
    /// Payload bytes written behind the forged header.
    written: usize,
    /// Whether the client ended the connection (EOF or error on read) after its close frame.
    ended: bool,
    /// Bytes the client sent after its close frame.
    after_close: usize,
}

/// Read the client's first frame and answer its close code: a masked Close (0x88, mask bit, a
/// payload of at most 125 bytes) whose first two unmasked bytes are the code.
async fn read_client_close(rx: &mut tokio::net::tcp::OwnedReadHalf) -> Result<u16, String> {
    let mut head = [0u8; 2];
    rx.read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the frame header: {e}"))?;
    if head[0] != 0x88 {
        return Err(format!("first client frame is not a Close: {head:02x?}"));
    }
    if head[1] & 0x80 == 0 {
        return Err("client frame not masked".into());
    }
    let len = usize::from(head[1] & 0x7F);
    if !(2..=125).contains(&len) {
        return Err(format!("close payload of {len} bytes"));
    }
    let mut mask = [0u8; 4];
    rx.read_exact(&mut mask)
        .await
        .map_err(|e| format!("reading the mask: {e}"))?;
    let mut payload = vec![0u8; len];
    rx.read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading the close payload: {e}"))?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(u16::from_be_bytes([payload[0], payload[1]]))
}

/// The raw peer: accept one client, complete the handshake, wait for `go`, then send an unmasked
/// header declaring [`DECLARED`] bytes and stream up to [`PAYLOAD`] bytes of zeros behind it
/// until a write fails, while reading the client's close frame (its code goes to `codes`) and
/// then the end of the connection. It never answers the close.
async fn raw_peer(
    listener: TcpListener,
    go: oneshot::Receiver<()>,
    codes: mpsc::Sender<Result<u16, String>>,
) -> PeerReport {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no client")
        .expect("accept");
    let ws = tokio::time::timeout(WAIT, tokio_tungstenite::accept_async(tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (mut rx, mut tx) = ws.into_inner().into_split();
    tokio::time::timeout(WAIT, go)
        .await
        .expect("go in time")
        .expect("go");

    // FIN + binary, unmasked (a server frame), 64-bit length.
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&DECLARED.to_be_bytes());
    tx.write_all(&header).await.expect("write the header");
    let writer = actix_rt::spawn(async move {
        let mut written = 0usize;
        // Bounded by PAYLOAD (each successful write moves at least one byte), and in time by
        // BOUND where it is awaited.
        while written < PAYLOAD {
            let n = (PAYLOAD - written).min(CHUNK);
            match tx.write(&ZEROS[..n]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => written += k,
            }
        }
        // Still open: a FIN would end the client's stream, and it should end the connection on
        // its own close timeout instead.
        (written, tx)
    });

    let code = tokio::time::timeout(BOUND, read_client_close(&mut rx))
        .await
        .unwrap_or_else(|_| Err("no close frame in time".into()));
    let _ = codes.send(code).await;

    // Nothing else from the client, then the end of the connection.
    let mut rest = [0u8; 1024];
    let mut after_close = 0usize;
    let ended = tokio::time::timeout(BOUND, async {
        for _ in 0..1024 {
            match rx.read(&mut rest).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => after_close += n,
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let (written, _tx) = tokio::time::timeout(BOUND, writer)
        .await
        .expect("the writer ended in time")
        .expect("writer task");
    PeerReport {
        written,
        ended,
        after_close,
    }
}

/// A declared 1 GiB frame from the server ends the client's connection at the header with 1009,
/// client memory growth under 1 MiB: the peer reads a Close with 1009 as the client's first
/// frame, the client reports `Disconnected` with 1009, and the process's VmRSS grows by less
/// than 1 MiB from just before the header is sent until that report.
#[actix_rt::test]
async fn declared_1gib_frame_from_the_server_ends_the_client_at_the_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/raw", listener.local_addr().expect("address"));
    let (go_tx, go_rx) = oneshot::channel();
    let (code_tx, mut code_rx) = mpsc::channel(1);
    let peer = actix_rt::spawn(raw_peer(listener, go_rx, code_tx));

    let config = ClientConfig::default()
        .max_message_size(LIMIT)
        .heartbeat(HeartbeatConfig::disabled())
        .reconnect(ReconnectPolicy::never());
    let client = connect(&url, config).expect("client");
    let mut events = client.subscribe_events(64);
    recv_until(&mut events, WAIT, "Connected", |e| {
        matches!(e, Event::State(ConnectionState::Connected))
    })
    .await;

    let before = vm_rss_kb();
    let (anon0, file0) = (status_kb("RssAnon"), status_kb("RssFile"));
    let start = Instant::now();
    go_tx.send(()).expect("peer waiting");

    let code = recv_within(&mut code_rx, BOUND, "the client's close frame").await;
    assert_eq!(code, Ok(1009), "the client's first frame");
    let closed_at = start.elapsed();
    let ev = recv_until(&mut events, BOUND, "Disconnected", |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    let disconnected_at = start.elapsed();
    let after = vm_rss_kb();
    let (anon1, file1) = (status_kb("RssAnon"), status_kb("RssFile"));
    assert!(
        matches!(
            ev,
            Event::State(ConnectionState::Disconnected { code: 1009, .. })
        ),
        "{ev:?}"
    );

    let report = tokio::time::timeout(BOUND, peer)
        .await
        .expect("the peer ended in time")
        .expect("peer task");
    let growth = after.saturating_sub(before);
    eprintln!(
        "frame_guard_client: VmRSS before {before} kB, after {after} kB, growth {growth} kB; \
         peer wrote {} payload bytes ({} MiB) of {PAYLOAD}; close frame read after \
         {closed_at:?}, Disconnected after {disconnected_at:?}; RssAnon {anon0} -> {anon1} kB, \
         RssFile {file0} -> {file1} kB",
        report.written,
        report.written / (1024 * 1024)
    );
    assert!(report.ended, "the client did not end the connection");
    assert_eq!(
        report.after_close, 0,
        "bytes after the client's close frame"
    );
    assert!(
        growth < MAX_GROWTH_KB,
        "VmRSS grew by {growth} kB (before {before} kB, after {after} kB)"
    );
    client.close().await;
}
