//! permessage-deflate on the crate's client, against a Python `websockets` server
//! (`tests/interop/deflate_peer.py`) with each combination of context takeover and window
//! bits the Python side can ask for, and bombs from the server ending with 1009.
#![cfg(unix)]

mod common;

use actix_ws_manager::client::{connect, Client, ConnectionState};
use actix_ws_manager::config::{ClientConfig, DeflateConfig};
use actix_ws_manager::testkit::FaultProxy;
use bytes::Bytes;
use common::python::DeflatePeer;
use common::{client_test_config, recv_within, wait_state, WAIT};

fn deflate(no_context_takeover: bool) -> ClientConfig {
    client_test_config()
        .max_message_size(4 << 20)
        .deflate(DeflateConfig {
            enabled: true,
            no_context_takeover,
            peer_no_context_takeover: no_context_takeover,
            ..DeflateConfig::default()
        })
}

/// About 2 KiB of market-data-like JSON.
fn feed(i: usize) -> String {
    let levels: Vec<String> = (0..30)
        .map(|k| {
            format!(
                r#"{{"px":"{:.2}","qty":"{}","n":{}}}"#,
                100.0 + k as f64 * 0.25,
                10 * (k + i % 7),
                k % 5
            )
        })
        .collect();
    format!(
        r#"{{"type":"book","data":{{"symbol":"BTC-USD","seq":{i},"bids":[{}]}}}}"#,
        levels.join(",")
    )
}

async fn connected(url: &str, config: ClientConfig) -> Client {
    let client = connect(url, config).expect("connect");
    let mut events = client.subscribe_events(64);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    client
}

/// Connect with `config`, ask which extension the server answered, and echo 30 feed messages
/// (text), short texts (sent plain) and a compressible binary message: each comes back
/// verbatim. Answers the server's extension header.
async fn echo_round(url: &str, config: ClientConfig) -> String {
    let client = connected(url, config).await;
    let mut texts = client.subscribe_text(64);
    let mut binaries = client.subscribe_binary(64);
    client.send_text("extensions?").await.expect("send");
    let ext = recv_within(&mut texts, WAIT, "the extension header")
        .await
        .data;
    for i in 0..30 {
        for message in [feed(i), format!("short {i}")] {
            client.send_text(message.clone()).await.expect("send");
            let got = recv_within(&mut texts, WAIT, "an echo").await.data;
            assert!(*got == *message, "echo {i} differs ({url}, {ext})");
        }
    }
    let binary = Bytes::from(feed(99).repeat(20).into_bytes());
    client.send_binary(binary.clone()).await.expect("send");
    let got = recv_within(&mut binaries, WAIT, "the binary echo")
        .await
        .data;
    assert!(got == binary, "binary echo differs ({ext})");
    assert_eq!(client.state(), ConnectionState::Connected, "{ext}");
    client.close().await;
    ext.to_string()
}

/// Every combination of context takeover and window bits a Python server can ask or allow,
/// with a client that asks for no context takeover (the default) and one that keeps context:
/// negotiated as asked, and every message round trips.
#[actix_rt::test]
async fn client_talks_deflate_with_every_python_server_setting() {
    let servers: [&[&str]; 8] = [
        &[],
        &["--server-no-context-takeover"],
        &["--client-no-context-takeover"],
        &[
            "--server-no-context-takeover",
            "--client-no-context-takeover",
        ],
        &["--server-max-window-bits", "9"],
        &[
            "--server-max-window-bits",
            "12",
            "--client-max-window-bits",
            "10",
        ],
        &["--client-max-window-bits", "9"],
        &["--client-max-window-bits", "8"],
    ];
    for args in servers {
        let peer = DeflatePeer::start(args);
        for reset in [true, false] {
            let ext = echo_round(&peer.url(), deflate(reset)).await;
            assert!(ext.starts_with("permessage-deflate"), "{args:?}: {ext}");
            if reset {
                assert!(
                    ext.contains("server_no_context_takeover"),
                    "{args:?}: {ext}"
                );
            }
            for pair in args.windows(2) {
                if let [flag, bits] = pair {
                    if flag.ends_with("window-bits") {
                        let param =
                            format!("{}={bits}", flag.trim_start_matches("--").replace('-', "_"));
                        assert!(ext.contains(&param), "{args:?}: {ext}");
                    }
                }
            }
        }
    }
}

/// The default config offers deflate (with no context takeover both ways); with
/// `DeflateConfig::off()` nothing is offered, and the same server answers none.
#[actix_rt::test]
async fn offered_by_default_and_not_when_off() {
    let peer = DeflatePeer::start(&[]);
    let ext = echo_round(&peer.url(), client_test_config()).await;
    assert_eq!(
        ext,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    let ext = echo_round(&peer.url(), plain()).await;
    assert_eq!(ext, "none");
}

fn plain() -> ClientConfig {
    client_test_config()
        .max_message_size(4 << 20)
        .deflate(DeflateConfig::off())
}

/// Bombs from the server: one message of 16 MiB of zeros, and one of 512 compressed fragments
/// of 64 KiB of zeros, each end the connection with 1009 at a 1 MiB limit.
#[actix_rt::test]
async fn server_bombs_end_with_1009() {
    let peer = DeflatePeer::start(&[]);
    for bomb in ["bomb", "bombs"] {
        let client = connected(&peer.url(), deflate(true).max_message_size(1 << 20)).await;
        let mut events = client.subscribe_events(64);
        client.send_text(bomb).await.expect("send");
        let state = wait_state(&mut events, "Disconnected", |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        assert!(
            matches!(state, ConnectionState::Disconnected { code: 1009, .. }),
            "{bomb}: {state:?}"
        );
        client.close().await;
    }
}

/// Through a `FaultProxy`: with deflate the client's messages and the echoes take far fewer
/// bytes on the wire than without (so the client really compresses, and the echoes really
/// come compressed), with context kept and without.
#[actix_rt::test]
async fn deflate_moves_fewer_bytes_both_ways() {
    let peer = DeflatePeer::start(&[]);
    let target = format!("127.0.0.1:{}", peer.port).parse().expect("address");
    let mut counts = Vec::new();
    for config in [deflate(true), deflate(false), plain()] {
        let proxy = FaultProxy::start(target).await.expect("proxy");
        echo_round(&proxy.url("/"), config).await;
        counts.push((proxy.bytes_up(), proxy.bytes_down()));
    }
    eprintln!("(up, down) with deflate reset, kept, plain: {counts:?}");
    let (plain_up, plain_down) = counts[2];
    for (up, down) in &counts[..2] {
        assert!(up * 3 < plain_up && down * 3 < plain_down, "{counts:?}");
    }
}

/// `wsm load` offers no deflate unless `--deflate` (so its figures stay comparable): the same
/// echo run through a `FaultProxy` moves far fewer bytes with the flag, and both runs succeed.
#[actix_rt::test]
async fn wsm_load_offers_deflate_only_with_the_flag() {
    let server = common::start_server(common::test_config());
    let mut counts = Vec::new();
    for flag in [None, Some("--deflate")] {
        let proxy = FaultProxy::start(server.local_addr()).await.expect("proxy");
        let url = proxy.url("/echo");
        let mut args = vec![
            "load",
            "--url",
            &url,
            "--protocol",
            "echo",
            "--connections",
            "4",
            "--duration",
            "1s",
            "--size",
            "2000",
            "--json",
        ];
        args.extend(flag);
        let out = actix_rt::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_wsm"))
                    .args(&args)
                    .output()
                    .expect("wsm load runs")
            }
        })
        .await
        .expect("joined");
        assert!(
            out.status.success(),
            "wsm load {flag:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let echoes = report["sent"].as_u64().unwrap_or(0).max(1);
        counts.push((proxy.bytes_up() / echoes, report));
    }
    let (plain, deflated) = (counts[0].0, counts[1].0);
    eprintln!("bytes up per echo: {plain} plain, {deflated} with --deflate");
    assert!(
        deflated * 3 < plain,
        "bytes up per echo: {plain} plain, {deflated} with --deflate"
    );
}
