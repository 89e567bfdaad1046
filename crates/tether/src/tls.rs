//! TLS of the gateway's own (`--ssl-certfile`, `--ssl-keyfile`), as `panel serve` offers it:
//! a PEM certificate chain and its private key, loaded once at start-up, so a bad file is
//! refused before any worker starts.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The two files TLS is terminated with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {0}; check --ssl-certfile")]
    ReadCert(PathBuf, #[source] std::io::Error),
    #[error(
        "{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----); pass one with --ssl-certfile"
    )]
    NoCert(PathBuf),
    #[error(
        "cannot read a private key from {0}; pass the certificate's PEM key with --ssl-keyfile"
    )]
    NoKey(PathBuf, #[source] rustls::pki_types::pem::Error),
    #[error("the key in {key} does not fit the certificate in {cert}; pass the pair that belongs together")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The acceptor for `files`, offering HTTP/1.1 (the gateway speaks nothing else).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let text = std::fs::read(&files.cert).map_err(|e| TlsError::ReadCert(files.cert.clone(), e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::NoKey(files.key.clone(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |source| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    #[test]
    fn bad_files_get_a_sentence_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        };
        let msg = acceptor(&missing).err().unwrap().to_string();
        assert!(
            msg.contains("--ssl-certfile") && msg.contains("nope.pem"),
            "{msg}"
        );

        let not_pem = files(dir.path(), "hello", "hello");
        let msg = acceptor(&not_pem).err().unwrap().to_string();
        assert!(msg.contains("no PEM certificate"), "{msg}");

        // A certificate block whose key file holds none.
        let cert_only = files(
            dir.path(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "no key here",
        );
        let msg = acceptor(&cert_only).err().unwrap().to_string();
        assert!(msg.contains("--ssl-keyfile"), "{msg}");
    }
}
