//! The sink's settings, read through the contract's [`ConfigReader`] without
//! any network I/O. Every mapping entry keeps its place in the pipeline file,
//! so the table check done later, when the pipeline starts
//! ([`crate::check_table`]), can name the line and column of a bad entry.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `url` | required | `postgres://user@host:port/db?…` (libpq URL or `key=value` form); write a password as `${PG_PASSWORD}` |
//! | `password` | none | the password, if not in `url` (usually `${PG_PASSWORD}`) |
//! | `table` | required | `table` or `schema.table`; unquoted names fold to lower case as in SQL, `"Quoted"` ones do not |
//! | `columns` | required | `{column: source}`; source is a JSON pointer (`/a/b`), a top-level field name (`temperature` = `/temperature`), or `$key`, `$timestamp`, `$payload`, `$record_id`, `$header.NAME` |
//! | `key` | none | columns of a unique index: writes become `INSERT … ON CONFLICT (key) DO UPDATE` (idempotent); without it, plain `INSERT` |
//! | `batch_size` | 500 | most rows per transaction |
//! | `batch_wait` | 5ms | how long a batch waits to fill once its first row arrived |
//! | `connect_timeout` | 10s | per connection attempt |
//! | `max_backoff` | 5s | the longest pause between reconnection attempts |
//! | `offsets_table` | `spate_offsets` | under `exactly_once`: where source positions are stored (created if missing); `table` or `schema.table` |
//! | `state_table` | `spate_state` | under `exactly_once`: where handler state is stored (created if missing) |
//!
//! Under `exactly_once` the exactly-once session is opened by the
//! function's first postgres output, so its `offsets_table` and
//! `state_table` are the ones used.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use spate_connector::config::did_you_mean;
use spate_connector::{ConfigReader, NodeKind, Span};

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// A JSON pointer into the payload (`/device`, `/a/0/b`).
    Pointer(String),
    /// The record key.
    Key,
    /// The record timestamp (milliseconds since the Unix epoch).
    Timestamp,
    /// The whole payload.
    Payload,
    /// The `spate-record-id` header the engine sets under `exactly_once`.
    RecordId,
    /// A header, by name.
    Header(String),
}

const META: &[&str] = &["$key", "$timestamp", "$payload", "$record_id", "$header."];

impl FieldSource {
    /// Parses a mapping value; `Err` says why it is not one.
    pub fn parse(text: &str) -> Result<Self, (String, Option<String>)> {
        let text = text.trim();
        if text.starts_with('/') {
            return Ok(Self::Pointer(text.to_owned()));
        }
        if let Some(meta) = text.strip_prefix('$') {
            return match meta {
                "key" => Ok(Self::Key),
                "timestamp" => Ok(Self::Timestamp),
                "payload" => Ok(Self::Payload),
                "record_id" => Ok(Self::RecordId),
                _ => match meta.strip_prefix("header.") {
                    Some(name) if !name.is_empty() => Ok(Self::Header(name.to_owned())),
                    _ => {
                        let hint = match did_you_mean(text, META.iter().copied()) {
                            Some(best) => format!("did you mean `{best}`?"),
                            None => {
                                format!("use one of {}", spate_connector::config::quote_list(META))
                            }
                        };
                        Err((format!("unknown record field `{text}`"), Some(hint)))
                    }
                },
            };
        }
        if text.is_empty() {
            return Err((
                "empty column source".to_owned(),
                Some("write a JSON pointer such as `/temperature`, or `$payload`".to_owned()),
            ));
        }
        // A bare field name is the top-level field of that name.
        Ok(Self::Pointer(format!(
            "/{}",
            text.replace('~', "~0").replace('/', "~1")
        )))
    }

    /// How the source is written in a pipeline file.
    pub fn describe(&self) -> String {
        match self {
            Self::Pointer(p) => p.clone(),
            Self::Key => "$key".to_owned(),
            Self::Timestamp => "$timestamp".to_owned(),
            Self::Payload => "$payload".to_owned(),
            Self::RecordId => "$record_id".to_owned(),
            Self::Header(name) => format!("$header.{name}"),
        }
    }
}

/// One `column: source` entry of `columns:`, with its place in the file.
#[derive(Debug, Clone)]
pub struct ColumnMapping {
    /// The column name, exactly as written.
    pub column: String,
    /// Where its value comes from.
    pub source: FieldSource,
    /// Where the entry's key is written.
    pub span: Span,
    /// The entry's field path (`outputs[0].columns.temperature`).
    pub path: String,
}

impl ColumnMapping {
    /// `outputs[0].columns.temperature (line 23, col 9)`, for messages.
    pub fn location(&self) -> String {
        format!(
            "{} (line {}, col {})",
            self.path, self.span.line, self.span.column
        )
    }
}

/// A table name, possibly schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The schema, if given.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Parses `table`, `schema.table`, `"Mixed Case"."t"`; unquoted parts
    /// fold to lower case as PostgreSQL does.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut chars = text.trim().chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(format!("unclosed quote in `{text}`")),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c.is_whitespace() || c == '"' {
                        return Err(format!("unexpected `{c}` in `{text}`"));
                    }
                    part.extend(c.to_lowercase());
                    chars.next();
                }
            }
            if part.is_empty() {
                return Err(format!("empty name part in `{text}`"));
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(c) => return Err(format!("unexpected `{c}` in `{text}`")),
            }
        }
        match parts.len() {
            1 => Ok(Self {
                schema: None,
                name: parts.pop().unwrap_or_default(),
            }),
            2 => {
                let name = parts.pop().unwrap_or_default();
                Ok(Self {
                    schema: parts.pop(),
                    name,
                })
            }
            _ => Err(format!(
                "`{text}` has more than two parts; write `table` or `schema.table`"
            )),
        }
    }

    /// The name quoted for SQL.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Connection settings; `Debug` and [`Connection::display`] never show the
/// password.
#[derive(Clone)]
pub struct Connection {
    /// The parsed connection configuration (password included).
    pub config: tokio_postgres::Config,
    /// Per connection attempt.
    pub connect_timeout: Duration,
    display: String,
    cluster: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Parses a `postgres://` URL or a `key=value` string, and an optional
    /// separate password.
    pub fn parse(
        url: &str,
        password: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("spate");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        let user = config.get_user().unwrap_or("");
        let cluster = format!("{}:{port}/{db}", hosts.join(","));
        let display = format!("{user}@{cluster}");
        Ok(Self {
            config,
            connect_timeout,
            display,
            cluster,
        })
    }

    /// `user@host:port/db`, without the password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// `host:port/db`: which database this is, whoever connects to it
    /// (the `cluster` of the sink's transactional target).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// Everything a `postgres` sink was configured with.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to connect.
    pub connection: Connection,
    /// The target table.
    pub table: TableName,
    /// Column mappings, in file order.
    pub columns: Vec<ColumnMapping>,
    /// Upsert key columns (empty: plain inserts), with their places.
    pub key: Vec<(String, Span)>,
    /// Most rows per transaction.
    pub batch_size: usize,
    /// How long a batch waits to fill.
    pub batch_wait: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// The sink's field path in the pipeline file (`functions[0].outputs[1]`).
    pub path: String,
    /// Where the `columns:` mapping starts.
    pub columns_span: Span,
    /// Where the `table:` value is written.
    pub table_span: Span,
    /// Where an exactly-once session stores source positions.
    pub offsets_table: TableName,
    /// Where an exactly-once session stores handler state.
    pub state_table: TableName,
}

/// Rows per batch when `batch_size` is not written.
pub const DEFAULT_BATCH_SIZE: u64 = 500;

/// The largest `batch_size` (it sizes the sink's queue).
pub const MAX_BATCH_SIZE: u64 = 100_000;

/// The offsets table used when `offsets_table` is not set.
pub const DEFAULT_OFFSETS_TABLE: &str = "spate_offsets";

/// The state table used when `state_table` is not set.
pub const DEFAULT_STATE_TABLE: &str = "spate_state";

impl SinkConfig {
    /// Reads the sink's settings; `None` (with errors recorded) when invalid.
    pub fn read(config: &mut ConfigReader<'_>) -> Option<Self> {
        let mark = config.errors().borrow().len();
        let url = config.required_string(
            "url",
            Some(
                "write `url: postgres://user@host:5432/db` (the password as `${PG_PASSWORD}`)"
                    .to_owned(),
            ),
        );
        let password = config.string("password");
        let connect_timeout = config
            .duration("connect_timeout")
            .unwrap_or(Duration::from_secs(10));
        let table_span = config.node("table").map_or(config.span(), |n| n.span);
        let table_text = config.required_string(
            "table",
            Some("write `table: telemetry` or `table: schema.telemetry`".to_owned()),
        );
        let batch_size = config
            .u64_in("batch_size", 1..=MAX_BATCH_SIZE)
            .unwrap_or(DEFAULT_BATCH_SIZE);
        let batch_wait = config
            .duration("batch_wait")
            .unwrap_or(Duration::from_millis(5));
        let max_backoff = config
            .duration("max_backoff")
            .unwrap_or(Duration::from_secs(5));

        let connection = url.as_deref().and_then(|url| {
            match Connection::parse(url, password.as_deref(), connect_timeout) {
                Ok(c) => Some(c),
                Err(message) => {
                    // Never echo the URL: it may hold a password.
                    config.error_at_key(
                        "url",
                        message,
                        Some("write `postgres://user@host:5432/dbname`".to_owned()),
                    );
                    None
                }
            }
        });
        let table = table_text
            .as_deref()
            .and_then(|text| match TableName::parse(text) {
                Ok(t) => Some(t),
                Err(message) => {
                    config.error_at_key("table", message, None);
                    None
                }
            });
        let offsets_table = table_setting(config, "offsets_table", DEFAULT_OFFSETS_TABLE);
        let state_table = table_setting(config, "state_table", DEFAULT_STATE_TABLE);

        let (columns, columns_span) = read_columns(config);
        let key = read_key(config, &columns);

        if config.errors().borrow().len() > mark {
            return None;
        }
        Some(Self {
            connection: connection?,
            table: table?,
            columns,
            key,
            batch_size: usize::try_from(batch_size).unwrap_or(usize::MAX),
            batch_wait,
            max_backoff,
            path: config.path().to_owned(),
            columns_span,
            table_span,
            offsets_table: offsets_table?,
            state_table: state_table?,
        })
    }
}

/// `offsets_table` or `state_table`: a table name, `default` when not set.
fn table_setting(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    default: &str,
) -> Option<TableName> {
    let text = config.string(key);
    match TableName::parse(text.as_deref().unwrap_or(default)) {
        Ok(t) => Some(t),
        Err(message) => {
            config.error_at_key(
                key,
                message,
                Some(format!(
                    "write `{key}: {default}` or `{key}: schema.{default}`"
                )),
            );
            None
        }
    }
}

/// `columns`: a non-empty mapping of column names to payload fields, with
/// where it starts (the sink's mapping when absent).
fn read_columns(config: &mut ConfigReader<'_>) -> (Vec<ColumnMapping>, Span) {
    let columns_path = config.child_path("columns");
    let mut columns = Vec::new();
    let mut columns_span = config.span();
    match config.node("columns") {
        None => config.missing(
            "columns",
            Some("map columns to payload fields: `columns: {device_id: /device, temperature: /temperature}`".to_owned()),
        ),
        Some(node) => {
            columns_span = node.span;
            match &node.kind {
                NodeKind::Map(entries) if !entries.is_empty() => {
                    for (column, span, value) in entries {
                        let path = format!("{columns_path}.{column}");
                        let Some(text) = value.as_text() else {
                            config.error(
                                value.span,
                                path,
                                format!(
                                    "column `{column}` must map to a JSON pointer or record field, found {}",
                                    value.type_name()
                                ),
                                Some("write `column: /field` or `column: $timestamp`".to_owned()),
                            );
                            continue;
                        };
                        match FieldSource::parse(text) {
                            Ok(source) => columns.push(ColumnMapping {
                                column: column.clone(),
                                source,
                                span: *span,
                                path,
                            }),
                            Err((message, hint)) => {
                                config.error(value.span, path, message, hint)
                            }
                        }
                    }
                }
                _ => config.error(
                    node.span,
                    columns_path.clone(),
                    "`columns` must be a non-empty mapping of column names to payload fields",
                    Some("write `columns: {device_id: /device, ts: /ts}`".to_owned()),
                ),
            }
        }
    }
    (columns, columns_span)
}

/// `key`: upsert key columns, each one of `columns`.
fn read_key(config: &mut ConfigReader<'_>, columns: &[ColumnMapping]) -> Vec<(String, Span)> {
    let key_path = config.child_path("key");
    let mut key = Vec::new();
    if let Some(items) = config.list("key") {
        for item in items {
            match item.as_text() {
                Some(name) if columns.iter().any(|c| c.column == name) => {
                    key.push((name.to_owned(), item.span))
                }
                Some(name) => {
                    let hint = did_you_mean(name, columns.iter().map(|c| c.column.as_str()))
                        .map(|b| format!("did you mean `{b}`?"))
                        .or_else(|| {
                            Some("every key column must be mapped in `columns`".to_owned())
                        });
                    config.error(
                        item.span,
                        key_path.clone(),
                        format!("key column `{name}` is not in `columns`"),
                        hint,
                    );
                }
                None => config.error(
                    item.span,
                    key_path.clone(),
                    format!("`key` must list column names, found {}", item.type_name()),
                    None,
                ),
            }
        }
    }
    key
}

#[cfg(test)]
mod tests;
