//! The server's frame-header guard under a forged frame length: a client declares a 1 GiB frame
//! and streams its payload; the server must refuse it at the header (1009) and never buffer the
//! payload. One test in this binary, so that nothing else allocates while the process's resident
//! memory is measured.

mod common;

use actix_ws_manager::server::Server;
use common::{start_server, test_config, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use common::oversize::*;

/// Connect to the server's echo route and finish the WebSocket handshake.
async fn handshake(server: &Server) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("tcp connect");
    let (ws, _response) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(server.echo_url(), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    ws
}

/// The forged header: FIN + binary, masked, 64-bit length, masking key.
fn forged_header() -> Vec<u8> {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&DECLARED.to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    header
}

/// A task that streams up to PAYLOAD zero bytes into `tx` until a write fails; answers what it
/// wrote and the write half, still open.
fn spawn_payload_writer(
    mut tx: OwnedWriteHalf,
) -> actix_rt::task::JoinHandle<(usize, OwnedWriteHalf)> {
    actix_rt::spawn(async move {
        let mut written = 0usize;
        // At most PAYLOAD / 1 writes (every successful write moves at least one byte); bounded in
        // time by BOUND below.
        while written < PAYLOAD {
            let n = (PAYLOAD - written).min(CHUNK);
            match tx.write(&ZEROS[..n]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => written += k,
            }
        }
        // The write half goes back to the test, still open: dropping it would send a FIN, and the
        // server would end the session on that EOF instead of on its close timeout.
        (written, tx)
    })
}

/// The server's first frame: unmasked Close (0x88), short length, 2-byte code first, 1009.
async fn assert_first_frame_is_close_1009(rx: &mut OwnedReadHalf) {
    let mut head = [0u8; 2];
    tokio::time::timeout(BOUND, rx.read_exact(&mut head))
        .await
        .expect("a frame from the server in time")
        .expect("read the first frame header");
    assert_eq!(
        head[0], 0x88,
        "first server frame is not a Close: {head:02x?}"
    );
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = usize::from(head[1] & 0x7F);
    assert!((2..=125).contains(&len), "close payload of {len} bytes");
    let mut payload = vec![0u8; len];
    tokio::time::timeout(BOUND, rx.read_exact(&mut payload))
        .await
        .expect("the close payload in time")
        .expect("read the close payload");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    assert_eq!(
        code,
        1009,
        "close code; reason {:?}",
        String::from_utf8_lossy(&payload[2..])
    );
}

/// Read `rx` until EOF or an error (at most 1024 reads, within BOUND); answers whether it ended
/// and how many bytes came before the end.
async fn read_to_the_end(rx: &mut OwnedReadHalf) -> (bool, usize) {
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
    .expect("the server ended the connection in time");
    (ended, after_close)
}

/// A declared 1 GiB frame followed by 256 MiB of payload closes at the header, server memory
/// growth under 2 MiB: the first frame the server sends is a Close with 1009, it cuts the socket
/// after its close timeout (the client never answers), and the process's VmRSS grows by less
/// than 2 MiB meanwhile (see `MAX_SERVER_GROWTH_KB`).
#[actix_rt::test]
async fn declared_1gib_frame_closes_at_the_header_without_buffering() {
    let server = start_server(test_config().max_message_size(LIMIT));
    let ws = handshake(&server).await;
    assert!(
        server.rooms().wait_sessions(1, WAIT).await && server.rooms().sessions() == 1,
        "one session"
    );
    let (mut rx, mut tx) = ws.into_inner().into_split();

    let before = vm_rss_kb();
    let (anon0, file0) = (status_kb("RssAnon"), status_kb("RssFile"));

    let header = forged_header();
    let start = std::time::Instant::now();
    tx.write_all(&header).await.expect("write the header");

    let writer = spawn_payload_writer(tx);

    assert_first_frame_is_close_1009(&mut rx).await;

    let closed_at = start.elapsed();
    // The client never answers the close: the server cuts the socket after its close timeout,
    // which ends the writer (a write error, or everything written).
    let (written, _tx) = tokio::time::timeout(BOUND, writer)
        .await
        .expect("the writer ended in time")
        .expect("writer task");
    let writer_done_at = start.elapsed();
    // And the read side ends too (EOF or reset), with nothing after the close frame.
    let (ended, after_close) = read_to_the_end(&mut rx).await;
    let cut_at = start.elapsed();
    assert!(ended, "the server kept sending after its close frame");
    assert_eq!(after_close, 0, "bytes after the close frame");
    // The server waited its close timeout for an answer before cutting (the timer starts after
    // the header was written, so this is a lower bound that holds on any machine).
    let close_timeout = server.rooms().config().close_timeout;
    assert!(
        cut_at >= close_timeout,
        "socket ended after {cut_at:?}, before the close timeout of {close_timeout:?}"
    );
    assert!(
        server.rooms().wait_sessions(0, WAIT).await,
        "the session is gone"
    );

    let after = vm_rss_kb();
    let (anon1, file1) = (status_kb("RssAnon"), status_kb("RssFile"));
    let growth = after.saturating_sub(before);
    eprintln!(
        "frame_guard_server: VmRSS before {before} kB, after {after} kB, growth {growth} kB; \
         client wrote {written} payload bytes ({} MiB) of {PAYLOAD}; close frame read after \
         {closed_at:?}, writer done after {writer_done_at:?}, socket ended after {cut_at:?}; \
         RssAnon {anon0} -> {anon1} kB, RssFile {file0} -> {file1} kB",
        written / (1024 * 1024)
    );
    assert!(
        growth < MAX_SERVER_GROWTH_KB,
        "VmRSS grew by {growth} kB (before {before} kB, after {after} kB)"
    );
    server.shutdown().await.expect("shutdown");
}
