//! TLS inputs of the `wsm` commands: PEM files named by flags, and a throwaway certificate for
//! `wsm load --tls`.

use std::path::Path;

use actix_ws_manager::{Error, Result};

/// The contents of the PEM file given with `flag`; a one-line error naming both otherwise.
pub fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {flag} {}: {e}", path.display())))
}

/// A certificate authority made now, and a certificate for 127.0.0.1 and localhost signed by
/// it: (CA certificate PEM, server certificate PEM, server key PEM). Lives as long as the run.
pub fn loopback_pki() -> Result<(String, String, String)> {
    let tls = |e: rcgen::Error| Error::Config(format!("cannot make a test certificate: {e}"));
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "wsm load throwaway CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().map_err(tls)?)
        .map_err(tls)?;
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(tls)?;
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let cert = params.signed_by(&key, &ca).map_err(tls)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}
