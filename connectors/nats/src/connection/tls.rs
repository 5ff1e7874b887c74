//! TLS settings of a NATS connection: which CA to trust, the client
//! certificate for mutual TLS, and whether TLS is required.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `tls_required` | `false`, but `true` when a `tls_*` file is set or a URL is `tls://` | refuse to talk to a server that does not offer TLS |
//! | `tls_ca_file` | the system's CAs | PEM file of the CA(s) that signed the server's certificate |
//! | `tls_cert_file` / `tls_key_file` | none | PEM client certificate and its unencrypted private key, for mutual TLS (both or neither) |
//!
//! Paths are relative to spate's working directory. A file that does not
//! exist is reported when the pipeline file is loaded; a file that holds no
//! usable PEM item is reported when connecting, naming the key and the path
//! (never the file's contents). Without `tls_required`, TLS is still used
//! whenever the server asks for it.
//!
//! Failed handshakes are explained in the connection error ("the server's
//! certificate is not signed by a CA in `tls_ca_file`", "the server
//! rejected the client certificate", "the server did not answer the TLS
//! handshake", ...) with the key to check.

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::rustls;
use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::{ConnectErrorKind, ConnectOptions};
use spate_connector::ConfigReader;

/// A client certificate and its private key, for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// `tls_cert_file`: PEM certificate (chain).
    pub cert_file: PathBuf,
    /// `tls_key_file`: PEM private key. Only the path is ever shown.
    pub key_file: PathBuf,
}

/// The TLS part of the connection settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The connection must be TLS (`tls_required`, or implied by a `tls_*`
    /// file or a `tls://` URL).
    pub required: bool,
    /// `tls_ca_file`: the roots to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// `tls_cert_file` + `tls_key_file`.
    pub client_cert: Option<ClientCert>,
}

impl TlsSettings {
    /// Reads the `tls_*` keys, recording problems; `url` is the `url` value
    /// (a `tls://` scheme implies `tls_required`).
    pub fn read(config: &mut ConfigReader<'_>, url: &str) -> Self {
        let explicit = config.bool("tls_required");
        let ca_file = existing_file(config, "tls_ca_file");
        let cert_file = existing_file(config, "tls_cert_file");
        let key_file = existing_file(config, "tls_key_file");
        // Presence, not validity, decides "both or neither" and the implied
        // `tls_required`, so a bad path is reported once, not twice.
        let cert_written = config.has("tls_cert_file");
        let key_written = config.has("tls_key_file");
        match (cert_written, key_written) {
            (true, false) => config.missing(
                "tls_key_file",
                Some("`tls_cert_file` needs `tls_key_file`, the PEM private key of the client certificate".to_owned()),
            ),
            (false, true) => config.missing(
                "tls_cert_file",
                Some("`tls_key_file` needs `tls_cert_file`, the PEM client certificate it belongs to".to_owned()),
            ),
            _ => {}
        }
        let mut implied_by = Vec::new();
        for key in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            if config.has(key) {
                implied_by.push(format!("`{key}`"));
            }
        }
        if url
            .split(',')
            .any(|one| one.trim().to_ascii_lowercase().starts_with("tls://"))
        {
            implied_by.push("a `tls://` URL".to_owned());
        }
        if explicit == Some(false) && !implied_by.is_empty() {
            config.error_at_key(
                "tls_required",
                format!(
                    "`tls_required` is `false`, but {} makes the connection TLS",
                    implied_by.join(" and ")
                ),
                Some("remove `tls_required: false`; to connect without TLS, remove the `tls_*` keys and use a `nats://` URL".to_owned()),
            );
        }
        let client_cert = match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file,
                key_file,
            }),
            _ => None,
        };
        Self {
            required: explicit.unwrap_or(false) || !implied_by.is_empty(),
            ca_file,
            client_cert,
        }
    }

    /// Checks, when connecting, that every file holds what it should, so a
    /// wrong file is named by its key instead of failing deep in the
    /// handshake.
    pub async fn check_files(&self) -> Result<(), TlsFileError> {
        if let Some(path) = &self.ca_file {
            check_certificates("tls_ca_file", path).await?;
        }
        if let Some(client) = &self.client_cert {
            check_certificates("tls_cert_file", &client.cert_file).await?;
            check_private_key(&client.key_file).await?;
        }
        Ok(())
    }

    /// Adds these settings to `options`.
    pub fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(path) = &self.ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if let Some(client) = &self.client_cert {
            options =
                options.add_client_certificate(client.cert_file.clone(), client.key_file.clone());
        }
        options.require_tls(self.required)
    }
}

/// Reads a path key and records an error when the file is not there.
fn existing_file(config: &mut ConfigReader<'_>, key: &'static str) -> Option<PathBuf> {
    let text = config.non_empty_string(key, Some("write the path of a PEM file".to_owned()))?;
    let path = PathBuf::from(text);
    let problem = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => return Some(path),
        Ok(_) => "is not a file".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be read ({e})"),
    };
    config.error_at_key(
        key,
        format!("`{key}` file `{}` {problem}", path.display()),
        Some(
            "write the path of a PEM file; a relative path is taken from spate's working directory"
                .to_owned(),
        ),
    );
    None
}

/// A TLS file that cannot be used, found when connecting. Its message names
/// the key and the path, never the contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFileError {
    /// The file could not be read.
    Unreadable {
        /// The pipeline key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file holds no PEM certificate, or a broken one.
    NoCertificate {
        /// The pipeline key.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// `tls_key_file` holds no unencrypted PEM private key.
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFileError::Unreadable { key, path, reason } => write!(
                f,
                "TLS file `{}` (`{key}`) cannot be read: {reason}",
                path.display()
            ),
            TlsFileError::NoCertificate { key, path } => write!(
                f,
                "TLS file `{}` (`{key}`) holds no readable PEM certificate; it must contain `-----BEGIN CERTIFICATE-----` blocks",
                path.display()
            ),
            TlsFileError::NoPrivateKey { path } => write!(
                f,
                "TLS file `{}` (`tls_key_file`) holds no readable PEM private key; it must contain an unencrypted PKCS#8, PKCS#1 or SEC1 key (encrypted keys are not supported)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TlsFileError {}

async fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| TlsFileError::Unreadable {
            key,
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

async fn check_certificates(key: &'static str, path: &Path) -> Result<(), TlsFileError> {
    let bytes = read_file(key, path).await?;
    let certificates: Result<Vec<CertificateDer<'_>>, _> =
        CertificateDer::pem_slice_iter(&bytes).collect();
    match certificates {
        Ok(list) if !list.is_empty() => Ok(()),
        _ => Err(TlsFileError::NoCertificate {
            key,
            path: path.to_owned(),
        }),
    }
}

async fn check_private_key(path: &Path) -> Result<(), TlsFileError> {
    let bytes = read_file("tls_key_file", path).await?;
    // The parser's error is dropped on purpose: it may quote the file.
    PrivateKeyDer::from_pem_slice(&bytes)
        .map(|_| ())
        .map_err(|_| TlsFileError::NoPrivateKey {
            path: path.to_owned(),
        })
}

/// Explains a connection error caused by TLS, or `None` when TLS played no
/// part. The text never contains key material.
pub fn describe_failure(error: &async_nats::ConnectError) -> Option<String> {
    if error.kind() == ConnectErrorKind::Tls {
        let detail = std::error::Error::source(error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        return Some(format!(
            "the TLS setup failed{detail}; check `tls_ca_file`, `tls_cert_file` and `tls_key_file`"
        ));
    }
    let tls_error = find_rustls_error(error)?;
    Some(describe_rustls_error(tls_error))
}

/// The `rustls` error somewhere in `error`'s chain. `std::io::Error`'s
/// `source` skips the error it wraps, so that one is looked into by hand.
fn find_rustls_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => error.source(),
        };
    }
    None
}

fn describe_rustls_error(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    match error {
        E::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "TLS handshake failed: the server's certificate is not signed by a trusted CA; set `tls_ca_file` to the PEM file of the CA that signed it".to_owned()
        }
        E::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "TLS handshake failed: the server's certificate is not valid for the host name in `url`; connect with a name (or IP address) that the certificate lists".to_owned()
        }
        E::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. },
        ) => format!(
            "TLS handshake failed: the server's certificate is outside its validity period ({error}); renew it or check the clock"
        ),
        E::InvalidCertificate(other) => format!(
            "TLS handshake failed: the server's certificate was rejected ({other:?}); check the server's certificate and `tls_ca_file`"
        ),
        E::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) => format!(
            "TLS handshake failed: the server rejected the client certificate ({error}); it requires one signed by a CA it trusts: check `tls_cert_file` and `tls_key_file`"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "TLS handshake failed: the server did not answer it in TLS, so it probably does not offer TLS; enable `tls` on the server or drop `tls_required`, the `tls_*` keys and any `tls://` URL".to_owned()
        }
        other => format!(
            "TLS handshake failed ({other}); check `tls_ca_file`, `tls_cert_file` and `tls_key_file`, and that the server offers TLS on that port"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let error = async_nats::ConnectError::with_source(ConnectErrorKind::Io, io);
        let text = describe_failure(&error).expect("a TLS failure");
        assert!(text.contains("not signed by a trusted CA"), "{text}");
        let plain = async_nats::ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(describe_failure(&plain), None);
    }
}
