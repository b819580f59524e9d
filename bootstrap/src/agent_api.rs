//! Talking to a stack's agent from the laptop: HTTPS pinned to the
//! certificate fingerprint the agent published in SSM (the UI's certificate
//! is self-signed, so no CA can vouch for it; nothing is sent to a server
//! whose certificate does not match), with the UI password from SSM.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

/// Why the agent's API gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// The request did not complete (includes a certificate that does not match).
    #[error("the agent at {url} did not answer")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// It answered with an error status.
    #[error("the agent at {url} answered HTTP {status}")]
    Status {
        /// Where.
        url: String,
        /// The status.
        status: u16,
    },
    /// Its answer is not the JSON the API documents.
    #[error("the agent at {url} answered something that is not its API's JSON")]
    Garbage {
        /// Where.
        url: String,
    },
}

/// Accepts exactly the certificate with this SHA-256 fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fossa_contract::names::tls_fingerprint(end_entity);
        if seen.eq_ignore_ascii_case(&self.fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "its certificate {seen} is not the agent's {} (in SSM): refusing to send the password",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTPS client that trusts only the certificate with `fingerprint`.
pub fn pinned_client(fingerprint: &str) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTPS client")
}

/// `GET /api/v1/overview` of the agent at `address` (`host` or `host:port`).
pub async fn overview(
    address: &str,
    fingerprint: &str,
    password: &str,
) -> Result<Value, AgentApiError> {
    let url = format!("https://{address}/api/v1/overview");
    let r = pinned_client(fingerprint)
        .get(&url)
        .basic_auth(fossa_contract::names::UI_USER, Some(password))
        .send()
        .await
        .map_err(|source| AgentApiError::Unreachable {
            url: url.clone(),
            source,
        })?;
    if !r.status().is_success() {
        return Err(AgentApiError::Status {
            url,
            status: r.status().as_u16(),
        });
    }
    r.json().await.map_err(|_| AgentApiError::Garbage { url })
}
