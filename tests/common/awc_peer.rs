//! An awc WebSocket client for server tests, [`Peer`]: it answers pings on its own and reads
//! text frames as JSON, so a test sees only data and close frames.

use futures_util::{SinkExt, StreamExt};

use super::WAIT;

/// A raw awc WebSocket client that answers pings and parses text frames as JSON.
pub struct Peer {
    pub framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

impl Peer {
    /// Connect to `url` (frames up to 16 MiB accepted).
    pub async fn connect(url: &str) -> Peer {
        let (_resp, framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(16 * 1024 * 1024)
            .connect()
            .await
            .expect("websocket connects");
        Peer { framed }
    }

    /// Connect to the rooms endpoint and swallow the welcome; returns the session name too.
    pub async fn rooms(url: &str) -> (Peer, String) {
        let mut peer = Peer::connect(url).await;
        let welcome = peer.json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let session = welcome["data"]["session"]
            .as_str()
            .expect("session name")
            .to_owned();
        (peer, session)
    }

    /// Send a text frame.
    pub async fn text(&mut self, text: &str) {
        self.framed
            .send(awc::ws::Message::Text(text.to_owned().into()))
            .await
            .expect("send text");
    }

    /// Send any message.
    pub async fn send(&mut self, msg: awc::ws::Message) {
        self.framed.send(msg).await.expect("send");
    }

    /// The next data or close frame within [`WAIT`], answering pings; `None` on end of stream.
    pub async fn frame(&mut self) -> Option<awc::ws::Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .expect("timed out waiting for a frame");
            match next {
                Some(Ok(awc::ws::Frame::Ping(p))) => {
                    let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
                }
                Some(Ok(awc::ws::Frame::Pong(_))) => {}
                Some(Ok(frame)) => return Some(frame),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next text frame, parsed as JSON.
    pub async fn json(&mut self) -> serde_json::Value {
        match self.frame().await {
            Some(awc::ws::Frame::Text(t)) => serde_json::from_slice(&t).expect("JSON text"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Read until the server's close frame; its code, or `None` when the stream ended without.
    pub async fn close_code(&mut self) -> Option<u16> {
        for _ in 0..100_000 {
            match self.frame().await {
                Some(awc::ws::Frame::Close(reason)) => return reason.map(|r| u16::from(r.code)),
                Some(_) => continue,
                None => return None,
            }
        }
        panic!("no close frame within 100000 frames");
    }

    /// Answer pings (and discard everything else) until the stream ends: run it next to a wait,
    /// so that an idle test client is not taken for a dead one by the server's heartbeat.
    pub async fn answer_pings(&mut self) {
        while let Some(Ok(frame)) = self.framed.next().await {
            if let awc::ws::Frame::Ping(p) = frame {
                let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
            }
        }
    }
}
