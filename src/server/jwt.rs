//! JWT authentication (feature `jwt`): [`JwtConfig`], the keys and checks a rooms server
//! verifies tokens with, for [`Rooms::with_jwt`](super::Rooms::with_jwt) and
//! `wsm serve --jwt-*`. Tokens are checked with `jsonwebtoken` (on `ring`); what a token grants
//! and where it is found are in `token.rs`.
//!
//! # What is checked
//!
//! - The signature, with the algorithm the key is for and no other: HS256 for a secret, RS256
//!   for an RSA public key, ES256 for an EC (P-256) key, and for a JWKS key its `alg` (or the
//!   one its type implies). A token naming any other algorithm is refused before its signature
//!   is looked at, `none` included, and so is the "algorithm confusion" of an HS256 token
//!   signed with an RSA public key as the secret.
//! - `exp` is required and must be in the future; `nbf`, when present, in the past (both
//!   within [`leeway`](JwtConfig::leeway), 0 by default).
//! - `aud` and `iss`, when [`audience`](JwtConfig::audience) and [`issuer`](JwtConfig::issuer)
//!   are set.
//! - `sub` (the session's identity), when present, a string; `rooms`, when present, a list of
//!   strings; `info`, when present, at most 1 KiB of JSON.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::token::{RefusalReason, RoomGrant, TokenGrant, TokenRefusal, MAX_INFO_BYTES};
use crate::error::{Error, Result};

/// The keys and checks a rooms server verifies JWTs with. Build it from a secret
/// ([`hs256`](Self::hs256)), a PEM public key ([`public_key_pem`](Self::public_key_pem)) or a
/// JWKS document ([`jwks`](Self::jwks)), add the optional checks, and install it with
/// [`Rooms::with_jwt`](super::Rooms::with_jwt). The module docs list what is checked.
///
/// Its `Debug` shows algorithms, key ids and checks, never key material.
#[derive(Clone)]
pub struct JwtConfig {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

/// One verification key, with the one algorithm it takes.
#[derive(Clone)]
struct Key {
    /// The JWKS `kid`, which a token's header names to pick this key.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    /// The checks for this key's algorithm, rebuilt when a check is set.
    validation: Validation,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| match &k.kid {
                Some(kid) => format!("{:?} kid {kid}", k.algorithm),
                None => format!("{:?}", k.algorithm),
            })
            .collect();
        f.debug_struct("JwtConfig")
            .field("keys", &keys)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// The claims this server reads; any others are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: f64,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

impl JwtConfig {
    /// Tokens signed with HS256 and this shared secret (the bytes as they are; a file's
    /// trailing newline is the caller's to trim). An empty secret is refused.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(Error::Config("the JWT secret is empty".into()));
        }
        Ok(Self::with_keys(vec![Key::new(
            None,
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
        )]))
    }

    /// Tokens signed with the private half of this PEM public key: RS256 for an RSA key,
    /// ES256 for an EC key (P-256). Anything else is an [`Error::Config`] saying so.
    pub fn public_key_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        let pem = pem.as_ref();
        // jsonwebtoken takes a private key's PEM here too, and then no signature verifies.
        if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
            return Err(Error::Config(
                "the JWT public key file holds a private key: give its public key (openssl pkey \
                 -in KEY -pubout)"
                    .into(),
            ));
        }
        let key = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            Key::new(None, Algorithm::RS256, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            Key::new(None, Algorithm::ES256, key)
        } else {
            return Err(Error::Config(
                "the JWT public key is not a PEM RSA or EC (P-256) public key".into(),
            ));
        };
        Ok(Self::with_keys(vec![key]))
    }

    /// Tokens signed with any key of this JWKS document (`{"keys":[...]}`), the key chosen by
    /// the `kid` in the token's header (a token without one may use a set of one key). Each
    /// key takes its `alg`, or the algorithm its type implies (RSA: RS256, EC P-256: ES256,
    /// P-384: ES384, oct: HS256, Ed25519: EdDSA); encryption keys (`"use":"enc"`) are skipped.
    pub fn jwks(json: &str) -> Result<Self> {
        let set: JwkSet = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("the JWKS document does not parse: {e}")))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
            let algorithm = jwk_algorithm(jwk)
                .ok_or_else(|| Error::Config(format!("JWKS key {name}: no usable algorithm")))?;
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| Error::Config(format!("JWKS key {name}: {e}")))?;
            keys.push(Key::new(jwk.common.key_id.clone(), algorithm, key));
        }
        if keys.is_empty() {
            return Err(Error::Config(
                "the JWKS document holds no signing key".into(),
            ));
        }
        Ok(Self::with_keys(keys))
    }

    /// Refuse tokens whose `aud` does not name `audience`, and tokens without `aud`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self.rebuild();
        self
    }

    /// Refuse tokens whose `iss` is not `issuer`, and tokens without `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self.rebuild();
        self
    }

    /// How far past `exp` (and before `nbf`) a token is still taken, for clocks that differ
    /// between the token's issuer and this server. Default: 0 (whole seconds count; longer
    /// than 365 days is capped there).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(crate::config::MAX_CONFIG_DURATION);
        self.rebuild();
        self
    }

    fn with_keys(keys: Vec<Key>) -> Self {
        let mut config = JwtConfig {
            keys,
            audience: None,
            issuer: None,
            leeway: Duration::ZERO,
        };
        config.rebuild();
        config
    }

    /// Set each key's checks from the configuration.
    fn rebuild(&mut self) {
        for key in &mut self.keys {
            let mut v = Validation::new(key.algorithm);
            v.leeway = self.leeway.as_secs();
            v.validate_nbf = true;
            // A check that is set needs its claim: jsonwebtoken passes a token without `aud`
            // (or `iss`) when only the value is set.
            let mut required = vec!["exp"];
            required.extend(self.audience.as_ref().map(|_| "aud"));
            required.extend(self.issuer.as_ref().map(|_| "iss"));
            v.set_required_spec_claims(&required);
            v.validate_aud = self.audience.is_some();
            if let Some(aud) = &self.audience {
                v.set_audience(&[aud]);
            }
            if let Some(iss) = &self.issuer {
                v.set_issuer(&[iss]);
            }
            key.validation = v;
        }
    }

    /// Verify `token`: what it grants, or why it is refused (one line).
    pub(crate) fn check(&self, token: &str) -> std::result::Result<TokenGrant, TokenRefusal> {
        let (alg, kid) = header_of(token)?;
        let key = self.key_for(&alg, kid.as_deref())?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| refusal_of(e.kind()))?;
        grant_of(data.claims)
    }

    /// The key a token with this header's `alg` and `kid` is checked with.
    fn key_for(&self, alg: &str, kid: Option<&str>) -> std::result::Result<&Key, TokenRefusal> {
        let key = match kid {
            Some(kid) if self.keys.iter().any(|k| k.kid.is_some()) => {
                self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
            }
            _ if self.keys.len() == 1 => self.keys.first(),
            None => {
                let msg = format!(
                    "the token names no kid and the key set holds {} keys",
                    self.keys.len()
                );
                return Err(TokenRefusal::new(RefusalReason::UnknownKey, msg));
            }
            Some(_) => None,
        };
        let Some(key) = key else {
            let msg = format!(
                "no key with kid {:?} in the key set",
                kid.unwrap_or_default()
            );
            return Err(TokenRefusal::new(RefusalReason::UnknownKey, msg));
        };
        if Algorithm::from_str(alg).ok() != Some(key.algorithm) {
            let msg = format!(
                "token algorithm {alg:?} is not accepted (this key takes {:?})",
                key.algorithm
            );
            return Err(TokenRefusal::new(RefusalReason::Algorithm, msg));
        }
        Ok(key)
    }
}

/// The `alg` and `kid` of a token's header, read before anything else so that `none` and
/// unknown algorithms are refused by name (jsonwebtoken's own header type cannot hold them).
fn header_of(token: &str) -> std::result::Result<(String, Option<String>), TokenRefusal> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let malformed = |why: &str| {
        TokenRefusal::new(
            RefusalReason::Malformed,
            format!("the token is not a JWT: {why}"),
        )
    };
    if token.split('.').count() != 3 {
        return Err(malformed("it does not have three dot-separated parts"));
    }
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| malformed("its header is not base64url"))?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|_| malformed("its header is not JSON with a string alg"))?;
    Ok((header.alg, header.kid))
}

/// The refusal for a jsonwebtoken error, in words.
fn refusal_of(kind: &ErrorKind) -> TokenRefusal {
    use RefusalReason as R;
    let (reason, message) = match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => (
            R::Signature,
            "the token's signature does not verify".to_owned(),
        ),
        ErrorKind::Crypto(_) => (R::Signature, "the token's signature does not verify".into()),
        ErrorKind::ExpiredSignature => (R::Expired, "the token has expired".into()),
        ErrorKind::ImmatureSignature => (R::NotYetValid, "the token is not valid yet (nbf)".into()),
        ErrorKind::InvalidAudience => (R::Audience, "the token is not for this audience".into()),
        ErrorKind::InvalidIssuer => (R::Issuer, "the token is not from this issuer".into()),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
            (R::Audience, "the token has no aud claim".into())
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
            (R::Issuer, "the token has no iss claim".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            (R::Claims, format!("the token has no {claim} claim"))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            (R::Algorithm, "the token's algorithm is not accepted".into())
        }
        ErrorKind::Json(e) => (R::Claims, format!("the token's claims do not decode: {e}")),
        other => (R::Malformed, format!("the token is not a JWT: {other:?}")),
    };
    TokenRefusal::new(reason, message)
}

/// What verified claims grant, after the checks jsonwebtoken does not make.
fn grant_of(claims: Claims) -> std::result::Result<TokenGrant, TokenRefusal> {
    let claims_error = |msg: String| TokenRefusal::new(RefusalReason::Claims, msg);
    let exp = Duration::try_from_secs_f64(claims.exp)
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| claims_error(format!("the exp claim {} is not a time", claims.exp)))?;
    let info = match claims.info {
        Some(info) if info.get().len() > MAX_INFO_BYTES => {
            let msg = format!(
                "the info claim takes {} bytes, more than {MAX_INFO_BYTES}",
                info.get().len()
            );
            return Err(claims_error(msg));
        }
        Some(info) => Some(Arc::from(info)),
        None => None,
    };
    Ok(TokenGrant {
        sub: claims.sub,
        exp,
        info,
        rooms: claims.rooms.map(RoomGrant::new),
    })
}

/// The algorithm a JWKS key takes: its `alg`, else the one its type implies.
fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = &jwk.common.key_algorithm {
        let name = serde_json::to_value(alg).ok()?;
        return Algorithm::from_str(name.as_str()?).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
    }
}

impl Key {
    fn new(kid: Option<String>, algorithm: Algorithm, key: DecodingKey) -> Self {
        Key {
            kid,
            algorithm,
            key,
            validation: Validation::new(algorithm),
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a-unit-test-secret-of-32-bytes!!";
    const RSA1_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa1_private.pem");
    const RSA1_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa1_public.pem");
    const RSA2_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa2_private.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_public.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn hs(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET);
        encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    fn signed(alg: Algorithm, kid: Option<&str>, pem: &[u8], claims: serde_json::Value) -> String {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .expect("test key");
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims, &key).expect("sign")
    }

    fn reason(config: &JwtConfig, token: &str) -> RefusalReason {
        match config.check(token) {
            Ok(_) => panic!("accepted: {token}"),
            Err(refusal) => {
                assert!(!refusal.message.contains('\n'), "{}", refusal.message);
                refusal.reason
            }
        }
    }

    /// A valid HS256 token grants its sub, exp, info and rooms.
    #[test]
    fn a_valid_token_grants_its_claims() {
        let config = JwtConfig::hs256(SECRET).expect("config");
        let exp = now() + 60;
        let token = hs(json!({"sub":"alice","exp":exp,"info":{"name":"A"},"rooms":["chat.*"]}));
        let grant = config.check(&token).expect("valid");
        assert_eq!(grant.sub.as_deref(), Some("alice"));
        let exp_time = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
        assert_eq!(grant.exp, exp_time);
        assert_eq!(
            grant.info.as_deref().map(RawValue::get),
            Some(r#"{"name":"A"}"#)
        );
        let rooms = grant.rooms.expect("rooms claim");
        assert!(rooms.allows("chat.x") && !rooms.allows("admin"));
    }

    /// Every refusal has its reason: forged, `none`, another algorithm, expired, not yet
    /// valid, without exp, claims of the wrong shape, an info over 1 KiB, not a JWT.
    #[test]
    fn each_bad_token_is_refused_for_its_reason() {
        let config = JwtConfig::hs256(SECRET).expect("config");
        let exp = now() + 60;
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"a","exp":exp}),
            &EncodingKey::from_secret(b"another secret, also 32 bytes..."),
        )
        .expect("sign");
        assert_eq!(reason(&config, &forged), RefusalReason::Signature);
        let body = hs(json!({"sub":"a","exp":exp}));
        let payload = body.split('.').nth(1).unwrap_or_default();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(reason(&config, &none), RefusalReason::Algorithm);
        let rs = signed(Algorithm::RS256, None, RSA1_PRIVATE, json!({"exp":exp}));
        assert_eq!(reason(&config, &rs), RefusalReason::Algorithm);
        let cases = [
            (json!({"sub":"a","exp":now() - 5}), RefusalReason::Expired),
            (
                json!({"exp":exp,"nbf":now() + 60}),
                RefusalReason::NotYetValid,
            ),
            (json!({"sub":"a"}), RefusalReason::Claims),
            (json!({"sub":7,"exp":exp}), RefusalReason::Claims),
            (json!({"exp":exp,"rooms":"chat.*"}), RefusalReason::Claims),
            (
                json!({"exp":exp,"info":"x".repeat(1100)}),
                RefusalReason::Claims,
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(reason(&config, &hs(claims.clone())), expected, "{claims}");
        }
        for junk in ["", "abc", "a.b.c", "a.b", "....", "\u{0}.\u{0}.\u{0}"] {
            assert_eq!(reason(&config, junk), RefusalReason::Malformed, "{junk:?}");
        }
    }

    /// `aud` and `iss` are checked when set, and a token with an `aud` is taken when no
    /// audience is set.
    #[test]
    fn audience_and_issuer_are_checked_when_set() {
        let exp = now() + 60;
        let right = hs(json!({"exp":exp,"aud":"chat","iss":"auth.example"}));
        let wrong_aud = hs(json!({"exp":exp,"aud":"billing","iss":"auth.example"}));
        let wrong_iss = hs(json!({"exp":exp,"aud":"chat","iss":"evil.example"}));
        let plain = JwtConfig::hs256(SECRET).expect("config");
        assert!(plain.check(&right).is_ok());
        let strict = plain.audience("chat").issuer("auth.example");
        assert!(strict.check(&right).is_ok());
        assert_eq!(reason(&strict, &wrong_aud), RefusalReason::Audience);
        assert_eq!(reason(&strict, &wrong_iss), RefusalReason::Issuer);
        let no_aud = hs(json!({"exp":exp,"iss":"auth.example"}));
        assert_eq!(reason(&strict, &no_aud), RefusalReason::Audience);
        let no_iss = hs(json!({"exp":exp,"aud":"chat"}));
        assert_eq!(reason(&strict, &no_iss), RefusalReason::Issuer);
    }

    /// A leeway takes a token that expired within it, and no more.
    #[test]
    fn leeway_takes_a_recently_expired_token() {
        let token = hs(json!({"exp":now() - 5}));
        let config = JwtConfig::hs256(SECRET).expect("config");
        assert_eq!(reason(&config, &token), RefusalReason::Expired);
        let lenient = config.leeway(Duration::from_secs(30));
        assert!(lenient.check(&token).is_ok());
        let lenient = lenient.leeway(Duration::MAX);
        assert!(lenient.check(&token).is_ok());
    }

    /// An RSA PEM takes RS256 only (the "algorithm confusion" HS256 token signed with the PEM
    /// as its secret is refused), an EC PEM ES256; keys that are neither are refused at once.
    #[test]
    fn pem_keys_take_their_own_algorithm_only() {
        let exp = now() + 60;
        let rsa = JwtConfig::public_key_pem(RSA1_PUBLIC).expect("rsa");
        let good = signed(
            Algorithm::RS256,
            None,
            RSA1_PRIVATE,
            json!({"sub":"r","exp":exp}),
        );
        assert!(rsa.check(&good).is_ok());
        let other = signed(Algorithm::RS256, None, RSA2_PRIVATE, json!({"exp":exp}));
        assert_eq!(reason(&rsa, &other), RefusalReason::Signature);
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp":exp}),
            &EncodingKey::from_secret(RSA1_PUBLIC),
        )
        .expect("sign");
        assert_eq!(reason(&rsa, &confused), RefusalReason::Algorithm);
        let ec = JwtConfig::public_key_pem(EC_PUBLIC).expect("ec");
        let good = signed(Algorithm::ES256, None, EC_PRIVATE, json!({"exp":exp}));
        assert!(ec.check(&good).is_ok());
        assert_eq!(reason(&ec, &other), RefusalReason::Algorithm);
        for bad in [&b""[..], b"not a pem", RSA1_PRIVATE] {
            let refused = JwtConfig::public_key_pem(bad);
            assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
        }
        assert!(matches!(JwtConfig::hs256(""), Err(Error::Config(_))));
    }

    /// A JWKS picks the key by `kid`: each of two keys verifies its own tokens, a token under
    /// the other key's kid fails its signature, an unknown kid and a missing one are refused.
    #[test]
    fn a_jwks_picks_the_key_by_kid() {
        let exp = now() + 60;
        let jwks = JwtConfig::jwks(JWKS).expect("jwks");
        let one = signed(
            Algorithm::RS256,
            Some("key-1"),
            RSA1_PRIVATE,
            json!({"exp":exp}),
        );
        let two = signed(
            Algorithm::RS256,
            Some("key-2"),
            RSA2_PRIVATE,
            json!({"exp":exp}),
        );
        assert!(jwks.check(&one).is_ok());
        assert!(jwks.check(&two).is_ok());
        let swapped = signed(
            Algorithm::RS256,
            Some("key-1"),
            RSA2_PRIVATE,
            json!({"exp":exp}),
        );
        assert_eq!(reason(&jwks, &swapped), RefusalReason::Signature);
        let unknown = signed(
            Algorithm::RS256,
            Some("key-9"),
            RSA1_PRIVATE,
            json!({"exp":exp}),
        );
        assert_eq!(reason(&jwks, &unknown), RefusalReason::UnknownKey);
        let bare = signed(Algorithm::RS256, None, RSA1_PRIVATE, json!({"exp":exp}));
        assert_eq!(reason(&jwks, &bare), RefusalReason::UnknownKey);
        for bad in ["", "{}", r#"{"keys":[]}"#, r#"{"keys":[{"kty":"RSA"}]}"#] {
            assert!(
                matches!(JwtConfig::jwks(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        let shown = format!("{jwks:?}");
        assert!(
            shown.contains("key-1") && !shown.contains("AQAB"),
            "{shown}"
        );
    }
}
