//! The `stdout` sink: one line per record on standard output, for demos,
//! debugging and shell pipelines.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `layout` | `payload` | `payload`: the payload bytes and a newline; `envelope`: a JSON Lines [envelope] (key, payload, headers, timestamp), readable by the `file` source |
//!
//! Writes from concurrent tasks are serialised through one lock (one for the
//! whole process, shared by every stdout sink), so lines never interleave,
//! and each write is flushed before it resolves. A payload
//! containing newlines spans several lines in the `payload` layout; use
//! `envelope` when that matters. Standard output keeps no positions and
//! cannot take part in transactions: capabilities `{exactly_once: false,
//! durable_positions: false}`.

use std::io::Write as _;

use async_trait::async_trait;
use spate_connector::factory::ConnectorFamily;
use spate_connector::{Capabilities, ConfigReader, Record, Sink, SinkBuilder, SinkError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::file::envelope;
use crate::{error_mark, has_new_errors};

/// What stdout sinks promise: nothing beyond "written and flushed".
pub const CAPABILITIES: Capabilities = Capabilities::NONE;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdoutFormat {
    /// The payload bytes and a newline.
    #[default]
    Payload,
    /// One JSON Lines envelope per record.
    Envelope,
}

/// The `stdout` connector family (sink only).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutFactory;

impl ConnectorFamily for StdoutFactory {
    const KIND: &'static str = "stdout";
    const SINK: Option<Capabilities> = Some(CAPABILITIES);

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let mark = error_mark(config);
        let format = match config.one_of("layout", &["payload", "envelope"]) {
            Some("envelope") => StdoutFormat::Envelope,
            _ => StdoutFormat::Payload,
        };
        if has_new_errors(config, mark) {
            return None;
        }
        Some(Box::new(StdoutSinkBuilder { format }))
    }
}

struct StdoutSinkBuilder {
    format: StdoutFormat,
}

#[async_trait]
impl SinkBuilder for StdoutSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(StdoutSink::new(self.format)))
    }
}

/// Serialises every stdout sink of the process, so at most one blocking
/// write to standard output is under way at a time.
static STDOUT: Mutex<()> = Mutex::const_new(());

/// Where a [`StdoutSink`] writes.
enum Output {
    /// The process's standard output, written on the blocking pool under
    /// [`STDOUT`] and the standard library's own stdout lock (which
    /// `println!` and log output also take, so lines never interleave).
    Stdout,
    /// Any writer, under its own lock.
    Writer(Mutex<Box<dyn AsyncWrite + Send + Unpin>>),
}

/// Prints records, one per line; see the [module docs](self).
pub struct StdoutSink {
    name: String,
    format: StdoutFormat,
    out: Output,
}

impl StdoutSink {
    /// A sink printing to the process's standard output.
    pub fn new(format: StdoutFormat) -> Self {
        Self {
            name: "stdout:stdout".to_owned(),
            format,
            out: Output::Stdout,
        }
    }

    /// A sink printing to any writer (standard error, a pipe, a buffer in
    /// tests) under the name `name`.
    pub fn with_writer(
        name: &str,
        format: StdoutFormat,
        out: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Self {
            name: name.to_owned(),
            format,
            out: Output::Writer(Mutex::new(Box::new(out))),
        }
    }

    fn unavailable(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::Unavailable {
            sink_name: self.name.clone(),
            message: format!("cannot {what} standard output: {e}"),
        }
    }

    /// Writes and flushes `line` under the lock.
    async fn emit(&self, line: Vec<u8>) -> std::io::Result<()> {
        match &self.out {
            Output::Stdout => {
                let _serialised = STDOUT.lock().await;
                tokio::task::spawn_blocking(move || {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&line)?;
                    out.flush()
                })
                .await
                .map_err(std::io::Error::other)?
            }
            Output::Writer(out) => {
                let mut out = out.lock().await;
                out.write_all(&line).await?;
                out.flush().await
            }
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        let line = match self.format {
            StdoutFormat::Payload => {
                let mut line = Vec::with_capacity(record.payload.len() + 1);
                line.extend_from_slice(&record.payload);
                line.push(b'\n');
                line
            }
            StdoutFormat::Envelope => {
                let mut line = Vec::with_capacity(record.payload.len() + 64);
                envelope::encode(&record, &mut line);
                line
            }
        };
        self.emit(line)
            .await
            .map_err(|e| self.unavailable("write to", e))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        // Every write is flushed before it resolves; this only waits for
        // writes under way.
        self.emit(Vec::new())
            .await
            .map_err(|e| self.unavailable("flush", e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use spate_connector::config::ConfigErrors;
    use spate_connector::{ConfigNode, ConnectorFactory, NodeKind, Span};
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn concurrent_writes_come_out_as_whole_lines() {
        let (writer, mut reader) = tokio::io::duplex(1 << 20);
        let sink = Arc::new(StdoutSink::with_writer(
            "test",
            StdoutFormat::Payload,
            writer,
        ));
        let tasks: Vec<_> = (0..20)
            .map(|t| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let payload = format!("task-{t}-line-{i}-{}", "x".repeat(100));
                        sink.write(Record::from_payload(payload))
                            .await
                            .expect("write");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        drop(sink);
        let mut text = String::new();
        reader.read_to_string(&mut text).await.expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 500, "every line whole and once");
        assert!(lines
            .iter()
            .all(|l| l.starts_with("task-") && l.ends_with(&"x".repeat(100))));
    }

    #[tokio::test]
    async fn writes_to_the_real_standard_output_resolve() {
        let sink = StdoutSink::new(StdoutFormat::Payload);
        sink.write(Record::from_payload("stdout sink test line"))
            .await
            .expect("write");
        sink.flush().await.expect("flush");
    }

    #[tokio::test]
    async fn envelope_format_writes_json_lines() {
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let sink = StdoutSink::with_writer("test", StdoutFormat::Envelope, writer);
        let mut record = Record::from_payload(r#"{"a":1}"#);
        record.key = Some(Bytes::from_static(b"k"));
        sink.write(record).await.expect("write");
        drop(sink);
        let mut text = String::new();
        reader.read_to_string(&mut text).await.expect("read");
        assert_eq!(text, "{\"key\":\"k\",\"payload\":{\"a\":1}}\n");
    }

    #[test]
    fn a_bad_layout_is_reported_with_a_suggestion() {
        let node = ConfigNode {
            kind: NodeKind::Map(vec![(
                "layout".to_owned(),
                Span { line: 3, column: 5 },
                ConfigNode {
                    kind: NodeKind::Scalar {
                        text: "envelop".to_owned(),
                        quoted: false,
                    },
                    span: Span {
                        line: 3,
                        column: 13,
                    },
                },
            )]),
            span: Span { line: 2, column: 5 },
        };
        let errors = ConfigErrors::default();
        {
            let mut reader = ConfigReader::new(&node, "outputs[0]", &errors);
            assert!(StdoutFactory.sink(&mut reader).is_none());
        }
        let errors = errors.into_inner();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "outputs[0].layout");
        assert_eq!(errors[0].span.line, 3);
        assert!(errors[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("did you mean `envelope`")));
    }
}
