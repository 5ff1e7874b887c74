//! Connection settings shared by MQTT sources and sinks.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `url` | `mqtt://127.0.0.1:1883` | broker: `mqtt://` or `tcp://` (plain, port 1883), `mqtts://` or `ssl://` (TLS, port 8883) |
//! | `username` / `password` | none | MQTT username and password; write `password: ${MQTT_PASSWORD}` to take it from the environment (`password` needs `username`) |
//! | `tls_ca_file` | the system's CAs | PEM file of the CA(s) that signed the broker's certificate; setting it turns TLS on |
//! | `keep_alive` | `30s` | MQTT keep-alive interval (whole seconds, at least `1s`, or `0s` for none) |
//! | `connect_timeout` | `5s` | how long a connection attempt may take |
//! | `max_packet_size` | `1MiB` | largest MQTT packet sent or accepted |
//!
//! Passwords never appear in logs, errors or `Debug` output.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use spate_connector::ConfigReader;

/// Default `url`.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// Default `keep_alive`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `max_packet_size`.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1 << 20;

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to use TLS.
    pub tls: bool,
    /// CA file for TLS, if not the system's CAs.
    pub tls_ca_file: Option<PathBuf>,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Connection attempt timeout.
    pub connect_timeout: Duration,
    /// Largest packet in either direction.
    pub max_packet_size: usize,
}

impl fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("url", &self.display_url())
            .field("tls_ca_file", &self.tls_ca_file)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| format!("{user}:<redacted>")),
            )
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_packet_size", &self.max_packet_size)
            .finish()
    }
}

/// A client id for a connection configured without one:
/// `{prefix}-{pid}-{nanoseconds}`, the process id and the clock telling
/// connections apart.
pub(crate) fn generated_client_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Splits `scheme://host:port` into (tls, host, port), or says what is wrong.
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let url = url.trim();
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i], &url[i + 3..]),
        None => ("mqtt", url),
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => {
            return Err(format!(
                "unknown URL scheme `{other}`; use `mqtt://` (plain) or `mqtts://` (TLS)"
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(
            "credentials in the URL are not supported; use `username` and `password`".to_owned(),
        );
    }
    if rest.contains('/') {
        return Err("the URL must not have a path (`mqtt://host:port`)".to_owned());
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || port.parse::<u16>().is_ok() => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port number"))?;
            (host, port)
        }
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    Ok((tls, host.to_owned(), port))
}

impl ConnectSettings {
    /// Reads the connection keys, recording problems.
    pub fn read(config: &mut ConfigReader<'_>) -> Self {
        let url = config
            .string("url")
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let (mut tls, host, port) = match parse_url(&url) {
            Ok(parts) => parts,
            Err(problem) => {
                config.error_at_key(
                    "url",
                    format!("invalid MQTT url: {problem}"),
                    Some(format!(
                        "write it as `{DEFAULT_URL}` or `mqtts://broker:8883`"
                    )),
                );
                (false, String::new(), 0)
            }
        };
        let username = config.string("username");
        let password = config.string("password");
        let credentials = match (username, password) {
            (Some(user), Some(password)) => Some((user, password)),
            (Some(user), None) => Some((user, String::new())),
            (None, Some(_)) => {
                config.missing("username", Some("`password` needs `username`".to_owned()));
                None
            }
            (None, None) => None,
        };
        let tls_ca_file = config.string("tls_ca_file").map(PathBuf::from);
        if let Some(path) = &tls_ca_file {
            tls = true;
            if !path.is_file() {
                config.error_at_key(
                    "tls_ca_file",
                    format!("`tls_ca_file` `{}` does not exist", path.display()),
                    Some("give the path of a PEM file with the broker's CA certificate".to_owned()),
                );
            }
        }
        let keep_alive = config.duration("keep_alive").unwrap_or(DEFAULT_KEEP_ALIVE);
        if !keep_alive.is_zero()
            && (keep_alive < Duration::from_secs(1) || keep_alive.subsec_nanos() != 0)
        {
            config.error_at_key(
                "keep_alive",
                "`keep_alive` must be whole seconds (at least `1s`), or `0s` to turn it off",
                Some("MQTT counts keep-alive in seconds, e.g. `30s`".to_owned()),
            );
        }
        if keep_alive.as_secs() > u64::from(u16::MAX) {
            config.error_at_key(
                "keep_alive",
                "`keep_alive` is longer than MQTT allows (65535s)",
                None,
            );
        }
        let connect_timeout = config
            .duration("connect_timeout")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if connect_timeout < Duration::from_secs(1) {
            config.error_at_key(
                "connect_timeout",
                "`connect_timeout` must be at least `1s`",
                None,
            );
        }
        let max_packet_size = config
            .byte_size("max_packet_size")
            .map_or(DEFAULT_MAX_PACKET_SIZE, |n| n as usize);
        if !(1024..=268_435_455).contains(&max_packet_size) {
            config.error_at_key(
                "max_packet_size",
                "`max_packet_size` must be between 1KiB and 256MiB (the MQTT limit)",
                None,
            );
        }
        Self {
            host,
            port,
            tls,
            tls_ca_file,
            credentials,
            keep_alive,
            connect_timeout,
            max_packet_size,
        }
    }

    /// `scheme://host:port`, for names and messages (never credentials).
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Client options for `client_id`; reads the CA file.
    pub async fn options(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> Result<MqttOptions, String> {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(clean_session)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            .set_request_channel_capacity(1024);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if self.tls {
            let config = match &self.tls_ca_file {
                Some(path) => {
                    let ca = tokio::fs::read(path).await.map_err(|e| {
                        format!("cannot read `tls_ca_file` `{}`: {e}", path.display())
                    })?;
                    TlsConfiguration::Simple {
                        ca,
                        alpn: None,
                        client_auth: None,
                    }
                }
                None => std::panic::catch_unwind(TlsConfiguration::default).map_err(|_| {
                    "cannot load the system's CA certificates; set `tls_ca_file`".to_owned()
                })?,
            };
            options.set_transport(Transport::tls_with_config(config));
        }
        Ok(options)
    }

    /// A client and its event loop (not connected yet).
    pub fn client(&self, options: MqttOptions) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
        let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 1024);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        event_loop.set_network_options(network);
        (client, event_loop)
    }

    /// Connects a throwaway client under `client_id` with a clean session
    /// (a running spate's session is left alone) and waits for the broker's
    /// CONNACK: how `validate --connect` reaches the broker.
    pub async fn connect_throwaway(
        &self,
        client_id: &str,
    ) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
        let options = self.options(client_id, true).await?;
        let (client, mut event_loop) = self.client(options);
        self.first_connack(&mut event_loop).await?;
        Ok((client, event_loop))
    }

    /// Polls a fresh event loop until the broker's CONNACK; returns whether
    /// the broker still had a session for this client id.
    pub async fn first_connack(&self, event_loop: &mut rumqttc::EventLoop) -> Result<bool, String> {
        let wait = self.connect_timeout + Duration::from_secs(1);
        let polled = tokio::time::timeout(wait, async {
            loop {
                match event_loop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        return Ok(ack.session_present)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(self.describe_error(&e)),
                }
            }
        })
        .await;
        match polled {
            Ok(result) => result,
            Err(_) => Err(format!(
                "cannot connect to MQTT broker at `{}` within {:?}; check that it is running and reachable there",
                self.display_url(),
                wait
            )),
        }
    }

    /// Our words for a failed connection: which key to check.
    pub fn describe_error(&self, error: &rumqttc::ConnectionError) -> String {
        use rumqttc::{ConnectReturnCode, ConnectionError};
        let url = self.display_url();
        let check = match error {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ) => match self.credentials {
                Some(_) => "the broker refused the credentials; check `username` and `password`",
                None => "the broker requires credentials; set `username` and `password`",
            },
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
                "the broker rejected the client id; check `client_id`"
            }
            ConnectionError::Tls(_) => {
                "TLS failed; check `tls_ca_file` and that the broker serves TLS on this port"
            }
            _ if self.tls => "check that the broker is running there and serves TLS (`mqtts://`)",
            _ => "check that the MQTT broker is running and reachable there",
        };
        format!("cannot connect to MQTT broker at `{url}` ({error}); {check}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("mqtt://h:1884"),
            Ok((false, "h".to_owned(), 1884))
        );
        assert_eq!(parse_url("mqtts://h"), Ok((true, "h".to_owned(), 8883)));
        assert_eq!(
            parse_url("127.0.0.1:1883"),
            Ok((false, "127.0.0.1".to_owned(), 1883))
        );
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("mqtt://u:p@h").is_err());
        assert!(parse_url("mqtt://h:x").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = ConnectSettings {
            host: "h".into(),
            port: 1,
            tls: false,
            tls_ca_file: None,
            credentials: Some(("alice".into(), "s3cret".into())),
            keep_alive: DEFAULT_KEEP_ALIVE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        };
        let text = format!("{settings:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("alice"));
    }
}
