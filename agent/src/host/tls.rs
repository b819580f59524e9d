//! The UI's TLS certificate: a configured one (`tls_cert` and `tls_key` in
//! agent.toml), or a self-signed one made on first start and kept in the
//! state directory; and its SHA-256 fingerprint,
//! which the agent publishes for `fossa-bootstrap` to print.

use std::path::{Path, PathBuf};

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct Certificate {
    /// Certificate chain.
    pub cert_pem: Vec<u8>,
    /// Private key.
    pub key_pem: Vec<u8>,
    /// SHA-256 of the DER certificate, as `AB:CD:…`.
    pub fingerprint: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The certificate could not be made, read or stored.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// The certificate file is not PEM.
    #[error("{0} is not a PEM certificate: give a PEM chain (or delete a self-signed one and restart to make a new one)")]
    BadPem(PathBuf),
    /// The key file is not a PEM private key.
    #[error("{0} is not a PEM private key: give the key of tls_cert in PEM")]
    BadKey(PathBuf),
}

/// `AB:CD:…` SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    fossa_contract::names::tls_fingerprint(der)
}

/// The DER bytes of the first certificate in `pem`, if there is one.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    aws_smithy_types::base64::decode(body)
        .ok()
        .filter(|der| !der.is_empty())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut f, bytes).map_err(io)
}

/// Loads `dir/cert.pem` and `dir/key.pem`, making a self-signed pair for
/// `names` (DNS names or IPs) the first time.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Certificate, TlsError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if !(cert_path.exists() && key_path.exists()) {
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fossa-gateway");
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_private(&cert_path, cert.pem().as_bytes())?;
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let der = pem_to_der(&String::from_utf8_lossy(&cert_pem))
        .ok_or_else(|| TlsError::BadPem(cert_path.clone()))?;
    Ok(Certificate {
        fingerprint: fingerprint(&der),
        cert_pem,
        key_pem,
    })
}

/// Loads a configured certificate chain and key (`tls_cert`, `tls_key`).
pub fn load_configured(cert_path: &Path, key_path: &Path) -> Result<Certificate, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let der = pem_to_der(&String::from_utf8_lossy(&cert_pem))
        .ok_or_else(|| TlsError::BadPem(cert_path.to_owned()))?;
    if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
        return Err(TlsError::BadKey(key_path.to_owned()));
    }
    Ok(Certificate {
        fingerprint: fingerprint(&der),
        cert_pem,
        key_pem,
    })
}

/// Loads or makes the 64-byte key that protects session cookies.
pub fn cookie_key(dir: &Path) -> Result<Vec<u8>, TlsError> {
    let path = dir.join("cookie.key");
    if let Ok(k) = std::fs::read(&path) {
        if k.len() == 64 {
            return Ok(k);
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let key: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    write_private(&path, &key)?;
    Ok(key)
}

/// Local mode's scraper's token, made once (40 letters and digits) and
/// kept in `dir/metrics-token`, readable by its owner only.
pub fn metrics_token(dir: &Path) -> Result<(String, std::path::PathBuf), TlsError> {
    let path = dir.join("metrics-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if t.trim().len() >= 32 {
            return Ok((t.trim().to_owned(), path));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric.sample_string(&mut rand::rng(), 40);
    write_private(&path, token.as_bytes())?;
    Ok((token, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("fossa-tls-{}", std::process::id()));
        let a = load_or_create(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let b = load_or_create(&dir, &[]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.join("key.pem"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(cookie_key(&dir).unwrap(), cookie_key(&dir).unwrap());
        // The same files as a configured pair give the same certificate.
        let c = load_configured(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
        assert_eq!(c.fingerprint, a.fingerprint);
        let e = load_configured(&dir.join("key.pem"), &dir.join("key.pem")).unwrap_err();
        assert!(e.to_string().contains("not a PEM certificate"), "{e}");
        let e = load_configured(&dir.join("cert.pem"), &dir.join("cert.pem")).unwrap_err();
        assert!(e.to_string().contains("not a PEM private key"), "{e}");
        let e = load_configured(&dir.join("nope.pem"), &dir.join("key.pem")).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
