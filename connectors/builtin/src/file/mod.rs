//! The `file` connector: JSON Lines files as a source and as a sink.
//!
//! **Source.** A file is one partition (`0`); an event's offset is its line
//! number, counted from 0, and its position's stream is the configured path.
//! With `layout: envelope` (the default) each line is an
//! [`envelope`] object; a line that is not one is *not* dropped: it becomes
//! an event whose payload is the raw line and which carries the
//! [`DECODE_ERROR`](spate_connector::dead_letter::DECODE_ERROR) header naming
//! the line, so the engine dead-letters it. With `layout: raw` each line is a
//! payload as is. Blank lines of an envelope file are skipped (their line
//! numbers stay unused); a trailing `\r` is removed from every line.
//!
//! Positions are kept in memory across rebuilds of the same source within
//! the process and, when `commit_file` is set, written atomically to that
//! file on every commit, so a restart resumes after the last committed line:
//! with a `commit_file` the source is replayable with durable positions.
//! At the end of the file the source returns `End` (`follow: false`) or keeps
//! polling for appended lines every `poll_interval` (`follow: true`, like
//! `tail -f`; a last line without its newline is only read once the newline
//! arrives). Truncation or rotation of a followed file is not detected.
//!
//! **Sink.** Records are appended as envelope lines, so a file sink's output
//! reads back through a file source unchanged. Writes from many tasks are
//! grouped: one writer task takes everything queued, writes it, flushes it
//! (and `fsync`s if asked), then acknowledges each write. A write resolves
//! only once its line is in the file. The sink assumes it is the file's only
//! writer.
//!
//! | source key | default | meaning |
//! | --- | --- | --- |
//! | `path` | required | the file to read |
//! | `layout` | `envelope` | `envelope` (each line a JSON envelope of key, payload, headers, timestamp) or `raw` (each line a payload as is) |
//! | `follow` | `false` | wait for appended lines at the end of the file |
//! | `poll_interval` | `250ms` | how often a followed file is checked for new lines |
//! | `commit_file` | none | where committed positions are persisted |
//! | `max_line_bytes` | `16MiB` | longer lines become decode-error events, truncated to this size |
//!
//! | sink key | default | meaning |
//! | --- | --- | --- |
//! | `path` | required | the file to write (parent directories are created) |
//! | `append` | `true` | `false` truncates the file when the sink is built |
//! | `fsync` | `false` | `sync_data` after every group of writes, not only on flush |

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use spate_connector::factory::ConnectorFamily;
use spate_connector::{
    Capabilities, ConfigReader, Sink, SinkBuilder, SinkError, Source, SourceBuilder, SourceError,
};

pub mod envelope;
pub mod sink;
pub mod source;

pub use sink::{FileSink, FileSinkSettings};
pub use source::{Checkpoint, FileSource, FileSourceSettings, LineFormat};

use crate::{error_mark, has_new_errors};

/// What file sources promise: durable positions (line numbers, persisted
/// with `commit_file`), no transactions.
pub const CAPABILITIES: Capabilities = Capabilities::NONE.with_durable_positions();

/// What file sinks promise: acknowledged (flushed) appends; they store no
/// source positions and take part in no transaction.
pub const SINK_CAPABILITIES: Capabilities = Capabilities::NONE;

/// Default `poll_interval` of a followed file.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Default `max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 16 << 20;

/// The `file` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileFactory;

impl ConnectorFamily for FileFactory {
    const KIND: &'static str = "file";
    const SOURCE: Option<Capabilities> = Some(CAPABILITIES);
    const SINK: Option<Capabilities> = Some(SINK_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let mark = error_mark(config);
        let path = read_path(
            config,
            "the JSON Lines file to read, e.g. `path: data/events.jsonl`",
        );
        let format = match config.one_of("layout", &["envelope", "raw"]) {
            Some("raw") => LineFormat::Raw,
            _ => LineFormat::Envelope,
        };
        let follow = config.bool("follow").unwrap_or(false);
        let poll_interval = config
            .duration("poll_interval")
            .unwrap_or(DEFAULT_POLL_INTERVAL);
        if poll_interval.is_zero() {
            config.error_at_key(
                "poll_interval",
                "`poll_interval` must be longer than zero",
                Some("e.g. `poll_interval: 250ms`".to_owned()),
            );
        }
        let commit_file = config.string("commit_file");
        match &commit_file {
            Some(c) if c.is_empty() => {
                config.error_at_key("commit_file", "`commit_file` is empty", None)
            }
            Some(c) if Some(c) == path.as_ref() => config.error_at_key(
                "commit_file",
                "`commit_file` must not be the file being read",
                Some(
                    "name a separate file, e.g. `commit_file: data/events.jsonl.offset`".to_owned(),
                ),
            ),
            _ => {}
        }
        let max_line_bytes = config
            .byte_size("max_line_bytes")
            .unwrap_or(DEFAULT_MAX_LINE_BYTES);
        let max_line_bytes = match usize::try_from(max_line_bytes) {
            Ok(n) if n > 0 => n,
            _ => {
                config.error_at_key(
                    "max_line_bytes",
                    "`max_line_bytes` must be more than zero and fit in memory",
                    None,
                );
                0
            }
        };
        if has_new_errors(config, mark) {
            return None;
        }
        let settings = FileSourceSettings {
            path: PathBuf::from(path?),
            format,
            follow,
            poll_interval,
            commit_file: commit_file.map(PathBuf::from),
            max_line_bytes,
        };
        Some(Box::new(FileSourceBuilder {
            settings,
            committed: Arc::default(),
        }))
    }

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let mark = error_mark(config);
        let path = read_path(
            config,
            "the JSON Lines file to write, e.g. `path: out/results.jsonl`",
        );
        let append = config.bool("append").unwrap_or(true);
        let fsync = config.bool("fsync").unwrap_or(false);
        if has_new_errors(config, mark) {
            return None;
        }
        Some(Box::new(FileSinkBuilder {
            settings: FileSinkSettings {
                path: PathBuf::from(path?),
                append,
                fsync,
            },
        }))
    }
}

/// Reads the required, non-empty `path` key.
fn read_path(config: &mut ConfigReader<'_>, hint: &str) -> Option<String> {
    let path = config.required_string("path", Some(hint.to_owned()))?;
    if path.is_empty() {
        config.error_at_key("path", "`path` is empty", Some(hint.to_owned()));
        return None;
    }
    Some(path)
}

/// Opens file sources; remembers their committed position so a rebuilt
/// source (a restart within the process) resumes where the last one stopped.
struct FileSourceBuilder {
    settings: FileSourceSettings,
    committed: Arc<Mutex<Option<Checkpoint>>>,
}

#[async_trait]
impl SourceBuilder for FileSourceBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let source =
            FileSource::open_with_memory(self.settings.clone(), self.committed.clone()).await?;
        Ok(Box::new(source))
    }
}

/// Opens file sinks.
struct FileSinkBuilder {
    settings: FileSinkSettings,
}

#[async_trait]
impl SinkBuilder for FileSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(FileSink::open(self.settings.clone()).await?))
    }
}
