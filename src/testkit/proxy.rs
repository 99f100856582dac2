//! [`FaultProxy`]: a TCP proxy with faults on command.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the bytes of every connection, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward at once.
    Pass,
    /// Forward each chunk this much later (order kept).
    Delay(Duration),
    /// Forward at most this many bytes per second, each way.
    Throttle(u64),
    /// Forward nothing and read nothing: both sockets stay open and TCP holds the data, as on a
    /// link that silently stopped carrying packets. [`Fault::Pass`] lets it through again.
    Blackhole,
}

/// Controls shared by the proxy and its connections.
#[derive(Debug)]
struct Controls {
    fault: watch::Sender<Fault>,
    /// Bumped by [`FaultProxy::reset`]; every live connection resets when it changes.
    resets: watch::Sender<u64>,
    refuse: AtomicBool,
    up: AtomicU64,
    down: AtomicU64,
    accepted: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of `target`, with faults on command (see the
/// [module docs](crate::testkit)). Every control takes effect at once, on live connections and new ones,
/// and may be called from any thread. Dropping the proxy stops accepting; live connections end
/// with it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    controls: Arc<Controls>,
    accept: actix_rt::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port) and forward every connection to `target`. Must be
    /// called inside an actix (or tokio current-thread) runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let controls = Arc::new(Controls {
            fault: watch::Sender::new(Fault::Pass),
            resets: watch::Sender::new(0),
            refuse: AtomicBool::new(false),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let shared = controls.clone();
        let accept = actix_rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.refuse.load(Ordering::Acquire) {
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    continue; // dropped with linger 0: the client sees a reset
                }
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let controls = shared.clone();
                actix_rt::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, controls).await;
                    }
                });
            }
        });
        Ok(FaultProxy {
            addr,
            controls,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Forward at once (the default; heals every other fault).
    pub fn pass(&self) {
        self.controls.fault.send_replace(Fault::Pass);
    }

    /// Forward every chunk `delay` later.
    pub fn delay(&self, delay: Duration) {
        self.controls.fault.send_replace(Fault::Delay(delay));
    }

    /// Forward at most `bytes_per_second` each way (at least 1).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.controls
            .fault
            .send_replace(Fault::Throttle(bytes_per_second.max(1)));
    }

    /// Forward nothing, keep every socket open (see [`Fault::Blackhole`]).
    pub fn blackhole(&self) {
        self.controls.fault.send_replace(Fault::Blackhole);
    }

    /// Reset (RST) every live connection.
    pub fn reset(&self) {
        self.controls.resets.send_modify(|n| *n += 1);
    }

    /// Refuse (reset at once) new connections while `refuse` is true.
    pub fn refuse(&self, refuse: bool) {
        self.controls.refuse.store(refuse, Ordering::Release);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.controls.fault.borrow()
    }

    /// Bytes forwarded from clients to the server so far.
    pub fn bytes_up(&self) -> u64 {
        self.controls.up.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from the server to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.controls.down.load(Ordering::Relaxed)
    }

    /// Connections accepted (and not refused) so far.
    pub fn connections(&self) -> u64 {
        self.controls.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relay one connection both ways until either side ends or a reset is ordered.
async fn relay(mut client: TcpStream, mut server: TcpStream, controls: Arc<Controls>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = controls.resets.subscribe();
    resets.mark_unchanged();
    let reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, &controls, true);
        let down = pump(server_read, client_write, &controls, false);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            changed = resets.changed() => changed.is_ok(),
        }
    };
    if reset {
        // Linger 0: closing sends RST, as a crashed middlebox would.
        for sock in [&client, &server] {
            let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Copy `from` to `to` under the fault in force. `up` says which counter to add to.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    controls: &Controls,
    up: bool,
) {
    let counter = if up { &controls.up } else { &controls.down };
    let mut faults = controls.fault.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // In a blackhole nothing is read, so TCP holds everything back.
        while *faults.borrow_and_update() == Fault::Blackhole {
            if faults.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            let fault = *faults.borrow_and_update();
            let end = match fault {
                Fault::Pass => n,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    n
                }
                Fault::Throttle(rate) => {
                    // Slices of about 1/20 s worth, each followed by its time.
                    let slice = (rate / 20).max(1) as usize;
                    let end = (sent + slice).min(n);
                    let secs = (end - sent) as f64 / rate as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    end
                }
                Fault::Blackhole => {
                    if faults.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if to.write_all(&buf[sent..end]).await.is_err() {
                return;
            }
            counter.fetch_add((end - sent) as u64, Ordering::Relaxed);
            sent = end;
        }
    }
}
