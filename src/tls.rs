//! TLS with rustls 0.23 (feature `rustls`, on by default): the client's `wss://` configuration
//! and the server's, both on rustls' `ring` crypto provider.
//!
//! The provider is named explicitly everywhere (`builder_with_provider`) and also installed as
//! the process default on first use, because awc's and actix's own helpers build configurations
//! with `ClientConfig::builder()`, which panics when no default provider is installed. `ring` is
//! chosen over aws-lc-rs (rustls' default) because it builds with a C compiler alone; aws-lc-rs
//! needs cmake, which a fresh machine does not have.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
pub fn client_config(extra_roots_pem: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra_roots_pem {
        for cert in certificates(pem, "tls_roots")? {
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("tls_roots: unusable certificate: {e}")))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

/// Whether `error` (anywhere in its chain, or in its text) is a refused server certificate:
/// not trusted, expired, for another name. Such a failure is final for a client (retrying cannot
/// help).
pub(crate) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_certificate_error(inner) {
                    return true;
                }
            }
        }
        next = e.source();
    }
    // awc flattens some connect errors to text.
    error.to_string().contains("invalid peer certificate")
}
