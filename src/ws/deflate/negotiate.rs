//! Negotiation of permessage-deflate (RFC 7692 section 7) for both sides.
//!
//! A `Sec-WebSocket-Extensions` value is a comma-separated list of extensions, each a name and
//! `;`-separated parameters, a parameter a name with an optional value (a token or a quoted
//! string). When a header appears several times, pass its values joined with `", "`.

use super::{Agreement, DeflateConfig, Direction, EXTENSION};

/// The parameters of one permessage-deflate offer or answer, checked for repetition and values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Present, with its value when it has one.
    client_max_window_bits: Option<Option<u8>>,
}

/// One extension of a header: its name and its parameters, as written (quotes removed).
struct Element {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// The server's side: the answer to the first offer of `header` (the client's
/// `Sec-WebSocket-Extensions`) that it can accept, and what it agreed to, or `None` when
/// deflate is off or no offer is acceptable (the connection goes on without it). A malformed
/// offer, or one with a repeated or unknown parameter or a value out of range, is declined
/// (RFC 7692 section 5: "MUST decline"), and the next one is tried.
pub fn server_accept(header: &str, config: &DeflateConfig) -> Option<(String, Agreement)> {
    if !config.enabled {
        return None;
    }
    for piece in split_outside_quotes(header, ',')? {
        let offer = match parse_element(piece) {
            Ok(el) if el.name.eq_ignore_ascii_case(EXTENSION) => params(&el, true),
            Ok(_) => continue,
            Err(e) => Err(e),
        };
        match offer {
            Ok(offer) => return Some(answer(&offer, config)),
            Err(why) => tracing::debug!(
                offer = piece.trim(),
                why,
                "permessage-deflate offer declined"
            ),
        }
    }
    None
}

/// The server's answer to an acceptable `offer`.
fn answer(offer: &Params, config: &DeflateConfig) -> (String, Agreement) {
    let (own_bits, peer_bits) = config.clamped();
    let mut out = String::from(EXTENSION);
    let send_nct = offer.server_no_context_takeover || config.no_context_takeover;
    if send_nct {
        out.push_str("; server_no_context_takeover");
    }
    let receive_nct = offer.client_no_context_takeover || config.peer_no_context_takeover;
    if receive_nct {
        out.push_str("; client_no_context_takeover");
    }
    let send_bits = offer.server_max_window_bits.unwrap_or(15).min(own_bits);
    if offer.server_max_window_bits.is_some() || send_bits < 15 {
        out.push_str(&format!("; server_max_window_bits={send_bits}"));
    }
    // Without client_max_window_bits in the offer the client cannot be asked for a window.
    let receive_bits = match offer.client_max_window_bits {
        None => 15,
        Some(hint) => {
            let bits = hint.unwrap_or(15).min(peer_bits);
            if bits < 15 {
                out.push_str(&format!("; client_max_window_bits={bits}"));
            }
            bits
        }
    };
    let agreement = Agreement {
        send: (send_bits >= 9).then_some(Direction {
            window_bits: send_bits,
            no_context_takeover: send_nct,
        }),
        receive: Direction {
            window_bits: receive_bits,
            no_context_takeover: receive_nct,
        },
        threshold: config.threshold,
        level: config.level,
    };
    (out, agreement)
}

/// The client's side: its offer, or `None` when deflate is off. `client_max_window_bits` is
/// always there (the server may then ask for a smaller window).
pub fn client_offer(config: &DeflateConfig) -> Option<String> {
    if !config.enabled {
        return None;
    }
    let (own_bits, peer_bits) = config.clamped();
    let mut out = String::from(EXTENSION);
    if config.no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if config.peer_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if peer_bits < 15 {
        out.push_str(&format!("; server_max_window_bits={peer_bits}"));
    }
    out.push_str("; client_max_window_bits");
    if own_bits < 15 {
        out.push_str(&format!("={own_bits}"));
    }
    Some(out)
}

/// The client's side: check the server's `Sec-WebSocket-Extensions` answer (empty when it sent
/// none) against the offer [`client_offer`] made for `config`. `Ok(None)`: no extension in
/// use. An answer the offer did not allow (another extension, two of them, a parameter that
/// is repeated, unknown, malformed or out of what was offered, or one the offer required that
/// is missing) is an `Err` with the reason: the client must fail the connection (RFC 7692
/// section 5).
pub fn client_accept(header: &str, config: &DeflateConfig) -> Result<Option<Agreement>, String> {
    if header.trim().is_empty() {
        return Ok(None);
    }
    if !config.enabled {
        return Err(format!(
            "the server answered extensions that were not offered: {header}"
        ));
    }
    let pieces = split_outside_quotes(header, ',').ok_or("an unterminated quoted string")?;
    let [piece] = pieces[..] else {
        return Err(format!("more than one extension in the answer: {header}"));
    };
    let el = parse_element(piece)?;
    if !el.name.eq_ignore_ascii_case(EXTENSION) {
        return Err(format!(
            "the server answered an extension that was not offered: {}",
            el.name
        ));
    }
    let got = params(&el, false)?;
    let (own_bits, peer_bits) = config.clamped();
    if config.peer_no_context_takeover && !got.server_no_context_takeover {
        return Err("server_no_context_takeover was offered but is missing from the answer".into());
    }
    let receive_bits = match got.server_max_window_bits {
        Some(bits) if bits > peer_bits => {
            return Err(format!(
                "server_max_window_bits={bits} is over the {peer_bits} offered"
            ))
        }
        None if peer_bits < 15 => {
            return Err("server_max_window_bits was offered but is missing from the answer".into())
        }
        bits => bits.unwrap_or(15),
    };
    let send_bits = match got.client_max_window_bits {
        None => own_bits,
        Some(None) => return Err("client_max_window_bits without a value in the answer".into()),
        Some(Some(bits)) if bits > own_bits => {
            return Err(format!(
                "client_max_window_bits={bits} is over the {own_bits} offered"
            ))
        }
        Some(Some(bits)) => bits,
    };
    Ok(Some(Agreement {
        send: (send_bits >= 9).then_some(Direction {
            window_bits: send_bits,
            no_context_takeover: config.no_context_takeover || got.client_no_context_takeover,
        }),
        receive: Direction {
            window_bits: receive_bits,
            no_context_takeover: got.server_no_context_takeover,
        },
        threshold: config.threshold,
        level: config.level,
    }))
}

/// The permessage-deflate parameters of `el`; `offer` allows `client_max_window_bits` without a
/// value (an answer must give one, which [`client_accept`] checks).
fn params(el: &Element, offer: bool) -> Result<Params, String> {
    let mut p = Params::default();
    for (name, value) in &el.params {
        let repeated = || format!("{name} repeated");
        match name.to_ascii_lowercase().as_str() {
            flag @ ("server_no_context_takeover" | "client_no_context_takeover") => {
                if value.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                let slot = if flag.starts_with("server") {
                    &mut p.server_no_context_takeover
                } else {
                    &mut p.client_no_context_takeover
                };
                if std::mem::replace(slot, true) {
                    return Err(repeated());
                }
            }
            "server_max_window_bits" => {
                let bits = window_bits(
                    value
                        .as_deref()
                        .ok_or("server_max_window_bits without a value")?,
                )?;
                if p.server_max_window_bits.replace(bits).is_some() {
                    return Err(repeated());
                }
            }
            "client_max_window_bits" => {
                let bits = value.as_deref().map(window_bits).transpose()?;
                if bits.is_none() && !offer {
                    return Err("client_max_window_bits without a value in the answer".into());
                }
                if p.client_max_window_bits.replace(bits).is_some() {
                    return Err(repeated());
                }
            }
            _ => return Err(format!("unknown parameter {name}")),
        }
    }
    Ok(p)
}

/// A window size as RFC 7692 writes it: 8 to 15, in decimal, without leading zeros.
fn window_bits(value: &str) -> Result<u8, String> {
    match value {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => {
            value.parse().map_err(|_| format!("window bits {value:?}"))
        }
        _ => Err(format!("window bits {value:?} (8 to 15)")),
    }
}

/// `s` split at `sep` where it is not inside a quoted string; `None` when a quote is left open.
fn split_outside_quotes(s: &str, sep: char) -> Option<Vec<&str>> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(&s[start..]);
    Some(out)
}

/// One extension: `name *( ";" param )`, with `param = token [ "=" (token / quoted-string) ]`.
fn parse_element(s: &str) -> Result<Element, String> {
    let parts = split_outside_quotes(s, ';').ok_or("an unterminated quoted string")?;
    let name = parts[0].trim();
    if !is_token(name) {
        return Err(format!("extension name {name:?} is not a token"));
    }
    let mut params = Vec::new();
    for part in &parts[1..] {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(param_value(v.trim())?)),
            None => (part.trim(), None),
        };
        if !is_token(key) {
            return Err(format!("parameter name {key:?} is not a token"));
        }
        params.push((key.to_owned(), value));
    }
    Ok(Element {
        name: name.to_owned(),
        params,
    })
}

/// A parameter's value: a token, or a quoted string whose content is a token (RFC 7692
/// section 5.1: "the value after quoted-string unescaping MUST conform to the token ABNF").
fn param_value(v: &str) -> Result<String, String> {
    let unquoted = match v.strip_prefix('"') {
        Some(rest) => {
            let inner = rest
                .strip_suffix('"')
                .ok_or("a quoted value without its end")?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().ok_or("a trailing backslash")?
                } else {
                    c
                });
            }
            out
        }
        None => v.to_owned(),
    };
    if is_token(&unquoted) {
        Ok(unquoted)
    } else {
        Err(format!("parameter value {v:?} is not a token"))
    }
}

/// RFC 7230's token: one or more of the visible characters other than separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
