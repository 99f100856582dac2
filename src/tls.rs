//! TLS with rustls 0.23 (feature `rustls`, on by default): the client's `wss://` configuration
//! and the server's, both on rustls' `ring` crypto provider.
//!
//! The provider is named explicitly everywhere (`builder_with_provider`) and also installed as
//! the process default on first use, because awc's and actix's own helpers build configurations
//! with `ClientConfig::builder()`, which panics when no default provider is installed. `ring` is
//! chosen over aws-lc-rs (rustls' default) because it builds with a C compiler alone; aws-lc-rs
//! needs cmake, which a fresh machine does not have.
//!
//! A certificate refused by the client becomes [`Error::Certificate`] with a reason in words:
//! what is wrong (an issuer it does not trust, another name, expired, not yet valid, a CA
//! certificate in the server's place) and what to do about it.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// The crypto provider every configuration here uses, installed as the process default once
/// (if another default was installed first, that one stays the default; ours is still used for
/// our configurations).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let provider = rustls::crypto::ring::default_provider();
            let _ = provider.clone().install_default();
            Arc::new(provider)
        })
        .clone()
}

/// Every certificate in a PEM text (`-----BEGIN CERTIFICATE-----` blocks).
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{what}: not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{what}: no certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    Ok(certs)
}

/// The client configuration for `wss://`: the web PKI roots (Mozilla's, from `webpki-roots`)
/// plus every certificate in `extra_roots_pem` (each a PEM text with one or more certificates),
/// HTTP/1.1 only (the WebSocket upgrade is an HTTP/1.1 request).
///
/// A certificate given in `extra_roots_pem` is also accepted when the server presents that very
/// certificate as its own, even when it is marked as a CA (`openssl req -x509` makes such
/// certificates, and webpki alone refuses them with `CaUsedAsEndEntity`): the user pinned those
/// exact bytes, so they are trusted, while its names and validity period are still checked.
/// Everything else goes through webpki's usual checks (`ServerCertCheck` in this module's source
/// says how).
pub fn client_config(extra_roots_pem: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut given = Vec::new();
    for pem in extra_roots_pem {
        for cert in certificates(pem, "tls_roots")? {
            roots
                .add(cert.clone())
                .map_err(|e| Error::Config(format!("tls_roots: unusable certificate: {e}")))?;
            given.push(cert);
        }
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let check = Arc::new(ServerCertCheck { webpki, given });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(check)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How the client checks a server's certificate: webpki's verifier (chain to a trusted root,
/// names, validity, key usage), with one exception and one rewording.
///
/// - The exception: when webpki refuses the certificate and it is byte for byte one that the
///   user gave as a root, it is accepted if it names the host of the URL and `now` is within
///   its validity period. Pinning exact bytes is what trusting a self-signed certificate means
///   (as curl, Python's ssl and browsers do when told to trust it); the exception does not
///   extend to another certificate with the same name or key, and certificates that a given one
///   signed go through webpki as usual, with the given one as a root. Its key usage is not
///   checked (webpki keeps that check private too): the user vouched for this very certificate.
/// - The rewording: a self-signed CA certificate that the user did not give is refused as
///   [`CertificateError::UnknownIssuer`] instead of webpki's `CaUsedAsEndEntity` (webpki checks
///   basic constraints before it looks for an issuer), because what the user has to do is trust
///   it, which is what the unknown-issuer words say.
///
/// The handshake signatures are always checked by webpki's verifier with the provider's
/// algorithms, against the key of the certificate the server presented: accepting a pinned
/// certificate does not accept a server that lacks its private key.
#[derive(Debug)]
struct ServerCertCheck {
    /// The usual verifier, on the web PKI roots plus the given ones.
    webpki: Arc<WebPkiServerVerifier>,
    /// The DER of every certificate the user gave as a root: the only ones the exception accepts.
    given: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for ServerCertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        if self.given.iter().any(|given| given == end_entity) {
            check_given(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        if is_webpki_error(&refused, &webpki::Error::CaUsedAsEndEntity) && self_issued(end_entity) {
            return Err(CertificateError::UnknownIssuer.into());
        }
        Err(refused)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// The checks that still apply to a certificate the user gave, when the server presents it as
/// its own: it names `server_name` (webpki's own matching, which works on any certificate), and
/// `now` lies within its validity period. The period is read with x509-parser because webpki
/// checks it only inside its chain building, which refuses a CA certificate in this place.
fn check_given(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> std::result::Result<(), rustls::Error> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|_| CertificateError::BadEncoding)?;
    parsed
        .verify_is_valid_for_subject_name(server_name)
        .map_err(|e| match e {
            webpki::Error::CertNotValidForName(context) => {
                CertificateError::NotValidForNameContext {
                    expected: context.expected,
                    presented: context.presented,
                }
            }
            _ => CertificateError::NotValidForName,
        })?;
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| CertificateError::BadEncoding)?;
    // Before 1970 counts as 1970: a start then is in the past, an end then has passed.
    let unix = |t: &x509_parser::time::ASN1Time| {
        UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(t.timestamp()).unwrap_or(0),
        ))
    };
    let not_before = unix(&x509.validity().not_before);
    let not_after = unix(&x509.validity().not_after);
    if now < not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
        .into());
    }
    if now > not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
        .into());
    }
    Ok(())
}

/// Whether `cert` names itself as its issuer (subject and issuer equal): self-signed, as far as
/// the words of an error need to know. A certificate that does not parse is not.
fn self_issued(cert: &CertificateDer<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert).is_ok_and(|c| c.issuer() == c.subject())
}

/// Whether `error` is webpki's `which`, as rustls carries the webpki errors it has no variant
/// for (`CertificateError::Other`).
fn is_webpki_error(error: &rustls::Error, which: &webpki::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<webpki::Error>() == Some(which)
        }
        _ => false,
    }
}

/// A server configuration from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), HTTP/1.1 only. This is what [`server::serve_tls`](crate::server::serve_tls) and
/// `wsm serve --tls-cert --tls-key` use; mount [`Rooms`](crate::server::Rooms) into your own
/// `HttpServer::bind_rustls_0_23(addr, config)` with it.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig> {
    let chain = certificates(cert_pem, "TLS certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Config(format!("TLS key: no usable private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("TLS certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What is wrong with the server's certificate, in words that say what to do, when `error`
/// (anywhere in its chain of sources, or inside an `io::Error`) is a refused certificate: not
/// trusted, for another name, expired, a CA certificate in the server's place. `None` for any
/// other error. `host` is the host of the URL, named when the error does not carry it.
///
/// Such a failure is final for a client: retrying cannot help.
pub(crate) fn certificate_refusal(
    error: &(dyn std::error::Error + 'static),
    host: &str,
) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(refusal)) = e.downcast_ref::<rustls::Error>()
        {
            return Some(refusal_in_words(refusal, host));
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(words) = certificate_refusal(inner, host) {
                return Some(words);
            }
        }
        next = e.source();
    }
    None
}

/// Where to give a certificate to trust, for the words below.
const PASS_CA: &str = "--ca FILE (wsm) or ClientConfig::tls_root_pem";

/// `refusal` as a sentence (without the URL, which the error adds) that names the cause and what
/// to do about it.
pub(crate) fn refusal_in_words(refusal: &CertificateError, host: &str) -> String {
    match refusal {
        CertificateError::UnknownIssuer => format!(
            "it is signed by an issuer this client does not trust (or it is self-signed); pass \
             that CA's certificate, or the self-signed certificate itself, with {PASS_CA}"
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
            let expected = server_name_text(expected).unwrap_or_else(|| host.to_owned());
            if names.is_empty() {
                format!(
                    "it is not valid for {expected}: it names no host or address \
                     (no subjectAltName); the server needs a certificate that names {expected}"
                )
            } else {
                format!(
                    "it is not valid for {expected}: it names only {}; connect with one of \
                     those names, or give the server a certificate that names {expected}",
                    names.join(", ")
                )
            }
        }
        CertificateError::NotValidForName => format!(
            "it is not valid for {host} (the host is not among the names in the certificate); \
             connect with a name it lists, or give the server a certificate that names {host}"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "it expired on {} (it is now {}); the server needs a renewed certificate",
            utc(not_after),
            utc(time)
        ),
        CertificateError::Expired => "it has expired (or its validity period is inverted); \
             the server needs a renewed certificate"
            .into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "it is not valid before {} (it is now {}); check this machine's clock and the \
             server's",
            utc(not_before),
            utc(time)
        ),
        CertificateError::NotValidYet => {
            "it is not valid yet; check this machine's clock and the server's".into()
        }
        CertificateError::Revoked => "it has been revoked by its issuer".into(),
        CertificateError::BadEncoding => "it is not a well-formed X.509 certificate".into(),
        CertificateError::BadSignature => {
            "its signature does not verify with its issuer's key".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for TLS servers (its extended key usage lacks serverAuth)".into()
        }
        CertificateError::UnhandledCriticalExtension => {
            "it has a critical extension this client does not understand".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "it is signed with an algorithm this client does not support".into()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(e) => webpki_in_words(e),
            None => format!("it failed the certificate check: {}", other.0),
        },
        other => format!("it failed the certificate check: {other}"),
    }
}

/// The webpki errors that rustls has no variant for, in words.
fn webpki_in_words(e: &webpki::Error) -> String {
    match e {
        webpki::Error::CaUsedAsEndEntity => format!(
            "the server presents a CA certificate (CA:TRUE) as its own, which only the very \
             certificate passed with {PASS_CA} may do; pass that file, or give the server a \
             certificate of its own signed by that CA"
        ),
        webpki::Error::EndEntityUsedAsCa => {
            "the server's chain uses a certificate that is not a CA as an issuer".into()
        }
        webpki::Error::PathLenConstraintViolated | webpki::Error::NameConstraintViolation => {
            "the server's chain breaks a constraint (path length or names) set by an issuer".into()
        }
        webpki::Error::MaximumPathDepthExceeded
        | webpki::Error::MaximumPathBuildCallsExceeded
        | webpki::Error::MaximumSignatureChecksExceeded => {
            "the server's chain of certificates is too long to check".into()
        }
        other => format!("it failed the certificate check ({other:?})"),
    }
}

/// A name as webpki presents it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), bare.
fn presented_name(name: &str) -> String {
    let bare = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    bare.unwrap_or(name).to_owned()
}

/// The host or address a server name stands for.
fn server_name_text(name: &ServerName<'_>) -> Option<String> {
    match name {
        ServerName::DnsName(dns) => Some(dns.as_ref().to_owned()),
        ServerName::IpAddress(ip) => Some(std::net::IpAddr::from(*ip).to_string()),
        _ => None,
    }
}

/// `time` as `2026-12-02 16:14:23 UTC` (proleptic Gregorian calendar, from days since 1970 by
/// Howard Hinnant's `civil_from_days`).
fn utc(time: &UnixTime) -> String {
    let secs = time.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates read as a calendar does, leap days and the ends of centuries included.
    #[test]
    fn utc_dates_follow_the_calendar() {
        let at = |secs| utc(&UnixTime::since_unix_epoch(Duration::from_secs(secs)));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(4_102_444_799), "2099-12-31 23:59:59 UTC");
        assert_eq!(at(1_609_459_200 + 3_723), "2021-01-01 01:02:03 UTC");
    }

    /// Every refusal names its cause without Debug text, and the name mismatch names the host
    /// and the certificate's names bare.
    #[test]
    fn refusals_read_as_words() {
        let expected = ServerName::try_from("127.0.0.1").expect("ip").to_owned();
        let mismatch = CertificateError::NotValidForNameContext {
            expected,
            presented: vec![
                r#"DnsName("localhost")"#.into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        };
        assert_eq!(
            refusal_in_words(&mismatch, "h"),
            "it is not valid for 127.0.0.1: it names only localhost, 10.0.0.1; connect with one \
             of those names, or give the server a certificate that names 127.0.0.1"
        );
        let ca = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        for refusal in [
            CertificateError::UnknownIssuer,
            CertificateError::NotValidForName,
            CertificateError::Expired,
            CertificateError::NotValidYet,
            CertificateError::BadSignature,
            CertificateError::InvalidPurpose,
            ca,
        ] {
            let words = refusal_in_words(&refusal, "example.com");
            assert!(
                words.starts_with("it") || words.starts_with("the server"),
                "{words}"
            );
            assert!(
                !words.contains("Other") && !words.contains("Context"),
                "{words}"
            );
        }
    }
}
