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
            // jsonwebtoken checks `aud` and `iss` only when the token has them: a configured
            // check must also require the claim, or a token without it would pass.
            let mut required = vec!["exp"];
            if self.audience.is_some() {
                required.push("aud");
            }
            if self.issuer.is_some() {
                required.push("iss");
            }
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
