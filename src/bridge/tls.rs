//! TLS for bridge sources: one rustls client configuration per bridge,
//! built at start-up from `ca_file`, `client_cert` and `client_key`, used by
//! every broker's client (our STOMP socket through `tokio-rustls`, lapin's
//! rustls socket, async-nats; the `redis` crate takes the same PEM files).
//!
//! Trust: the system's CA store (`rustls-native-certs`) unless `ca_file`
//! names PEM certificates to trust instead (a private CA). The broker's
//! certificate must name the URL's host (a DNS name, or an IP address in
//! its subjectAltName): there is no switch to skip either check.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::Invalid;

/// A bridge's TLS settings, checked and loaded.
#[derive(Clone)]
pub struct Tls {
    /// The rustls configuration (roots, client certificate, ring).
    pub config: Arc<ClientConfig>,
    /// `ca_file`'s PEM text, when given (the `redis` crate takes PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// `client_cert` and `client_key`'s PEM text, when given.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's bytes stay out of any debug output.
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_pem.is_some())
            .field("client_cert", &self.client_pem.is_some())
            .finish()
    }
}

/// The files a `[[bridge]]` names for TLS.
pub struct TlsFiles<'a> {
    /// `ca_file`.
    pub ca_file: Option<&'a Path>,
    /// `client_cert`.
    pub client_cert: Option<&'a Path>,
    /// `client_key`.
    pub client_key: Option<&'a Path>,
}

impl TlsFiles<'_> {
    /// Reads and checks the files; an error names the key.
    pub fn load(&self) -> Result<Tls, Invalid> {
        let ca_pem = self.ca_file.map(|p| read("ca_file", p)).transpose()?;
        let roots = match &ca_pem {
            Some(pem) => roots_from(pem)?,
            None => system_roots()?,
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ("url", format!("TLS: {e}")))?
                .with_root_certificates(roots);
        let (config, client_pem) = match (self.client_cert, self.client_key) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("client_cert", cert_path)?;
                let key_pem = read("client_key", key_path)?;
                let chain = certificates("client_cert", &cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    (
                        "client_key",
                        format!("{}: no PEM private key: {e}", key_path.display()),
                    )
                })?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ("client_key", format!("does not suit client_cert: {e}")))?;
                (config, Some((cert_pem, key_pem)))
            }
            (Some(_), None) => return Err(("client_key", "is needed with client_cert".into())),
            (None, Some(_)) => return Err(("client_cert", "is needed with client_key".into())),
        };
        Ok(Tls {
            config: Arc::new(config),
            ca_pem,
            client_pem,
        })
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, Invalid> {
    std::fs::read(path).map_err(|e| (key, format!("{}: {e}", path.display())))
}

fn certificates(key: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (key, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err((key, "holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn roots_from(pem: &[u8]) -> Result<RootCertStore, Invalid> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca_file", pem)? {
        roots
            .add(cert)
            .map_err(|e| ("ca_file", format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, Invalid> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err((
            "ca_file",
            format!("is needed: the system's CA store could not be read ({why}); install ca-certificates or name the broker's CA"),
        ));
    }
    Ok(roots)
}

/// The TLS handshake on a connected socket, checking that the broker's
/// certificate names `host`.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    tls: &Tls,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("TLS: {host:?} is not a server name: {e}"))?;
    TlsConnector::from(tls.config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| explain(&format!("TLS handshake with {host}: {e}")))
}

/// `message` with a hint when it is a certificate refusal, for errors of
/// any of the clients (each quotes rustls's own text).
pub fn explain(message: &str) -> String {
    let hint = if !message.contains("invalid peer certificate") {
        return message.to_owned();
    } else if message.contains("not valid for name") {
        "the broker's certificate does not name the URL's host: use a host it names"
    } else if message.contains("UnknownIssuer") {
        "the broker's certificate is not signed by a trusted CA: set ca_file to its CA"
    } else {
        "the broker's certificate is refused"
    };
    format!("{message} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_refusals_get_a_hint() {
        let unknown = explain("IO error: invalid peer certificate: UnknownIssuer");
        assert!(unknown.ends_with(
            "(the broker's certificate is not signed by a trusted CA: set ca_file to its CA)"
        ));
        let name = explain("invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only valid for IpAddress(127.0.0.1)");
        assert!(name.contains("does not name the URL's host"));
        assert_eq!(explain("connection refused"), "connection refused");
    }
}
