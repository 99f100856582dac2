//! Room history kept in Redis, so that a client recovers on whichever node it reconnects to.
//!
//! Two keys per room, hash-tagged by the room so that a Redis Cluster keeps them on one slot:
//! `<prefix>{<room>}:meta` (a hash: `epoch`, `offset`) and `<prefix>{<room>}:stream` (a stream
//! whose entry ids are `<offset>-0`, each with the field `d` holding the frame). Two Lua
//! scripts, loaded on every publishing connection (`SCRIPT LOAD`) and run by `EVALSHA`:
//!
//! - [`PUBLISH_SCRIPT`], one per publish: gives the room an epoch if it has none, takes the
//!   next offset (`HINCRBY`), completes the frame the hub sent without its closing `}` with
//!   `,"offset":N,"epoch":"X"}`, appends it to the stream (`XADD MAXLEN ~ size`), sets both
//!   keys' TTL and `PUBLISH`es `<header> <offset>\n<frame>`. A script runs atomically, so the
//!   offset order is the order in which every subscribed node receives the publications.
//! - [`READ_SCRIPT`]: the position, and the publications a recovery or a `history` request
//!   asks for, in one atomic read.
//!
//! `size` and `ttl` bound the Redis history (the trim is approximate: Redis trims whole
//! stream nodes, so a little more than `size` may be kept); `max_bytes` and `total_bytes` do
//! not apply there (Redis's own `maxmemory` does).

use bytestring::ByteString;
use sha1::{Digest, Sha1};

use super::resp::{self, Reply};
use crate::config::HistoryConfig;
use crate::server::backplane::{Position, StreamQuery, StreamRead};

/// A new epoch when the room has none (ARGV[6] is a random prefix of this node; TIME makes it
/// differ from any earlier epoch of the room). Shared by both scripts.
const NEW_EPOCH: &str = r#"
local function position(meta, stream, ttl, seed)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch, tonumber(redis.call('HGET', meta, 'offset') or '0')
  end
  local t = redis.call('TIME')
  epoch = seed .. t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', meta, ttl)
  return epoch, 0
end
"#;

/// KEYS: meta, stream. ARGV: channel, header, open frame, size, ttl (ms), epoch seed.
///
/// One publisher's order is kept here, atomically with the offset: the meta hash remembers,
/// per publishing node (`p:<node>`), its incarnation and the last sequence number it took; a
/// publish that is not newer (the late tail of a connection the node gave up, run by Redis after
/// what the node's new connection sent) is refused (answer -1) before it gets an offset, so it
/// reaches no node and no stream, where a later gap fill would hand it out of its publisher's
/// order.
const PUBLISH_BODY: &str = r#"
local node, inc, seq = string.match(ARGV[2], '^(%S+) (%S+) (%d+)$')
if node then
  local field = 'p:' .. node
  local last = redis.call('HGET', KEYS[1], field)
  if last then
    local last_inc, last_seq = string.match(last, '^(%S+) (%d+)$')
    if last_inc == inc and tonumber(seq) <= tonumber(last_seq) then
      return -1
    end
  end
end
local epoch = position(KEYS[1], KEYS[2], ARGV[5], ARGV[6])
if node then
  redis.call('HSET', KEYS[1], 'p:' .. node, inc .. ' ' .. seq)
end
local n = string.format('%d', redis.call('HINCRBY', KEYS[1], 'offset', 1))
local frame = ARGV[3] .. ',"offset":' .. n .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], n .. '-0', 'd', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. n .. '\n' .. frame)
return tonumber(n)
"#;

/// KEYS: meta, stream. ARGV: mode (`r` recover, `h` history), since epoch, since offset (or
/// empty), limit, ttl (ms), epoch seed. Answers `{epoch, offset, first, frame...}`.
const READ_BODY: &str = r#"
local epoch, offset = position(KEYS[1], KEYS[2], ARGV[5], ARGV[6])
local after, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local same = after ~= nil and ARGV[2] == epoch and after <= offset
local entries = {}
local function from(o)
  return redis.call('XRANGE', KEYS[2], string.format('%d', o + 1) .. '-0', '+', 'COUNT', limit)
end
if ARGV[1] == 'r' then
  if same and after < offset and offset - after <= limit then entries = from(after) end
elseif limit > 0 then
  if same then
    entries = from(after)
  else
    local rev = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end
  end
end
local out = {epoch, string.format('%d', offset), '0'}
if #entries > 0 then out[3] = string.match(entries[1][1], '^(%d+)') end
for _, e in ipairs(entries) do out[#out + 1] = e[2][2] end
return out
"#;

/// The publish script's source (see the module docs).
pub(super) fn publish_script() -> String {
    format!("{NEW_EPOCH}{PUBLISH_BODY}")
}

/// The read script's source (see the module docs).
pub(super) fn read_script() -> String {
    format!("{NEW_EPOCH}{READ_BODY}")
}

/// The history side of a started backplane: the scripts' names and the bounds.
pub(super) struct Scripts {
    publish_sha: String,
    read_sha: String,
    size: String,
    ttl_ms: String,
    /// Makes this node's epochs differ from another node's made in the same microsecond.
    seed: String,
    limit: usize,
}

/// The SHA-1 of `script` in hex, as `SCRIPT LOAD` answers and `EVALSHA` takes it.
pub(super) fn sha(script: &str) -> String {
    Sha1::digest(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Scripts {
    /// The scripts for history bounded by `config`.
    pub(super) fn new(config: &HistoryConfig) -> Self {
        Self {
            publish_sha: sha(&publish_script()),
            read_sha: sha(&read_script()),
            size: config.size.max(1).to_string(),
            ttl_ms: config
                .ttl
                .as_millis()
                .clamp(1, i64::MAX as u128)
                .to_string(),
            seed: format!("{:08x}-", fastrand::u32(..)),
            limit: config.recover_limit,
        }
    }

    /// Most publications one read answers (`recover_limit`).
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// `EVALSHA` of the publish script for `frame` (the envelope without its closing `}`),
    /// packed in one allocation: the hub's thread runs this for every publish.
    pub(super) fn publish(&self, prefix: &str, room: &str, header: &[u8], frame: &str) -> Vec<u8> {
        let meta = key(prefix, room, "meta");
        let stream = key(prefix, room, "stream");
        let channel = format!("{prefix}{room}");
        resp::pack(&[
            b"EVALSHA",
            self.publish_sha.as_bytes(),
            b"2",
            meta.as_bytes(),
            stream.as_bytes(),
            channel.as_bytes(),
            header,
            frame.as_bytes(),
            self.size.as_bytes(),
            self.ttl_ms.as_bytes(),
            self.seed.as_bytes(),
        ])
    }

    /// `EVALSHA` of the read script for `query`.
    pub(super) fn read(&self, prefix: &str, room: &str, query: &StreamQuery) -> Vec<u8> {
        let (mode, since, limit) = match query {
            StreamQuery::Join { since, limit } => ("r", since, limit),
            StreamQuery::History { since, limit } => ("h", since, limit),
        };
        let (epoch, after) = since
            .as_ref()
            .map_or((String::new(), String::new()), |p: &Position| {
                (p.epoch.clone(), p.offset.to_string())
            });
        redis::cmd("EVALSHA")
            .arg(&self.read_sha)
            .arg(2)
            .arg(key(prefix, room, "meta"))
            .arg(key(prefix, room, "stream"))
            .arg(mode)
            .arg(epoch)
            .arg(after)
            .arg((*limit).min(self.limit))
            .arg(&self.ttl_ms)
            .arg(&self.seed)
            .get_packed_command()
    }
}

/// `<prefix>{<room>}:<what>`.
pub(super) fn key(prefix: &str, room: &str, what: &str) -> String {
    format!("{prefix}{{{room}}}:{what}")
}

/// The read script's answer as a [`StreamRead`].
pub(super) fn parse_read(reply: Reply) -> Result<StreamRead, String> {
    let bad = || format!("the history read script answered {reply:?}");
    let Reply::Array(parts) = &reply else {
        return Err(bad());
    };
    let text = |i: usize| {
        parts
            .get(i)
            .and_then(Reply::as_bytes)
            .and_then(|b| std::str::from_utf8(b).ok())
    };
    let number = |i: usize| text(i).and_then(|s| s.parse::<u64>().ok());
    let (Some(epoch), Some(offset), Some(first)) = (text(0), number(1), number(2)) else {
        return Err(bad());
    };
    let mut publications = Vec::with_capacity(parts.len().saturating_sub(3));
    for part in &parts[3..] {
        let frame = part.as_bytes().cloned().ok_or_else(bad)?;
        publications.push(ByteString::try_from(frame).map_err(|_| bad())?);
    }
    Ok(StreamRead {
        offset,
        epoch: epoch.to_owned(),
        first,
        publications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn scripts_are_named_by_their_sha1_as_redis_names_them() {
        assert_eq!(sha(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(key("wsm:room:", "a b", "meta"), "wsm:room:{a b}:meta");
    }

    #[test]
    fn reads_parse_or_say_why_not() {
        let bulk = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
        let read = parse_read(Reply::Array(vec![
            bulk("e1"),
            bulk("7"),
            bulk("6"),
            bulk("{\"offset\":6}"),
            bulk("{\"offset\":7}"),
        ]))
        .expect("a read");
        assert_eq!((read.offset, read.first, read.epoch.as_str()), (7, 6, "e1"));
        assert_eq!(read.publications.len(), 2);
        assert!(parse_read(Reply::Array(vec![bulk("e1"), bulk("x"), bulk("0")])).is_err());
        assert!(parse_read(Reply::Int(3)).is_err());
    }

    /// A real `redis-server` on a free port, stopped when dropped (`.ci/run` installs it).
    struct LocalRedis(std::process::Child, u16);

    impl LocalRedis {
        fn start() -> LocalRedis {
            use std::io::{BufRead, BufReader};
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("redis-server (apt-get install redis-server; .ci/run does)");
            let stdout = child.stdout.take().expect("its stdout");
            // Bounded: redis-server prints a few dozen lines before it is ready.
            let ready = BufReader::new(stdout)
                .lines()
                .take(200)
                .map_while(Result::ok)
                .any(|l| l.contains("Ready to accept connections"));
            assert!(ready, "redis-server did not get ready on port {port}");
            LocalRedis(child, port)
        }
    }

    impl Drop for LocalRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// One publisher's order is kept in Redis: a publish of a node's incarnation that is not
    /// newer than the last one taken (the late tail of a connection the node gave up) is refused
    /// before it gets an offset, and reaches neither the stream nor the channel; a new
    /// incarnation (a restart) starts afresh.
    #[test]
    fn a_late_publish_is_refused_before_it_gets_an_offset() {
        let redis = LocalRedis::start();
        let client =
            ::redis::Client::open(format!("redis://127.0.0.1:{}", redis.1)).expect("a Redis URL");
        let mut conn = client.get_connection().expect("a connection");
        let script = publish_script();
        let mut publish = |header: &str, n: u32| -> i64 {
            ::redis::cmd("EVAL")
                .arg(&script)
                .arg(2)
                .arg("p{r}:meta")
                .arg("p{r}:stream")
                .arg("p:r")
                .arg(header)
                .arg(format!(r#"{{"type":"message","data":{n}"#))
                .arg(100)
                .arg(60_000)
                .arg("seed")
                .query(&mut conn)
                .expect("the publish script runs")
        };
        assert_eq!(publish("a inc1 1", 1), 1);
        assert_eq!(publish("a inc1 2", 2), 2);
        assert_eq!(publish("b x 1", 3), 3, "another node has its own order");
        assert_eq!(publish("a inc1 2", 4), -1, "a repeat");
        assert_eq!(publish("a inc1 1", 5), -1, "a late tail");
        assert_eq!(publish("a inc1 3", 6), 4);
        assert_eq!(publish("a inc2 1", 7), 5, "a restarted node");
        let mut conn = client.get_connection().expect("a connection");
        let len: u64 = ::redis::cmd("XLEN")
            .arg("p{r}:stream")
            .query(&mut conn)
            .expect("XLEN");
        assert_eq!(len, 5, "refused publishes are not in the stream");
    }
}
