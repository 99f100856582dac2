//! The publishing half of the Redis backplane: a queue bounded by count and bytes, and one
//! connection that pipelines the publishes in the hub's order.
//!
//! Liveness is judged by progress, not by batch: Redis is declared unreachable only when it
//! owes a reply and nothing has moved for the whole `timeout`. Moving is a reply arriving, or
//! the socket taking bytes after it had no room (the other end took bytes in; bytes taken by
//! an empty send buffer prove nothing, so a link that silently stopped is still noticed while
//! publishes trickle in). A slow but live link (a throttled network, a busy Redis) keeps
//! taking bytes and answering, so it is never taken for a dead one, however large a message or
//! the pipeline; the bytes waiting for a reply are bounded ([`IN_FLIGHT_BYTES`]) and what does
//! not fit waits in the bounded queue, then is refused.
//!
//! With room history in Redis the same connection runs the history scripts
//! ([`history`](super::history)): publishes and reads alike, in the hub's order. The scripts
//! are loaded (`SCRIPT LOAD`) on every new connection before anything else; a `NOSCRIPT`
//! answer (someone flushed Redis's script cache) gives the connection up, so the next one
//! loads them again (what was in flight is refused, as with any lost connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionInfo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::resp::{self, Reply};
use crate::server::backplane::Done;
use crate::server::counters::Counters;

/// Bytes written to Redis (or about to be) whose reply has not come, at most (one publish
/// always goes, whatever its size).
pub(super) const IN_FLIGHT_BYTES: usize = 1024 * 1024;
/// Publishes written to Redis whose reply has not come, at most.
const IN_FLIGHT: usize = 4096;

/// One publish (or history read), packed.
pub(super) struct Publish {
    pub(super) command: Vec<u8>,
    pub(super) done: Option<Answer>,
}

/// Who is told Redis's answer to a command.
pub(super) enum Answer {
    /// Only whether it was taken.
    Done(Done),
    /// The reply itself (a Redis error reply is an `Err`).
    Reply(Box<dyn FnOnce(Result<Reply, String>) + Send>),
}

impl Answer {
    pub(super) fn tell(self, reply: Result<Reply, String>) {
        match self {
            Answer::Done(done) => done(reply.and_then(|r| match r {
                Reply::Error(e) => Err(format!("Redis refused the publish: {e}")),
                _ => Ok(()),
            })),
            Answer::Reply(tell) => tell(reply.and_then(|r| match r {
                Reply::Error(e) => Err(format!("Redis refused the command: {e}")),
                r => Ok(r),
            })),
        }
    }
}

/// The hub's end of the queue: refuses at once what does not fit, by count or by bytes.
pub(super) struct Queue {
    tx: mpsc::Sender<Publish>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Queue {
    /// Offer `publish`; a full queue tells its `done` why, at once.
    pub(super) fn submit(&self, publish: Publish) {
        let len = publish.command.len();
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return fail(
                publish,
                &format!(
                    "{before} bytes of publishes are waiting for Redis already (the limit is {})",
                    self.max_bytes
                ),
            );
        }
        if let Err(e) = self.tx.try_send(publish) {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            let (publish, why) = match e {
                mpsc::error::TrySendError::Full(p) => (
                    p,
                    format!(
                        "{} publishes are waiting for Redis already",
                        self.tx.max_capacity()
                    ),
                ),
                mpsc::error::TrySendError::Closed(p) => (p, "the Redis task has stopped".into()),
            };
            fail(publish, &why);
        }
    }
}

fn fail(publish: Publish, why: &str) {
    if let Some(done) = publish.done {
        done.tell(Err(why.to_owned()));
    }
}

/// The publishing task: connects, pipelines, and while Redis is unreachable refuses at once.
pub(super) struct Publisher {
    pub(super) info: ConnectionInfo,
    pub(super) url: String,
    pub(super) timeout: Duration,
    pub(super) probe_every: Duration,
    pub(super) counters: Arc<Counters>,
    rx: mpsc::Receiver<Publish>,
    bytes: Arc<AtomicUsize>,
    /// With history in Redis: the scripts to load on each connection, the largest string and
    /// the most elements of a reply.
    history: Option<(Vec<String>, usize, usize)>,
}

/// Why [`Publisher::serve`] returned.
enum Ended {
    /// The hub is gone.
    Stopped,
    /// The connection failed; the reason in words.
    Lost(String),
}

impl Publisher {
    /// A queue of `count` publishes and `bytes` bytes, and the task that drains it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        info: ConnectionInfo,
        url: String,
        timeout: Duration,
        probe_every: Duration,
        counters: Arc<Counters>,
        count: usize,
        bytes: usize,
    ) -> (Queue, Publisher) {
        let (tx, rx) = mpsc::channel(count);
        let used = Arc::new(AtomicUsize::new(0));
        let queue = Queue {
            tx,
            bytes: used.clone(),
            max_bytes: bytes,
        };
        let task = Publisher {
            info,
            url,
            timeout,
            probe_every,
            counters,
            rx,
            bytes: used,
            history: None,
        };
        (queue, task)
    }

    /// Run `scripts` (presence, and history when Redis keeps it): loaded on each connection,
    /// answering replies of up to `limit` bytes per string and `max_array` elements.
    pub(super) fn with_scripts(
        mut self,
        scripts: Vec<String>,
        limit: usize,
        max_array: usize,
    ) -> Self {
        self.history = Some((scripts, limit, max_array));
        self
    }

    /// Connect, then load the history scripts (if any); owns what it needs, so that the
    /// queue can be served while it runs.
    fn link(
        &self,
    ) -> impl std::future::Future<Output = Result<(resp::Reader, resp::Writer), String>> {
        let (info, timeout, history) = (self.info.clone(), self.timeout, self.history.clone());
        async move {
            let limit = history.as_ref().map_or(1024, |h| h.1);
            let (mut reader, mut writer) = resp::connect(&info, limit, timeout).await?;
            let Some((scripts, _, max_array)) = history else {
                return Ok((reader, writer));
            };
            reader.max_array(max_array);
            let load = async {
                for script in &scripts {
                    let command = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(script)
                        .get_packed_command();
                    writer
                        .write_all(&command)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Reply::Error(e) = reader.next().await.map_err(|e| e.to_string())? {
                        return Err(format!("Redis refused to load the scripts: {e}"));
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(timeout, load).await {
                Ok(Ok(())) => Ok((reader, writer)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("the scripts were not loaded within {timeout:?}")),
            }
        }
    }

    /// Run until the hub is gone.
    pub(super) async fn run(mut self) {
        // Whether Redis has been found unreachable (publishes are then refused at once, also
        // while a new connection is tried); before the first attempt they wait for it.
        let mut down = false;
        loop {
            let link = match self.connect(down).await {
                Some(link) => link,
                None => return,
            };
            let (reader, writer) = match link {
                Ok(link) => link,
                Err(e) => {
                    if !down {
                        tracing::warn!(
                            "cannot publish to Redis at {}: {e}; publishes get \
                             backplane_unavailable until it is back",
                            self.url
                        );
                        down = true;
                    }
                    if !self.refuse_until(Instant::now() + self.probe_every).await {
                        return;
                    }
                    continue;
                }
            };
            if std::mem::take(&mut down) {
                tracing::info!("publishing to Redis at {} again", self.url);
            }
            match self.serve(reader, writer).await {
                Ended::Stopped => return,
                Ended::Lost(why) => {
                    self.counters
                        .backplane_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "lost the Redis connection for publishing ({why}); publishes get \
                         backplane_unavailable until it is back"
                    );
                    down = true;
                }
            }
        }
    }

    /// Try a connection; while `refusing`, publishes meanwhile are refused at once. `None`
    /// when the hub is gone.
    async fn connect(
        &mut self,
        refusing: bool,
    ) -> Option<Result<(resp::Reader, resp::Writer), String>> {
        let connecting = self.link();
        tokio::pin!(connecting);
        let why = format!("Redis at {} is unreachable", self.url);
        loop {
            tokio::select! {
                link = &mut connecting => return Some(link),
                publish = self.rx.recv(), if refusing => match publish {
                    Some(publish) => {
                        self.take(&publish);
                        fail(publish, &why);
                    }
                    None => return None,
                },
            }
        }
    }

    fn take(&self, publish: &Publish) {
        self.bytes
            .fetch_sub(publish.command.len(), Ordering::AcqRel);
    }

    /// While Redis is unreachable: refuse every publish at once until `until`. `false` when
    /// the hub is gone.
    async fn refuse_until(&mut self, until: Instant) -> bool {
        let why = format!("Redis at {} is unreachable", self.url);
        loop {
            tokio::select! {
                publish = self.rx.recv() => match publish {
                    Some(publish) => {
                        self.take(&publish);
                        fail(publish, &why);
                    }
                    None => return false,
                },
                _ = tokio::time::sleep_until(until) => return true,
            }
        }
    }

    /// Pipeline publishes on one connection until it fails or the hub is gone.
    async fn serve(&mut self, mut reader: resp::Reader, mut writer: resp::Writer) -> Ended {
        let mut pipe = Pipeline::default();
        let mut moved = Instant::now();
        // Whether the socket had no room since bytes were last written (see the module docs).
        let waited = std::sync::atomic::AtomicBool::new(false);
        let ended = loop {
            let owed = !pipe.in_flight.is_empty();
            tokio::select! {
                biased;
                reply = reader.next() => match reply.map_err(|e| e.to_string()).and_then(|r| pipe.answer(r)) {
                    Ok(()) => moved = Instant::now(),
                    Err(why) => break Ended::Lost(why),
                },
                n = writer.write(pipe.unwritten(), &waited), if !pipe.unwritten().is_empty() => match n {
                    Ok(0) => break Ended::Lost("Redis stopped reading".into()),
                    Ok(n) => {
                        if waited.swap(false, Ordering::Relaxed) {
                            moved = Instant::now();
                        }
                        pipe.wrote(n);
                    }
                    Err(e) => break Ended::Lost(e.to_string()),
                },
                publish = self.rx.recv(), if pipe.has_room() => {
                    let Some(mut publish) = publish else { break Ended::Stopped };
                    if !owed {
                        // The clock runs from the first thing Redis owes us.
                        moved = Instant::now();
                    }
                    loop {
                        self.take(&publish);
                        pipe.push(publish);
                        if !pipe.has_room() {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(next) => publish = next,
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(moved + self.timeout), if owed => {
                    break Ended::Lost(format!(
                        "nothing moved for {:?} with {} publishes unanswered",
                        self.timeout,
                        pipe.in_flight.len()
                    ));
                }
            }
        };
        writer.abandon();
        if let Ended::Lost(why) = &ended {
            pipe.fail(&format!("Redis did not take the publish: {why}"));
        }
        ended
    }
}

/// The publishes of one connection: bytes still to write, and what awaits a reply, in order.
#[derive(Default)]
struct Pipeline {
    /// Written (or to be written) and not yet answered: (bytes, done).
    in_flight: VecDeque<(usize, Option<Answer>)>,
    in_flight_bytes: usize,
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
}

impl Pipeline {
    /// Whether another publish may go out before replies come (one always may).
    fn has_room(&self) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < IN_FLIGHT && self.in_flight_bytes < IN_FLIGHT_BYTES)
    }

    fn push(&mut self, mut publish: Publish) {
        let len = publish.command.len();
        self.out.extend_from_slice(&publish.command);
        self.in_flight.push_back((len, publish.done.take()));
        self.in_flight_bytes += len;
    }

    fn unwritten(&self) -> &[u8] {
        &self.out[self.written..]
    }

    fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }

    /// Redis answered the oldest publish.
    fn answer(&mut self, reply: Reply) -> Result<(), String> {
        let Some((len, done)) = self.in_flight.pop_front() else {
            return Err("Redis answered a command that was not sent".into());
        };
        self.in_flight_bytes -= len;
        let noscript = matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT"));
        if let Some(done) = done {
            done.tell(Ok(reply));
        }
        if noscript {
            return Err("Redis lost the history scripts (NOSCRIPT); loading them again".into());
        }
        Ok(())
    }

    /// The connection is given up: every publish awaiting a reply is told `why`.
    fn fail(self, why: &str) {
        for (_, done) in self.in_flight {
            if let Some(done) = done {
                done.tell(Err(why.to_owned()));
            }
        }
    }
}
