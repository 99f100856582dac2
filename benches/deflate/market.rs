//! The market-data messages every point sends, and the send time a broadcast carries.

/// A deterministic market-data feed: order-book snapshots (about 2 KiB) and trades (200-400
/// bytes), prices walking and sizes varying per message.
pub(crate) struct Feed {
    rng: fastrand::Rng,
    price: f64,
    seq: u64,
    trade_id: u64,
    ts: u64,
}

impl Feed {
    pub(crate) fn new(seed: u64) -> Feed {
        Feed {
            rng: fastrand::Rng::with_seed(seed),
            price: 43_012.51,
            seq: 7_310_442_019,
            trade_id: 581_220_173,
            ts: 1_764_754_000_000,
        }
    }

    fn step(&mut self) {
        self.price *= 1.0 + (self.rng.f64() - 0.5) * 0.0008;
        self.seq += 1 + self.rng.u64(0..40);
        self.ts += self.rng.u64(0..120);
    }

    fn uuid(&mut self) -> String {
        let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let r = &mut self.rng;
        format!(
            "{}-{}-4{}-{}-{}",
            hex(r, 8),
            hex(r, 4),
            hex(r, 3),
            hex(r, 4),
            hex(r, 12)
        )
    }

    fn size(&mut self) -> String {
        format!("{:.8}", self.rng.f64() * self.rng.f64() * 4.0 + 0.0001)
    }

    /// An order-book snapshot, 35 levels a side: about 2 KiB.
    pub(crate) fn snapshot(&mut self) -> String {
        self.step();
        let mut bids = Vec::with_capacity(35);
        let mut asks = Vec::with_capacity(35);
        let (mut bid, mut ask) = (self.price - 0.01, self.price + 0.01);
        for _ in 0..35 {
            bids.push(format!(r#"["{bid:.2}","{}"]"#, self.size()));
            asks.push(format!(r#"["{ask:.2}","{}"]"#, self.size()));
            bid -= 0.01 * (1 + self.rng.u32(0..4)) as f64;
            ask += 0.01 * (1 + self.rng.u32(0..4)) as f64;
        }
        format!(
            r#"{{"type":"snapshot","product_id":"BTC-USD","sequence":{},"time":{},"bids":[{}],"asks":[{}]}}"#,
            self.seq,
            self.ts,
            bids.join(","),
            asks.join(",")
        )
    }

    /// A trade with its order ids: 200-400 bytes.
    pub(crate) fn trade(&mut self) -> String {
        self.step();
        self.trade_id += 1 + self.rng.u64(0..3);
        let side = if self.rng.bool() { "buy" } else { "sell" };
        let mut extra = String::new();
        if self.rng.u32(0..10) < 7 {
            extra.push_str(&format!(r#","taker_order_id":"{}""#, self.uuid()));
        }
        if self.rng.bool() {
            extra.push_str(&format!(r#","client_oid":"{}""#, self.uuid()));
        }
        if self.rng.u32(0..10) < 3 {
            extra.push_str(&format!(r#","profile_id":"{}""#, self.uuid()));
        }
        let (size, maker) = (self.size(), self.uuid());
        format!(
            r#"{{"type":"match","product_id":"BTC-USD","trade_id":{},"sequence":{},"time":{},"price":"{:.2}","size":"{size}","side":"{side}","maker_order_id":"{maker}"{extra}}}"#,
            self.trade_id, self.seq, self.ts, self.price
        )
    }

    /// The next message of a feed of one snapshot to four trades.
    pub(crate) fn next_message(&mut self) -> String {
        if self.rng.u32(0..5) == 0 {
            self.snapshot()
        } else {
            self.trade()
        }
    }
}

/// `msg` (a JSON object) with `"t":t` as its first field. The object's own opening brace is
/// kept (`msg[..1]`), so no unmatched brace is written here.
pub(crate) fn with_send_time(msg: &str, t: u64) -> String {
    format!(r#"{}"t":{t},{}"#, &msg[..1], &msg[1..])
}

/// The send time (`"t"`) a received frame carries.
pub(crate) fn send_time(text: &str) -> Option<u64> {
    let pos = text.find("\"t\":")?;
    let digits: String = text[pos + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
