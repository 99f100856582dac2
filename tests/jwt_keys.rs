//! JWT keys end to end (issue 21): RS256 with a PEM public key and with a JWKS document (keys
//! chosen by `kid`) and ES256, through the library and through `wsm serve --jwt-*`; audience
//! and issuer checks; and a flood of bad tokens from one address, which costs no session slot
//! and no per-address count. Helpers: `tests/common/jwt.rs`; the client side is tests/jwt.rs.

mod common;

use actix_ws_manager::config::JwtConfig;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use common::jwt::*;
use common::{test_config, WAIT};

// ---------------------------------------------------------------------------------------------
// Keys: RS256 (PEM and JWKS), ES256

/// What one token is expected to do.
enum Expect {
    /// Connect, with this identity.
    Connects(&'static str),
    /// HTTP 401 whose one-line body contains this.
    Refused(&'static str),
}

/// Run each case against the rooms endpoint at `url`.
async fn check_cases(url: &str, cases: &[(&str, String, Expect)]) {
    let addr = addr_of(url);
    for (label, token, expect) in cases {
        match expect {
            Expect::Connects(sub) => {
                let (mut peer, _) = assert_connects(url, token, sub).await;
                let _ = peer.framed.close().await;
            }
            Expect::Refused(cause) => {
                assert_refused(label, addr, Some(token), cause).await;
            }
        }
    }
}

/// The RS256 cases of a server with the rsa1 public key alone: rsa1 connects (with or without
/// a `kid`), rsa2 and an HS256 token are refused.
fn rsa_pem_cases() -> Vec<(&'static str, String, Expect)> {
    vec![
        (
            "rsa1",
            rs("rsa1", None, &claims("alice", 60)),
            Expect::Connects("alice"),
        ),
        (
            "rsa1 with a kid",
            rs("rsa1", Some("anything"), &claims("bob", 60)),
            Expect::Connects("bob"),
        ),
        (
            "rsa2",
            rs("rsa2", None, &claims("eve", 60)),
            Expect::Refused("signature"),
        ),
        ("HS256", hs(&claims("eve", 60)), Expect::Refused("HS256")),
        (
            "expired",
            rs("rsa1", None, &claims("eve", -30)),
            Expect::Refused("expired"),
        ),
    ]
}

/// The cases of a server with `jwks.json` (key-1: rsa1, key-2: rsa2), audience `wsm` and
/// issuer `https://issuer.example`.
fn jwks_cases() -> Vec<(&'static str, String, Expect)> {
    let ok = |sub: &str| {
        claims_with(
            sub,
            60,
            json!({ "aud": "wsm", "iss": "https://issuer.example" }),
        )
    };
    vec![
        (
            "rsa1 key-1",
            rs("rsa1", Some("key-1"), &ok("alice")),
            Expect::Connects("alice"),
        ),
        (
            "rsa2 key-2",
            rs("rsa2", Some("key-2"), &ok("bob")),
            Expect::Connects("bob"),
        ),
        (
            "rsa2 named key-1",
            rs("rsa2", Some("key-1"), &ok("eve")),
            Expect::Refused("signature"),
        ),
        (
            "rsa1 named key-2",
            rs("rsa1", Some("key-2"), &ok("eve")),
            Expect::Refused("signature"),
        ),
        (
            "an unknown kid",
            rs("rsa1", Some("key-9"), &ok("eve")),
            Expect::Refused("key-9"),
        ),
        (
            "no kid",
            rs("rsa1", None, &ok("eve")),
            Expect::Refused("no kid"),
        ),
        (
            "no aud",
            rs(
                "rsa1",
                Some("key-1"),
                &claims_with("eve", 60, json!({ "iss": "https://issuer.example" })),
            ),
            Expect::Refused("no aud"),
        ),
        (
            "another audience",
            rs(
                "rsa1",
                Some("key-1"),
                &claims_with(
                    "eve",
                    60,
                    json!({ "aud": "other", "iss": "https://issuer.example" }),
                ),
            ),
            Expect::Refused("audience"),
        ),
        (
            "another issuer",
            rs(
                "rsa2",
                Some("key-2"),
                &claims_with(
                    "eve",
                    60,
                    json!({ "aud": "wsm", "iss": "https://evil.example" }),
                ),
            ),
            Expect::Refused("issuer"),
        ),
    ]
}

/// The ES256 cases of a server with `ec_public.pem`: an ES256 token connects; an RS256 one is
/// refused for its algorithm.
fn ec_cases() -> Vec<(&'static str, String, Expect)> {
    vec![
        ("ES256", es(&claims("alice", 60)), Expect::Connects("alice")),
        (
            "RS256",
            rs("rsa1", None, &claims("eve", 60)),
            Expect::Refused("RS256"),
        ),
        (
            "ES256 expired",
            es(&claims("eve", -30)),
            Expect::Refused("expired"),
        ),
    ]
}

/// RS256 with a PEM public key, through the library (`JwtConfig::public_key_pem`): tokens
/// signed by the matching private key connect, with or without a `kid`; another key's
/// signature, an HS256 token and an expired token are refused with a one-line 401 naming why.
#[actix_rt::test]
async fn rs256_with_a_pem_public_key_through_the_library() {
    let jwt = JwtConfig::public_key_pem(fixture("rsa1_public.pem")).expect("RSA PEM");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &rsa_pem_cases()).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["signature"], 1, "{refusals:?}");
    assert_eq!(refusals["algorithm"], 1, "{refusals:?}");
    assert_eq!(refusals["expired"], 1, "{refusals:?}");
}

/// RS256 with a JWKS document of two keys, through the library (`JwtConfig::jwks`), with an
/// audience and an issuer: a token signed by rsa1 as key-1 and one signed by rsa2 as key-2 both
/// connect; rsa2's signature under kid key-1 (and the reverse), an unknown kid, no kid with
/// two keys, another audience, no audience and another issuer are each a one-line 401 naming
/// the cause.
#[actix_rt::test]
async fn rs256_with_a_jwks_document_through_the_library() {
    let jwt = JwtConfig::jwks(&fixture("jwks.json"))
        .expect("JWKS")
        .audience("wsm")
        .issuer("https://issuer.example");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &jwks_cases()).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["signature"], 2, "{refusals:?}");
    assert_eq!(refusals["unknown_key"], 2, "{refusals:?}");
    assert_eq!(refusals["audience"], 2, "{refusals:?}");
    assert_eq!(refusals["issuer"], 1, "{refusals:?}");
    assert_eq!(refusals.values().sum::<u64>(), 7, "{refusals:?}");
}

/// ES256 with an EC (P-256) PEM public key, through the library: an ES256 token connects; an
/// RS256 one is refused for its algorithm, an expired one for its expiry.
#[actix_rt::test]
async fn es256_with_an_ec_public_key_through_the_library() {
    let jwt = JwtConfig::public_key_pem(fixture("ec_public.pem")).expect("EC PEM");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &ec_cases()).await;
}

/// The same RS256 (PEM and JWKS, with `--jwt-audience` and `--jwt-issuer`) and ES256 cases
/// against the built `wsm serve --jwt-public-key-file` / `--jwt-jwks-file`.
#[cfg(unix)]
#[actix_rt::test]
async fn rs256_and_es256_through_wsm_serve() {
    let rsa = fixture_path("rsa1_public.pem");
    let (_child, url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--jwt-public-key-file", &rsa]);
    check_cases(&url, &rsa_pem_cases()).await;

    let jwks = fixture_path("jwks.json");
    let (_child, url) = common::spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--jwt-jwks-file",
        &jwks,
        "--jwt-audience",
        "wsm",
        "--jwt-issuer",
        "https://issuer.example",
    ]);
    check_cases(&url, &jwks_cases()).await;

    let ec = fixture_path("ec_public.pem");
    let (_child, url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--jwt-public-key-file", &ec]);
    check_cases(&url, &ec_cases()).await;
}

/// Audience and issuer checks through the library (HS256): the right `aud` (alone or in a
/// list) and `iss` connect; another audience, another issuer, and a token lacking `aud` or
/// `iss` are each a one-line 401 naming the claim, counted under `audience` or `issuer`.
#[actix_rt::test]
async fn audience_and_issuer_are_checked() {
    let jwt = hs_config().audience("wsm").issuer("https://issuer.example");
    let server = jwt_server(test_config(), jwt);
    let iss = "https://issuer.example";
    let token = |extra: Value| hs(&claims_with("alice", 60, extra));
    let cases = [
        (
            "right",
            token(json!({ "aud": "wsm", "iss": iss })),
            Expect::Connects("alice"),
        ),
        (
            "aud in a list",
            token(json!({ "aud": ["other", "wsm"], "iss": iss })),
            Expect::Connects("alice"),
        ),
        (
            "another audience",
            token(json!({ "aud": "other", "iss": iss })),
            Expect::Refused("audience"),
        ),
        (
            "another issuer",
            token(json!({ "aud": "wsm", "iss": "https://evil.example" })),
            Expect::Refused("issuer"),
        ),
        (
            "no aud",
            token(json!({ "iss": iss })),
            Expect::Refused("aud"),
        ),
        (
            "no iss",
            token(json!({ "aud": "wsm" })),
            Expect::Refused("iss"),
        ),
    ];
    check_cases(&server.url(), &cases).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["audience"], 2, "{refusals:?}");
    assert_eq!(refusals["issuer"], 2, "{refusals:?}");
    assert_eq!(refusals.values().sum::<u64>(), 4, "{refusals:?}");
}

// ---------------------------------------------------------------------------------------------
// A flood of bad tokens

/// A flood of bad tokens from one address costs no session slot and respects
/// `max_connections_per_ip`: with the limit at 3 and 3 valid sessions open, 300 upgrades with
/// bad tokens (20 at a time; missing, malformed, badly signed and expired, 75 each) are every
/// one a 401 (none a 429), the server holds 3 sessions throughout, and each refusal is counted
/// under its reason with no per-address refusal; a 4th valid token then gets 429, and once a
/// valid session closes a new one connects (its slot was released).
#[actix_rt::test]
async fn a_flood_of_bad_tokens_costs_no_slot_and_respects_the_per_address_limit() {
    const FLOOD: usize = 300;
    const AT_ONCE: usize = 20;
    let config = test_config().max_connections_per_ip(Some(3));
    let server = jwt_server(config, hs_config());
    let rooms = server.rooms().expect("running").clone();
    let addr = server.addr();

    let mut valid = Vec::new();
    for i in 0..3 {
        let token = hs(&claims(&format!("user-{i}"), 60));
        let up = upgrade(addr, "/ws", Some(&token)).await;
        assert_eq!(up.status, 101, "valid session {i}: {}", up.head);
        valid.push(up.tcp);
    }
    assert_eq!(rooms.metrics().sessions, 3);

    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another secret"),
        &claims("eve", 60),
    );
    let expired = hs(&claims("eve", -30));
    let bad: [(&str, Option<&str>, &str); 4] = [
        ("missing", None, "no token"),
        ("malformed", Some("not.a-jwt"), "not a JWT"),
        ("signature", Some(&forged), "signature"),
        ("expired", Some(&expired), "expired"),
    ];
    let statuses: Vec<(u16, String, usize)> = futures_util::stream::iter(0..FLOOD)
        .map(|i| {
            let (_, token, cause) = bad[i % bad.len()];
            let rooms = rooms.clone();
            async move {
                let up = upgrade(addr, "/ws", token).await;
                assert_one_line(&up.body, cause);
                (up.status, up.body, rooms.metrics().sessions)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    assert_eq!(statuses.len(), FLOOD);
    for (status, body, sessions) in &statuses {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(*sessions, 3, "a bad token took a slot");
    }
    assert_refusals_counted(&rooms, &bad, FLOOD);

    // A 4th valid token from the same address: the per-address limit, now.
    let fourth = hs(&claims("user-3", 60));
    let up = upgrade(addr, "/ws", Some(&fourth)).await;
    assert_eq!(up.status, 429, "{}{}", up.head, up.body);
    assert_eq!(rooms.metrics().per_ip_refusals, 1);

    // One valid session goes: its slot is released and a new valid token gets it.
    drop(valid.pop());
    assert!(
        rooms.wait_sessions(2, WAIT).await,
        "the closed session's slot"
    );
    let up = upgrade(addr, "/ws", Some(&fourth)).await;
    assert_eq!(up.status, 101, "{}{}", up.head, up.body);
    valid.push(up.tcp);
    assert_eq!(rooms.metrics().sessions, 3);
    assert_eq!(
        rooms.metrics().auth_refusals.values().sum::<u64>(),
        FLOOD as u64
    );
}

/// After `flood` bad tokens spread evenly over `bad`'s causes: still 3 sessions, no per-address
/// refusal, and each cause counted under its reason, nothing else.
fn assert_refusals_counted(
    rooms: &actix_ws_manager::server::Rooms,
    bad: &[(&str, Option<&str>, &str)],
    flood: usize,
) {
    let metrics = rooms.metrics();
    assert_eq!(metrics.sessions, 3);
    assert_eq!(metrics.per_ip_refusals, 0);
    for (reason, _, _) in bad {
        assert_eq!(
            metrics.auth_refusals[*reason],
            (flood / bad.len()) as u64,
            "{reason}: {:?}",
            metrics.auth_refusals
        );
    }
    assert_eq!(
        metrics.auth_refusals.values().sum::<u64>(),
        flood as u64,
        "{:?}",
        metrics.auth_refusals
    );
}
