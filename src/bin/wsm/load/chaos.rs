//! Chaos (`--chaos KIND@AT[:FOR]`, repeatable): faults injected while the load runs, at times
//! counted from the start of the measurement, so the report shows what they do to clients
//! (time until every connection is back, close codes, handshake failures, messages lost,
//! duplicated, reordered).
//!
//! - `restart@10s`: the embedded server (the `wsm serve` child) is killed and started again on
//!   its port.
//! - `blackhole@10s:3s`: the test kit's [`FaultProxy`], in front of the target (`--url` too),
//!   forwards nothing for 3 s (TCP holds the bytes, as a link that silently stopped carrying
//!   packets).
//! - `reset@10s`: the proxy resets (RST) every live connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_ws_manager::testkit::FaultProxy;
use actix_ws_manager::{Error, Result};

use super::args::{bad, LoadArgs};
use super::target::{self, Pem};
use crate::child::ChildServer;

/// What a chaos event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Restart,
    Blackhole(Duration),
    Reset,
}

/// One `--chaos` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// As given.
    pub(super) text: String,
    /// From the start of the measurement.
    pub(super) at: Duration,
    pub(super) fault: Fault,
}

impl Chaos {
    /// Whether the event needs the proxy in front of the target.
    pub(super) fn needs_proxy(&self) -> bool {
        matches!(self.fault, Fault::Blackhole(_) | Fault::Reset)
    }
}

/// Parse `KIND@AT[:FOR]`: clap's value parser for `--chaos`.
pub fn parse(text: &str) -> std::result::Result<Chaos, String> {
    let (kind, when) = text.split_once('@').ok_or_else(|| {
        format!("{text:?} is not KIND@TIME (restart@10s, blackhole@10s:3s, reset@10s)")
    })?;
    let (at, length) = match when.split_once(':') {
        Some((at, length)) => (at, Some(length)),
        None => (when, None),
    };
    let duration = |what: &str, s: &str| {
        humantime::parse_duration(s)
            .map_err(|e| format!("{text:?}: {what} {s:?} is not a duration ({e})"))
    };
    let at = duration("the time", at)?;
    let fault = match (kind, length) {
        ("restart", None) => Fault::Restart,
        ("reset", None) => Fault::Reset,
        ("blackhole", Some(l)) => Fault::Blackhole(duration("the length", l)?),
        ("blackhole", None) => {
            return Err(format!(
                "{text:?}: blackhole needs a length (blackhole@10s:3s)"
            ))
        }
        ("restart" | "reset", Some(_)) => return Err(format!("{text:?}: {kind} takes no length")),
        _ => {
            return Err(format!(
                "{text:?}: unknown fault {kind:?} (restart, blackhole, reset)"
            ))
        }
    };
    Ok(Chaos {
        text: text.to_owned(),
        at,
        fault,
    })
}

/// What the flags allow: restart needs the embedded server as a child process; the proxy
/// cannot stand in front of a `wss://` URL (the certificate names the host, not the proxy);
/// every event falls inside `--duration`.
pub(super) fn check(args: &LoadArgs) -> Result<()> {
    for c in &args.chaos {
        if c.fault == Fault::Restart && (args.url.is_some() || args.in_process) {
            return Err(bad(format!(
                "--chaos {} restarts the embedded server (a `wsm serve` child): not with --url \
                 or --in-process (use blackhole or reset, which work on any ws:// target)",
                c.text
            )));
        }
        if c.needs_proxy() && args.url.as_deref().is_some_and(|u| u.starts_with("wss:")) {
            return Err(bad(format!(
                "--chaos {} puts a proxy in front of the target, which a wss:// --url's \
                 certificate does not name",
                c.text
            )));
        }
        if c.at >= args.duration {
            return Err(bad(format!(
                "--chaos {} is not before the end of --duration {}",
                c.text,
                humantime::format_duration(args.duration)
            )));
        }
    }
    Ok(())
}

/// The embedded server child, shared with the injector that restarts it.
pub(super) type SharedChild = Arc<Mutex<Option<ChildServer>>>;

/// The faults of one run, and what they act on.
pub(super) struct Injector {
    events: Vec<Chaos>,
    proxy: Option<Arc<FaultProxy>>,
    child: SharedChild,
    /// How to start the child again: its flags, certificate and address.
    respawn: Option<(Vec<String>, Option<Pem>, SocketAddr)>,
    /// What happened, in words, for the report.
    log: Arc<Mutex<Vec<String>>>,
}

impl Injector {
    /// Set up `args.chaos` against `url`: a proxy in front of it when an event needs one.
    /// Answers the injector and the URL the connections use (the proxy's, or `url`).
    pub(super) async fn new(
        args: &LoadArgs,
        url: &str,
        child: SharedChild,
        pem: Option<Pem>,
    ) -> Result<(Injector, String)> {
        let target = *target::resolve(url)?
            .first()
            .ok_or_else(|| bad(format!("{url} has no address")))?;
        let mut load_url = url.to_owned();
        let proxy = if args.chaos.iter().any(Chaos::needs_proxy) {
            let p = FaultProxy::start(target).await?;
            load_url = with_authority(url, p.addr());
            Some(Arc::new(p))
        } else {
            None
        };
        let respawn = args
            .chaos
            .iter()
            .any(|c| c.fault == Fault::Restart)
            .then(|| (target::child_flags(args), pem, target));
        let injector = Injector {
            events: args.chaos.clone(),
            proxy,
            child,
            respawn,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        Ok((injector, load_url))
    }

    /// Run the events, each at its time from `started`, on a task of its own.
    pub(super) fn start(&self, started: Instant) {
        for event in self.events.clone() {
            let (proxy, child, log) = (self.proxy.clone(), self.child.clone(), self.log.clone());
            let respawn = self.respawn.clone();
            actix_rt::spawn(async move {
                tokio::time::sleep_until((started + event.at).into()).await;
                let said = match (event.fault, proxy, respawn) {
                    (Fault::Blackhole(length), Some(p), _) => {
                        p.blackhole();
                        tokio::time::sleep(length).await;
                        p.pass();
                        format!(
                            "{}: nothing forwarded for {}",
                            event.text,
                            humantime::format_duration(length)
                        )
                    }
                    (Fault::Reset, Some(p), _) => {
                        p.reset();
                        format!("{}: every connection reset", event.text)
                    }
                    (Fault::Restart, _, Some(how)) => restart(&event.text, child, how).await,
                    _ => format!("{}: not possible here", event.text),
                };
                lock(&log).push(said);
            });
        }
    }

    /// What happened, in words.
    pub(super) fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kill the child and start it again on its address (retrying for up to 5 s while the port
/// is released). Answers what happened, in words.
async fn restart(
    text: &str,
    child: SharedChild,
    (flags, pem, addr): (Vec<String>, Option<Pem>, SocketAddr),
) -> String {
    let t0 = Instant::now();
    let old = lock(&child).take();
    let started = actix_rt::task::spawn_blocking(move || {
        drop(old);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tls = pem.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            match ChildServer::spawn_on(&addr.to_string(), &flags, tls) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(e),
                // Nothing announces that the kernel released the port: retry, bounded.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .await
    .map_err(|e| Error::Config(e.to_string()))
    .and_then(|r| r);
    match started {
        Ok(c) => {
            *lock(&child) = Some(c);
            format!(
                "{text}: the server was killed and listened again after {:.2} s",
                t0.elapsed().as_secs_f64()
            )
        }
        Err(e) => format!("{text}: the server did not start again: {e}"),
    }
}

/// `url` with its host and port replaced by `addr`.
fn with_authority(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{addr}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind parses with its time (and length); bad ones are refused in words.
    #[test]
    fn chaos_parses() {
        assert_eq!(parse("restart@10s").unwrap().fault, Fault::Restart);
        let b = parse("blackhole@1500ms:3s").unwrap();
        assert_eq!(
            (b.at, b.fault),
            (
                Duration::from_millis(1500),
                Fault::Blackhole(Duration::from_secs(3))
            )
        );
        assert_eq!(parse("reset@2s").unwrap().at, Duration::from_secs(2));
        for (bad, says) in [
            ("restart", "KIND@TIME"),
            ("blackhole@1s", "needs a length"),
            ("reset@1s:2s", "takes no length"),
            ("flood@1s", "unknown fault"),
            ("restart@soon", "not a duration"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            with_authority(
                "ws://example.com:8080/ws?x=1",
                "127.0.0.1:9".parse().unwrap()
            ),
            "ws://127.0.0.1:9/ws?x=1"
        );
    }
}
