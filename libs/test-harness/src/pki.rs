//! Certificates for tests: an authority of the test's own and server certificates for loopback
//! signed by it, all PEM.

use crate::HarnessError;

pub struct TestAuthority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The authority's certificate, for clients to trust.
    pub ca_pem: String,
}

fn pki(e: rcgen::Error) -> HarnessError {
    HarnessError::Io(std::io::Error::other(e.to_string()))
}

impl TestAuthority {
    pub fn new(name: &str) -> Result<TestAuthority, HarnessError> {
        let key = rcgen::KeyPair::generate().map_err(pki)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).map_err(pki)?;
        Ok(TestAuthority { ca_pem: ca.pem(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// A certificate for `localhost` and 127.0.0.1 and its key.
    pub fn server_certificate(&self) -> Result<(String, String), HarnessError> {
        let key = rcgen::KeyPair::generate().map_err(pki)?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(pki)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
