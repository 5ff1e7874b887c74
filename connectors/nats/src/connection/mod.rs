//! Connection settings shared by every NATS source and sink: server URL and
//! credentials, read from the pipeline file (values may come from the
//! environment through the loader's `${VAR}` interpolation).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `url` | `nats://127.0.0.1:4222` | server URL; several may be given separated by commas |
//! | `user` / `password` | none | user and password authentication (both or neither) |
//! | `token` | none | token authentication |
//! | `creds_file` | none | path of a `.creds` file (JWT + NKey seed) |
//! | `nkey_seed` | none | NKey user seed (`SU...`), usually `${NATS_NKEY_SEED}` |
//! | `tls_required` | `false`, but `true` when a `tls_*` file is set or a URL is `tls://` | refuse a server that does not offer TLS |
//! | `tls_ca_file` | the system's CAs | PEM file of the CA(s) that signed the server's certificate |
//! | `tls_cert_file` / `tls_key_file` | none | PEM client certificate and its unencrypted key, for mutual TLS (both or neither) |
//! | `connect_timeout` | `5s` | how long the first connection may take |
//!
//! At most one of `user`/`password`, `token`, `creds_file` and `nkey_seed`
//! may be set; TLS combines with any of them (see [`tls`] for the details).
//! `nkey_seed` must look like a user seed (58 characters starting with
//! `SU`) when the file is loaded; `tls_*` files must exist then.
//! Credentials never appear in logs, errors or `Debug` output: errors name
//! the URL only, stripped of any `user:password@` part, and the key to check.
//!
//! Once connected, `async-nats` reconnects by itself, forever, with backoff:
//! a restarted server is picked up again and publishes and acks wait for the
//! connection instead of failing the pipeline.

pub mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use spate_connector::{ConfigReader, SinkError};

pub use tls::TlsSettings;

/// Default `url`.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `user` and `password`.
    UserPassword(String, String),
    /// `token`.
    Token(String),
    /// `creds_file`.
    CredsFile(PathBuf),
    /// `nkey_seed`: an NKey user seed.
    NKey(String),
}

impl Auth {
    /// The pipeline key(s) these credentials come from, for messages.
    pub fn keys(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::UserPassword(..) => "`user`/`password`",
            Auth::Token(_) => "`token`",
            Auth::CredsFile(_) => "`creds_file`",
            Auth::NKey(_) => "`nkey_seed`",
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, <redacted>)"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::CredsFile(path) => write!(f, "CredsFile({path:?})"),
            Auth::NKey(_) => f.write_str("NKey(<redacted>)"),
        }
    }
}

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// The server URL(s) as written (may contain credentials; see
    /// [`ConnectSettings::display_url`]).
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// TLS.
    pub tls: TlsSettings,
    /// First-connection timeout.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("url", &self.display_url())
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectSettings {
    /// Reads `url`, credentials, TLS and `connect_timeout`, recording
    /// problems.
    pub fn read(config: &mut ConfigReader<'_>) -> Self {
        let url = config
            .string("url")
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        if url.trim().is_empty() {
            config.error_at_key(
                "url",
                "`url` is empty",
                Some(format!("write a server URL such as `{DEFAULT_URL}`")),
            );
        }
        let user = config.string("user");
        let password = config.string("password");
        let token = config.string("token");
        let creds_file = config.string("creds_file");
        let nkey_seed = config.string("nkey_seed");
        let tls = TlsSettings::read(config, &url);
        let connect_timeout = config
            .duration("connect_timeout")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut auth = Auth::None;
        let mut kinds = 0;
        match (user, password) {
            (Some(user), Some(password)) => {
                auth = Auth::UserPassword(user, password);
                kinds += 1;
            }
            (Some(_), None) => config.missing(
                "password",
                Some("`user` needs `password`; write `password: ${NATS_PASSWORD}` to take it from the environment".to_owned()),
            ),
            (None, Some(_)) => config.missing("user", Some("`password` needs `user`".to_owned())),
            (None, None) => {}
        }
        if let Some(token) = token {
            auth = Auth::Token(token);
            kinds += 1;
        }
        if let Some(path) = creds_file {
            auth = Auth::CredsFile(PathBuf::from(path));
            kinds += 1;
        }
        if let Some(seed) = nkey_seed {
            let seed = seed.trim().to_owned();
            check_nkey_seed(config, &seed);
            auth = Auth::NKey(seed);
            kinds += 1;
        }
        if kinds > 1 {
            config.error(
                config.span(),
                config.path().to_owned(),
                "more than one kind of NATS credentials is set",
                Some(
                    "use exactly one of `user`/`password`, `token`, `creds_file` or `nkey_seed`"
                        .to_owned(),
                ),
            );
        }
        Self {
            url,
            auth,
            tls,
            connect_timeout,
        }
    }

    /// The URL(s) without any `user:password@` part, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// [`ConnectSettings::connect`] for a sink named `sink_name`: a failure
    /// is the sink's `Unavailable` (retried), with the same message.
    pub async fn connect_sink(&self, sink_name: &str) -> Result<Client, SinkError> {
        self.connect(sink_name)
            .await
            .map_err(|message| SinkError::Unavailable {
                sink_name: sink_name.to_owned(),
                message,
            })
    }

    /// Connects. The error message names the URL (never credentials) and
    /// says what to check: the server, the credentials' key, or TLS.
    pub async fn connect(&self, component: &str) -> Result<Client, String> {
        let display = self.display_url();
        self.tls
            .check_files()
            .await
            .map_err(|e| format!("cannot connect to NATS at `{display}`: {e}"))?;
        let mut options = ConnectOptions::new()
            .connection_timeout(self.connect_timeout)
            .name(format!("spate {component}"))
            .max_reconnects(None);
        let url_for_events = display.clone();
        let component_for_events = component.to_owned();
        // A `Connected` after a `Disconnected` is a reconnect.
        let lost = Arc::new(AtomicBool::new(false));
        options = options.event_callback(move |event| {
            let url = url_for_events.clone();
            let component = component_for_events.clone();
            let lost = lost.clone();
            async move {
                use spate_connector::internal_events::{
                    ConnectionLost, MessagesDropped, Reconnected,
                };
                match event {
                    Event::Disconnected => {
                        lost.store(true, Ordering::Relaxed);
                        tracing::debug!(%url, "NATS disconnected");
                        ConnectionLost {
                            connector: "nats",
                            target: &component,
                            error: None,
                            context: "NATS connection lost; reconnecting",
                        }
                        .emit()
                    }
                    Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                        tracing::debug!(%url, "NATS connected");
                        Reconnected {
                            connector: "nats",
                            target: &component,
                            context: "NATS connection (re)established",
                        }
                        .emit()
                    }
                    Event::Connected => {
                        tracing::info!(%url, %component, "NATS connection (re)established")
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::debug!(%url, sid, "NATS slow consumer");
                        MessagesDropped {
                            connector: "nats",
                            name: &component,
                            context: "NATS slow consumer: messages dropped by the client",
                        }
                        .emit()
                    }
                    other => tracing::debug!(%url, %component, event = %other, "NATS event"),
                }
            }
        });
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                format!(
                    "cannot read NATS credentials file `{}`: {e}; check `creds_file`",
                    path.display()
                )
            })?,
            Auth::NKey(seed) => options.nkey(seed.clone()),
        };
        options = self.tls.apply(options);
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        let addrs: Vec<async_nats::ServerAddr> = servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid NATS url `{display}`: {e}"))?;
        options
            .connect(addrs)
            .await
            .map_err(|e| self.describe_connect_error(&display, &e))
    }

    /// Our own words for a failed first connection: async-nats's texts
    /// never contain secrets, but only ours say which key to check.
    fn describe_connect_error(&self, display: &str, error: &async_nats::ConnectError) -> String {
        if let Some(tls) = tls::describe_failure(error) {
            return format!("cannot connect to NATS at `{display}`: {tls}");
        }
        let kind = error.kind();
        let what_to_check = match (kind, &self.auth) {
            (ConnectErrorKind::Authentication, Auth::None) => {
                "the server asked for a signature; set `creds_file` or `nkey_seed`".to_owned()
            }
            (ConnectErrorKind::Authentication, auth) => format!(
                "the credentials could not be used to sign the server's challenge; check {}",
                auth.keys()
            ),
            (ConnectErrorKind::AuthorizationViolation, Auth::None) => {
                "the server requires credentials; set one of `user`/`password`, `token`, `creds_file` or `nkey_seed`".to_owned()
            }
            (ConnectErrorKind::AuthorizationViolation, auth) => format!(
                "the server refused the credentials; check {} and the server's `authorization` block",
                auth.keys()
            ),
            // A server that drops a TLS client it does not like may close
            // the connection before saying why.
            _ if self.tls.required => "check that nats-server is running and reachable there, and that it accepts this TLS client (`tls_ca_file`, `tls_cert_file`, `tls_key_file`)".to_owned(),
            _ => "check that nats-server is running and reachable there".to_owned(),
        };
        format!("cannot connect to NATS at `{display}` ({kind}); {what_to_check}")
    }
}

/// Length of an NKey seed: base32 of prefix, 32-byte seed and checksum.
const NKEY_SEED_LEN: usize = 58;

/// Records an error unless `seed` looks like an NKey user seed. The message
/// never quotes the seed.
fn check_nkey_seed(config: &ConfigReader<'_>, seed: &str) {
    let problem = if seed.is_empty() {
        Some("`nkey_seed` is empty")
    } else if seed.starts_with('U') {
        Some("`nkey_seed` holds an NKey public key (`U...`), not the user's seed")
    } else if !seed.starts_with("SU") {
        Some("`nkey_seed` is not an NKey user seed")
    } else if seed.len() != NKEY_SEED_LEN
        || !seed
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        Some("`nkey_seed` is not a whole NKey user seed")
    } else {
        None
    };
    if let Some(problem) = problem {
        config.error_at_key(
            "nkey_seed",
            problem,
            Some(format!(
                "a user seed is {NKEY_SEED_LEN} characters of `A`-`Z` and `2`-`7` starting with `SU` (as printed by `nsc` or `nk -gen user`); write `nkey_seed: ${{NATS_NKEY_SEED}}` to take it from the environment"
            )),
        );
    }
}

/// Strips `user:password@` / `token@` from every URL of a comma list.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = match one.find("://") {
                Some(i) => (&one[..i + 3], &one[i + 3..]),
                None => ("", one),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("nats://alice:s3cret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            redact_url("nats://a:4222, tls://tok@b:4222"),
            "nats://a:4222,tls://***@b:4222"
        );
        assert_eq!(redact_url("localhost:4222"), "localhost:4222");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auth = Auth::UserPassword("alice".into(), "s3cret".into());
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(!format!("{:?}", Auth::Token("t0k".into())).contains("t0k"));
        assert!(!format!("{:?}", Auth::NKey("SUSECRET".into())).contains("SUSECRET"));
    }
}
