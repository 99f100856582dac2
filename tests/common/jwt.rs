//! JWT test helpers (tests/jwt.rs, tests/jwt_keys.rs): tokens signed with `jsonwebtoken` and
//! the keys of `tests/fixtures/jwt`, JWT servers, and a raw upgrade that reads the HTTP answer
//! (status, `WWW-Authenticate`, one-line body) of a refused token.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_ws_manager::config::JwtConfig;
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{test_config, Peer, WAIT};

/// The HS256 secret of the library servers.
pub const SECRET: &[u8] = b"a test secret that is long enough for HS256";

// ---------------------------------------------------------------------------------------------
// Tokens and keys

/// A fixture of `tests/fixtures/jwt`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The path of a fixture, for `wsm serve --jwt-*-file`.
pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub` expiring `ttl` seconds from now (negative: in the past).
pub fn claims(sub: &str, ttl: i64) -> Value {
    let exp = now_secs().saturating_add_signed(ttl);
    json!({ "sub": sub, "exp": exp })
}

/// `claims` with more fields.
pub fn claims_with(sub: &str, ttl: i64, extra: Value) -> Value {
    let mut c = claims(sub, ttl);
    for (k, v) in extra.as_object().expect("an object") {
        c[k] = v.clone();
    }
    c
}

/// A token of `claims` signed with `alg` and `key`, `kid` in its header.
pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign a token")
}

/// An HS256 token with [`SECRET`].
pub fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        claims,
    )
}

/// An RS256 token signed with the fixture's private key `rsa1` or `rsa2`.
pub fn rs(private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(&format!("{private}_private.pem"));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA private key");
    sign(Algorithm::RS256, kid, &key, claims)
}

/// An ES256 token signed with the fixture's EC private key.
pub fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).expect("EC key");
    sign(Algorithm::ES256, None, &key, claims)
}

/// An HS256 configuration with [`SECRET`].
pub fn hs_config() -> JwtConfig {
    JwtConfig::hs256(SECRET).expect("HS256 config")
}

/// A rooms server (restartable, same port) that requires tokens checked with `jwt`.
pub fn jwt_server(config: actix_ws_manager::config::ServerConfig, jwt: JwtConfig) -> TestServer {
    TestServer::start_with(move || Ok(Rooms::start(config.clone())?.with_jwt(jwt.clone())))
        .expect("server starts")
}

// ---------------------------------------------------------------------------------------------
// Upgrades by hand

/// What an upgrade request got: the status, the response head (lower-cased) and, for a refusal,
/// its body; for a 101 the open socket.
pub struct Upgrade {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub tcp: TcpStream,
}

/// Ask `addr` to upgrade `path`, with `Authorization: Bearer <token>` when a token is given.
/// A refusal's body is read to its `content-length` (or to the end of the connection).
pub async fn upgrade(addr: SocketAddr, path: &str, token: Option<&str>) -> Upgrade {
    let mut tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("tcp connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .expect("write the upgrade");
    let (status, head, mut rest) = response_head(&mut tcp).await;
    if status == 101 {
        return Upgrade {
            status,
            head,
            body: String::new(),
            tcp,
        };
    }
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let mut chunk = [0u8; 4096];
    // Bounded: the body is short, and each read waits at most WAIT.
    for _ in 0..1000 {
        if length.is_some_and(|n| rest.len() >= n) {
            break;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("the response body in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Upgrade {
        status,
        head,
        body: String::from_utf8_lossy(&rest).into_owned(),
        tcp,
    }
}

/// The status, the head (lowercased) and the bytes read past it, of an HTTP response.
pub async fn response_head(tcp: &mut TcpStream) -> (u16, String, Vec<u8>) {
    super::raw::response_head_text(tcp).await
}

/// The upgrade with `token` (the case `what`) is refused with 401, a `WWW-Authenticate: Bearer` header and a
/// one-line body that contains `cause`; answers the body.
pub async fn assert_refused(
    what: &str,
    addr: SocketAddr,
    token: Option<&str>,
    cause: &str,
) -> String {
    let up = upgrade(addr, "/ws", token).await;
    assert_eq!(
        up.status, 401,
        "{what}: expected 401 ({cause}): {}{}",
        up.head, up.body
    );
    assert!(
        up.head.contains("www-authenticate: bearer"),
        "no WWW-Authenticate: {}",
        up.head
    );
    assert_one_line(&up.body, cause);
    up.body
}

/// `body` is one non-empty line naming `cause`.
pub fn assert_one_line(body: &str, cause: &str) {
    assert!(!body.trim().is_empty(), "an empty 401 body");
    assert!(
        !body.contains('\n') && !body.contains('\r'),
        "the 401 body is not one line: {body:?}"
    );
    assert!(body.contains(cause), "{body:?} does not name {cause:?}");
}

/// A rooms session opened with `token` in the `Authorization` header (awc): the peer and its
/// welcome; the welcome's `identity` must be `sub`.
pub async fn assert_connects(url: &str, token: &str, sub: &str) -> (Peer, Value) {
    let (_resp, framed) = awc::Client::new()
        .ws(url)
        .bearer_auth(token)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the token for {sub} connects: {e}"));
    let mut peer = Peer { framed };
    let welcome = peer.json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["data"]["identity"], sub, "{welcome}");
    (peer, welcome)
}

/// `ws://127.0.0.1:PORT/ws` -> `127.0.0.1:PORT`.
pub fn addr_of(url: &str) -> SocketAddr {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    host.parse().expect("a socket address")
}
