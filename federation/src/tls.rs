//! The TLS client configuration shared by `.well-known` fetches and federation requests.
//!
//! It is built once, with aws-lc-rs passed explicitly (the provider reqwest's `rustls`
//! feature uses), so nothing depends on a process-wide default provider and several servers
//! in one process can each have their own settings.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, aws_lc_rs, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

/// How remote certificates are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// Check certificates against the system's trusted roots plus `extra_root_certificates_pem`
    /// (default). Turning it off accepts any certificate, for private deployments with
    /// self-signed certificates (Synapse's `federation_verify_certificates: false`).
    pub verify_certificates: bool,
    /// Extra trusted root certificates, each entry holding one or more PEM certificates.
    pub extra_root_certificates_pem: Vec<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self { verify_certificates: true, extra_root_certificates_pem: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("extra root certificate {index} is not valid PEM")]
    Pem {
        index: usize,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("extra root certificate {index} holds no certificate")]
    Empty { index: usize },
    #[error("the certificate verifier could not be built")]
    Verifier(#[source] rustls::Error),
    #[error("TLS protocol versions rejected by the provider")]
    Versions(#[source] rustls::Error),
}

/// Builds the client config: HTTP/1.1 only over ALPN, because the `Host` header the spec
/// prescribes is what the remote routes on, and HTTP/2 would carry the URL's authority instead.
pub(crate) fn client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?;
    let mut config = if options.verify_certificates {
        let mut roots = Vec::new();
        for (index, pem) in options.extra_root_certificates_pem.iter().enumerate() {
            let before = roots.len();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.push(cert.map_err(|source| TlsError::Pem { index, source })?);
            }
            if roots.len() == before {
                return Err(TlsError::Empty { index });
            }
        }
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider).map_err(TlsError::Verifier)?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any certificate, but still checks that the handshake was signed by the key of the
/// certificate presented, so the connection is at least encrypted to one party.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_roots() {
        let options = TlsOptions { verify_certificates: true, extra_root_certificates_pem: vec!["not pem".into()] };
        assert!(matches!(client_config(&options), Err(TlsError::Empty { index: 0 })));
    }

    #[test]
    fn builds_with_and_without_verification() {
        let config = client_config(&TlsOptions::default()).expect("verifying config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        client_config(&TlsOptions { verify_certificates: false, ..TlsOptions::default() })
            .expect("non-verifying config");
    }
}
