//! The federation listener's TLS: the configured certificate, or a self-signed one made at
//! start for private test deployments (other servers must then be told not to verify).
//!
//! The certificate is served whatever name the client asks for, and when it names none: a
//! server addressed by an IP literal gets no SNI from its peers (Synapse sends none then).

use std::sync::Arc;

use anyhow::Context as _;
use ruma::ServerName;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};
use tokio_rustls::TlsAcceptor;

use crate::config::FederationConfig;

/// The TLS acceptor for the federation listener.
pub fn acceptor(config: &FederationConfig, server_name: &ServerName) -> anyhow::Result<TlsAcceptor> {
    let (chain, key) = match (&config.tls_certificate, &config.tls_private_key) {
        (Some(certificate), Some(private_key)) => {
            let chain = CertificateDer::pem_file_iter(certificate)
                .with_context(|| format!("reading federation.tls_certificate {}", certificate.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing federation.tls_certificate {}", certificate.display()))?;
            let key = PrivateKeyDer::from_pem_file(private_key)
                .with_context(|| format!("reading federation.tls_private_key {}", private_key.display()))?;
            (chain, key)
        }
        _ => self_signed(server_name)?,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        // One certificate, whatever the SNI (or none).
        .with_single_cert(chain, key)
        .context("the federation certificate and key do not match")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// A certificate for the server name's host (a DNS name or an IP address), signed by itself.
fn self_signed(server_name: &ServerName) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let host = server_name.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let certified = rcgen::generate_simple_self_signed(vec![host]).context("making a self-signed certificate")?;
    tracing::warn!(%server_name, "federation uses a self-signed certificate: other servers must not verify certificates");
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the self-signed key: {e}"))?;
    Ok((vec![certified.cert.der().clone()], key))
}
