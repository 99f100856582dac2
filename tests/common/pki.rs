//! Certificates made at test time (rcgen): a CA with a server certificate it signed, and
//! self-signed certificates marked as a CA like `openssl req -x509` makes.

/// A test PKI made at test time: a CA, and a certificate for 127.0.0.1 and localhost signed by
/// it. Answers (CA certificate PEM, server certificate PEM, server key PEM).
pub fn test_pki() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "actix-ws-manager test CA");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("ca cert");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A self-signed certificate marked as a CA, like the one that
/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost
/// -addext subjectAltName=DNS:localhost,IP:127.0.0.1` makes (`CA:TRUE`), for the names `sans`
/// (an IP address becomes an IP SAN) and, when given, valid only from `valid.0` to `valid.1`
/// (calendar years, 1 January). Answers (certificate PEM, key PEM).
pub fn self_signed_ca_cert(sans: &[&str], valid: Option<(i32, i32)>) -> (String, String) {
    let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        sans.first().copied().unwrap_or("none"),
    );
    if let Some((from, to)) = valid {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}
