//! Helpers of the fault scenarios in `tests/faults.rs` (kept apart so that file stays one
//! screen of scenarios): the partition's sender and accounting, and the restart storm's
//! clients, burst and windows.

use super::*;

/// The partition scenario's sender: heartbeat 200 ms / 600 ms, fast reconnection, and an
/// outbox of 512 that drops its oldest.
pub(super) fn partition_sender_config() -> ClientConfig {
    ClientConfig::default()
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(200),
            Duration::from_millis(600),
        ))
        .reconnect(fast_reconnect())
        .outbox(OutboxPolicy::new(512, Overflow::DropOldest))
}

/// Publish seq 0..500 into "p" in steps of 100 that the outbox always holds, waiting after
/// each step until the receiver has it; returns the sequences seen, in arrival order.
pub(super) async fn send_first_500_in_steps(
    sender: &Client,
    got: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
) -> Vec<u32> {
    let mut seen = Vec::new();
    for step in 0..5u32 {
        for n in step * 100..(step + 1) * 100 {
            sender.publish("p", &seq(n)).await.expect("accepted");
        }
        while seen.len() < ((step + 1) * 100) as usize {
            let m = next_matching(got, "the first 500", WAIT, |_| true)
                .await
                .unwrap_or_else(|e| panic!("{e}: {} of the first 500 arrived", seen.len()));
            seen.push(m.data.n);
        }
    }
    seen
}

/// Receive into `seen` until seq 1999 arrives.
pub(super) async fn receive_until_1999(
    got: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
    seen: &mut Vec<u32>,
    sender: &Client,
) {
    loop {
        let n = next_matching(got, "seq 1999", WAIT, |_| true)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {} arrived, the last {:?}; sender {:?}",
                    seen.len(),
                    seen.last(),
                    sender.stats()
                )
            })
            .data
            .n;
        seen.push(n);
        if n == 1999 {
            break;
        }
    }
}

/// Assert the partition's accounting: written + failed + dropped == accepted, the outbox
/// dropped its oldest, no duplicate, order kept, all before the partition and the newest 512.
pub(super) fn assert_partition_accounting(s: &client::Stats, seen: &[u32]) {
    assert_eq!(
        s.messages_out + s.failed + s.dropped,
        s.accepted,
        "every accepted message is written, failed or dropped: {s:?}"
    );
    assert!(
        s.dropped >= 1000 - 512,
        "the outbox dropped its oldest: {s:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "no duplicate, order kept"
    );
    assert_eq!(&seen[..500], &(0..500).collect::<Vec<_>>()[..]);
    let tail: Vec<u32> = seen.iter().copied().filter(|n| *n >= 1488).collect();
    assert_eq!(
        tail,
        (1488..2000).collect::<Vec<_>>(),
        "the newest 512 all arrive"
    );
    assert!(
        seen.len() as u64 <= s.messages_out,
        "nothing arrives that was not written: {} seen, {s:?}",
        seen.len()
    );
}

/// The storm's manager: no connect rate limit, heartbeat off, reconnection after 1 s..2 s of
/// backoff with full jitter (1 s).
pub(super) fn storm_manager_config() -> ManagerConfig {
    ManagerConfig::default().connect_rate(None).client(
        ClientConfig::default()
            .heartbeat(HeartbeatConfig::disabled())
            .reconnect(
                ReconnectPolicy::default()
                    .backoff(Duration::from_secs(1), 2.0, Duration::from_secs(2))
                    .jitter(1.0, None),
            ),
    )
}

/// A storm client with its `joined` and `seq` subscriptions.
pub(super) type StormClient = (
    Client,
    tokio::sync::mpsc::Receiver<Inbound<Joined>>,
    tokio::sync::mpsc::Receiver<Inbound<Seq>>,
);

/// Connect `count` clients "c0".. through `manager`, each recording into `connected_at` the
/// instant of every `Connected` state it reaches.
pub(super) async fn connect_storm_clients(
    manager: &Manager,
    url: &str,
    count: usize,
    connected_at: &Arc<Mutex<Vec<Instant>>>,
) -> Vec<StormClient> {
    let mut clients = Vec::new();
    for i in 0..count {
        let c = manager
            .connect(format!("c{i}"), url)
            .await
            .expect("connect");
        let mut events = c.subscribe_events(64);
        let at = connected_at.clone();
        actix_rt::spawn(async move {
            while let Some(e) = events.recv().await {
                if e == Event::State(ConnectionState::Connected) {
                    at.lock().expect("lock").push(Instant::now());
                }
            }
        });
        let joined = c.subscribe::<Joined>(8);
        let seqs = c.subscribe::<Seq>(1024);
        clients.push((c, joined, seqs));
    }
    clients
}

/// Spawn a task that publishes into rooms "r0".."r{rooms-1}" in turn until the server it
/// talks to is gone; the receiver fires after 500 publishes, the task returns how many.
pub(super) fn spawn_burst(
    rooms: actix_ws_manager::server::Rooms,
    room_count: usize,
) -> (
    actix_rt::task::JoinHandle<u32>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let burst = actix_rt::spawn(async move {
        let mut sent = 0u32;
        let mut started = Some(started_tx);
        while sent < 100_000 {
            // Stops when the server it publishes to is gone (an error, or nobody reached).
            let room = format!("r{}", sent as usize % room_count);
            if !matches!(rooms.publish(&room, &seq(sent)).await, Ok(n) if n > 0) {
                break;
            }
            sent += 1;
            if sent == 500 {
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
            }
        }
        sent
    });
    (burst, started_rx)
}

/// How many of `times` fall in each 100 ms window after `start`.
pub(super) fn per_100ms_window(times: &[Instant], start: Instant) -> BTreeMap<u128, usize> {
    let mut windows: BTreeMap<u128, usize> = BTreeMap::new();
    for t in times {
        *windows
            .entry(t.duration_since(start).as_millis() / 100)
            .or_default() += 1;
    }
    windows
}
