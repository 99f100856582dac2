//! The outbox's unit tests: lanes, bounds, the closing phases and batched wake-ups.

use super::body::{CHUNK, MAX_CONTROL_PAYLOAD};
use super::*;
use actix_http::body::MessageBody;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::noop_waker;
use std::pin::Pin;

fn text(s: &'static str) -> Outbound {
    Outbound::Text(ByteString::from_static(s))
}

fn poll(body: &mut OutboxBody) -> Poll<Option<Bytes>> {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    Pin::new(body)
        .poll_next(&mut cx)
        .map(|o| o.map(|r| r.unwrap_or_default()))
}

/// Control frames go first; after a close frame nothing more is taken or written, and the
/// body stays open (the session still reads the client's close) until its senders are gone.
#[test]
fn bounded_control_first_and_close_ends_it() {
    let (tx, mut body) = outbox(2);
    assert_eq!(tx.try_send(text("a")).ok().map(|d| d.frames), Some(1));
    assert_eq!(tx.try_send(text("b")).ok().map(|d| d.frames), Some(2));
    assert!(matches!(tx.try_send(text("c")), Err(Refused::Full(_))));
    for _ in 0..CONTROL_QUEUE {
        assert!(tx.try_send_control(Outbound::Ping(Bytes::new())).is_ok());
    }
    assert!(matches!(
        tx.try_send_control(Outbound::Ping(Bytes::new())),
        Err(Refused::Full(_))
    ));
    let Poll::Ready(Some(chunk)) = poll(&mut body) else {
        panic!("a chunk");
    };
    // 8 empty pings (2 bytes each) first, then "a" and "b" (3 bytes each).
    assert_eq!(chunk.len(), CONTROL_QUEUE * 2 + 6);
    assert_eq!(chunk[0], 0x89);
    assert_eq!(&chunk[CONTROL_QUEUE * 2..], b"\x81\x01a\x81\x01b");
    assert!(poll(&mut body).is_pending());
    assert!(tx.try_send(Outbound::Close(1000, String::new())).is_ok());
    let Poll::Ready(Some(chunk)) = poll(&mut body) else {
        panic!("the close frame");
    };
    assert_eq!(&chunk[..], b"\x88\x02\x03\xe8");
    assert!(matches!(tx.try_send(text("late")), Err(Refused::Closed(_))));
    assert!(
        poll(&mut body).is_pending(),
        "open until the senders are gone"
    );
    drop(tx);
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
}

/// A close on the control lane refuses later data and lets at most one chunk of the data
/// queued before it go first; the rest is dropped.
#[test]
fn a_close_waits_behind_at_most_one_chunk_of_data() {
    let (tx, mut body) = outbox(64);
    let big = Outbound::Binary(Bytes::from(vec![0u8; CHUNK / 4]));
    for _ in 0..16 {
        assert!(tx.try_send(big.clone()).is_ok());
    }
    assert!(tx
        .try_send_control(Outbound::Close(1008, String::new()))
        .is_ok());
    assert!(matches!(tx.try_send(text("late")), Err(Refused::Closed(_))));
    let Poll::Ready(Some(chunk)) = poll(&mut body) else {
        panic!("frames");
    };
    // Four frames of a quarter chunk (4-byte headers) fill the chunk, then the close.
    assert_eq!(chunk.len(), 4 * (CHUNK / 4 + 4) + 4);
    assert_eq!(&chunk[chunk.len() - 4..], b"\x88\x02\x03\xf0");
    assert_eq!(tx.depth(), 0, "the rest is dropped");
    assert!(poll(&mut body).is_pending());
}

#[test]
fn close_only_drops_the_backlog_and_writes_only_the_close() {
    let (tx, mut body) = outbox(16);
    for _ in 0..16 {
        assert!(tx.try_send(text("x")).is_ok());
    }
    tx.close_only(1013, "slow consumer");
    assert!(matches!(tx.try_send(text("y")), Err(Refused::Closed(_))));
    let Poll::Ready(Some(chunk)) = poll(&mut body) else {
        panic!("the close frame");
    };
    assert_eq!(chunk[0], 0x88);
    assert_eq!(&chunk[2..4], &1013u16.to_be_bytes());
    assert_eq!(&chunk[4..], b"slow consumer");
    assert!(
        poll(&mut body).is_pending(),
        "open until the senders are gone"
    );
    drop(tx);
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
}

#[test]
fn every_sender_gone_drains_then_ends() {
    let (tx, mut body) = outbox(4);
    let hub = tx.clone();
    assert!(tx.try_send(text("a")).is_ok());
    drop(tx);
    assert!(hub.try_send(text("b")).is_ok());
    drop(hub);
    assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
}

#[test]
fn stop_ends_without_writing_and_finished_resolves() {
    let (tx, mut body) = outbox(4);
    let watch = tx.watch();
    assert!(tx.try_send(text("a")).is_ok());
    watch.stop();
    assert!(matches!(poll(&mut body), Poll::Ready(None)));
    futures_util::FutureExt::now_or_never(watch.finished()).expect("finished");
}

#[test]
fn oversized_control_payloads_are_cut_to_the_rfc_limits() {
    let (tx, mut body) = outbox(4);
    assert!(tx
        .try_send_control(Outbound::Ping(Bytes::from(vec![b'p'; 300])))
        .is_ok());
    assert!(tx.try_send(Outbound::Close(1000, "é".repeat(100))).is_ok());
    let Poll::Ready(Some(chunk)) = poll(&mut body) else {
        panic!("frames");
    };
    assert_eq!(&chunk[..2], &[0x89, 125]);
    let close = &chunk[2 + 125..];
    assert_eq!(close[0], 0x88);
    assert!(usize::from(close[1]) <= MAX_CONTROL_PAYLOAD);
    assert!(std::str::from_utf8(&close[4..]).is_ok());
}

#[test]
fn batched_wakes_reach_bodies_on_their_own_arbiter() {
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let worker = actix_rt::Arbiter::new();
        let (tx, body) = outbox(8);
        let (got_tx, got_rx) = tokio::sync::oneshot::channel();
        // The body waits on the worker, as under actix-http.
        assert!(worker.spawn(async move {
            let mut body = body;
            let chunk = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
            let _ = got_tx.send(chunk.map(|c| c.unwrap_or_default()));
        }));
        // Offer from here until the body has parked on the worker and been woken by a batch.
        let mut sent = false;
        // Bounded in time: the worker thread parks the body within milliseconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if tx.0.home.get().is_some() && tx.0.lock().body.is_some() {
                let mut wakes = Wakes::new();
                assert_eq!(
                    tx.try_send_batched(text("a"), &mut wakes)
                        .ok()
                        .map(|d| d.frames),
                    Some(1)
                );
                assert_eq!(wakes.batches.len(), 1, "one batch for the worker");
                wakes.wake_all();
                sent = true;
                break;
            }
            actix_rt::task::yield_now().await;
            std::thread::yield_now();
        }
        assert!(sent, "the body parked on its worker");
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), got_rx)
            .await
            .expect("woken")
            .expect("sent");
        assert_eq!(chunk.as_deref(), Some(&b"\x81\x01a"[..]));
        worker.stop();
    });
}

#[test]
fn a_full_control_lane_pauses_the_reader_until_the_body_drains_it() {
    let (tx, mut body) = outbox(4);
    let watch = tx.watch();
    let (woken, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..CONTROL_QUEUE {
        assert!(watch.poll_control_room(&mut cx).is_ready());
        assert!(tx.try_send_control(Outbound::Pong(Bytes::new())).is_ok());
    }
    assert!(watch.poll_control_room(&mut cx).is_pending());
    assert!(!woken.load(std::sync::atomic::Ordering::SeqCst));
    assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
    assert!(
        woken.load(std::sync::atomic::Ordering::SeqCst),
        "reader woken"
    );
    assert!(watch.poll_control_room(&mut cx).is_ready());
}

/// A waker that records being woken.
fn flag_waker() -> (Arc<std::sync::atomic::AtomicBool>, Waker) {
    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (flag.clone(), Waker::from(Arc::new(Flag(flag))))
}

#[test]
fn the_data_lane_is_bounded_in_bytes_too() {
    let (tx, mut body) = outbox_with_bytes(100, 10);
    // An empty queue takes a frame bigger than the bound, alone.
    assert!(tx.try_send(text("twelve bytes")).is_ok());
    assert!(matches!(tx.try_send(text("x")), Err(Refused::Full(_))));
    assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
    assert_eq!(tx.depth_bytes(), 0);
    assert_eq!(
        tx.try_send(text("12345")).ok(),
        Some(Depth {
            frames: 1,
            bytes: 5
        })
    );
    assert!(tx.try_send(text("12345")).is_ok());
    assert!(matches!(tx.try_send(text("1")), Err(Refused::Full(_))));
    assert!(tx.try_send_control(Outbound::Pong(Bytes::new())).is_ok());
    assert_eq!(tx.depth_bytes(), 10);
}

#[test]
fn a_burst_gives_its_memory_back() {
    let (tx, mut body) = outbox(1024);
    for _ in 0..1024 {
        assert!(tx.try_send(text("x")).is_ok());
    }
    assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
    assert!(poll(&mut body).is_pending());
    assert_eq!(tx.0.lock().data.capacity(), 0);
}
