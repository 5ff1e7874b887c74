//! The `file` source: a JSON Lines file read as one partition whose offsets
//! are line numbers.
//!
//! Guarantees, in terms of the contract's delivery rules:
//! 1. reading never moves the committed position; only [`Source::commit`]
//!    does, in memory and (with a `commit_file`) atomically on disk;
//! 2. lines are handed out in file order with increasing offsets;
//! 3. while partition 0 is paused, `next` returns nothing;
//! 4. there is no rebalancing, so nothing is ever revoked;
//! 5. `next` is cancel safe: the partial line, the read position and lines
//!    already decoded live in the source, and waiting for data consumes
//!    nothing, so a dropped `next` loses and repeats no line.
//!
//! No line is ever dropped: an undecodable or over-long line becomes an event
//! with the [`DECODE_ERROR`] header, which the engine dead-letters.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spate_connector::dead_letter::DECODE_ERROR;
use spate_connector::{
    CommitPosition, Event, Headers, PartitionId, Position, Source, SourceError, SourceMessage,
};
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

use super::envelope;
use crate::state::StateFile;

/// Read buffer size.
const READ_BUFFER: usize = 64 << 10;

/// Byte positions of at most this many line starts are remembered between
/// reading and committing; a commit further behind is persisted without its
/// byte offset (a restart then counts lines instead of seeking).
const MAX_TRACKED_LINES: usize = 1 << 16;

/// How each line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// Each line is an [`envelope`] object.
    Envelope,
    /// Each line is a payload as is.
    Raw,
}

/// A file source's settings (see the [module docs](super) for the keys).
#[derive(Debug, Clone)]
pub struct FileSourceSettings {
    /// The file to read; also the stream name of every position.
    pub path: PathBuf,
    /// How lines are read.
    pub format: LineFormat,
    /// At the end of the file, wait for more lines instead of ending.
    pub follow: bool,
    /// How often a followed file is checked for new lines.
    pub poll_interval: Duration,
    /// Where committed positions are persisted, if anywhere.
    pub commit_file: Option<PathBuf>,
    /// Longer lines are truncated to this size and flagged as undecodable.
    pub max_line_bytes: usize,
}

impl FileSourceSettings {
    /// Settings for reading envelope lines from `path`, with every default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            format: LineFormat::Envelope,
            follow: false,
            poll_interval: super::DEFAULT_POLL_INTERVAL,
            commit_file: None,
            max_line_bytes: super::DEFAULT_MAX_LINE_BYTES as usize,
        }
    }
}

/// A committed position of a file: every line below `next_offset` is
/// finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The first line not yet finished.
    pub next_offset: u64,
    /// The byte where that line starts, when known (lets a restart seek
    /// instead of counting lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
}

/// What a `commit_file` holds.
#[derive(Debug, Serialize, Deserialize)]
struct CommitFileContent {
    /// The file the position belongs to, so a commit file is never applied
    /// to another file.
    path: String,
    #[serde(flatten)]
    checkpoint: Checkpoint,
}

/// Reads a JSON Lines file; see the [module docs](self).
pub struct FileSource {
    name: String,
    stream: Arc<str>,
    settings: FileSourceSettings,
    reader: BufReader<File>,
    /// Bytes of the line being read (without its newline).
    partial: Vec<u8>,
    /// The line being read is longer than `max_line_bytes`.
    overflow: bool,
    /// Bytes consumed from the file.
    read_pos: u64,
    /// Number of the line being read.
    next_line: u64,
    /// Decoded lines not yet handed out.
    ready: VecDeque<Event>,
    /// `(line, byte where it starts)` for lines read but not yet committed.
    line_starts: VecDeque<(u64, u64)>,
    assigned: bool,
    paused: bool,
    /// The end of a non-followed file was reached.
    at_end: bool,
    committed: Arc<Mutex<Option<Checkpoint>>>,
    last_committed: Option<Checkpoint>,
    commit_file: Option<StateFile>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FileSource {
    /// Opens the file and positions it after the last line committed in
    /// `commit_file` (or at the start).
    pub async fn open(settings: FileSourceSettings) -> Result<Self, SourceError> {
        Self::open_with_memory(settings, Arc::default()).await
    }

    /// Like [`FileSource::open`], but a position in `committed` (left by an
    /// earlier source of the same builder) wins over the commit file, and
    /// commits are recorded there too.
    pub(crate) async fn open_with_memory(
        settings: FileSourceSettings,
        committed: Arc<Mutex<Option<Checkpoint>>>,
    ) -> Result<Self, SourceError> {
        let name = format!("file:{}", settings.path.display());
        let path_text = settings.path.display().to_string();
        let commit_file = settings.commit_file.as_ref().map(StateFile::new);
        let remembered = *lock(&committed);
        let start = match (remembered, &commit_file) {
            (Some(checkpoint), _) => Some(checkpoint),
            (None, Some(state)) => {
                let content: Option<CommitFileContent> =
                    state.load().await.map_err(|e| SourceError::Fatal {
                        source_name: name.clone(),
                        message: e.to_string(),
                    })?;
                match content {
                    Some(c) if c.path != path_text => {
                        return Err(SourceError::Fatal {
                            source_name: name,
                            message: format!(
                                "commit file {} belongs to {}, not to {path_text}; \
                                 point `commit_file` elsewhere or delete it",
                                state.path().display(),
                                c.path
                            ),
                        })
                    }
                    Some(c) => Some(c.checkpoint),
                    None => None,
                }
            }
            (None, None) => None,
        };
        let file = File::open(&settings.path)
            .await
            .map_err(|e| SourceError::Unavailable {
                source_name: name.clone(),
                message: format!("cannot open {path_text}: {e}"),
            })?;
        let (reader, next_line, read_pos) =
            position(file, start, settings.follow)
                .await
                .map_err(|message| SourceError::Fatal {
                    source_name: name.clone(),
                    message,
                })?;
        if next_line > 0 {
            tracing::info!(source = %name, line = next_line, "resuming after the last committed line");
        }
        Ok(Self {
            name,
            stream: Arc::from(path_text),
            settings,
            reader,
            partial: Vec::new(),
            overflow: false,
            read_pos,
            next_line,
            ready: VecDeque::new(),
            line_starts: VecDeque::from([(next_line, read_pos)]),
            assigned: false,
            paused: false,
            at_end: false,
            committed,
            last_committed: start,
            commit_file,
        })
    }

    fn drain(&mut self, max: usize) -> SourceMessage {
        let n = max.min(self.ready.len());
        SourceMessage::Events(self.ready.drain(..n).collect())
    }

    fn unavailable(&self, message: String) -> SourceError {
        SourceError::Unavailable {
            source_name: self.name.clone(),
            message,
        }
    }

    /// Turns the bytes gathered in `partial` into the next line.
    fn finish_line(&mut self) {
        let line = self.next_line;
        self.next_line += 1;
        let mut bytes = std::mem::take(&mut self.partial);
        let overflow = std::mem::replace(&mut self.overflow, false);
        if !overflow && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        self.line_starts.push_back((self.next_line, self.read_pos));
        if self.line_starts.len() > MAX_TRACKED_LINES {
            self.line_starts.pop_front();
        }
        if let Some(event) = self.event_for(line, bytes, overflow) {
            self.ready.push_back(event);
        }
    }

    fn event_for(&self, line: u64, bytes: Vec<u8>, overflow: bool) -> Option<Event> {
        let position = Position {
            stream: self.stream.clone(),
            partition: 0,
            offset: line,
        };
        let undecodable = |bytes: Vec<u8>, reason: String| {
            let mut headers = Headers::new();
            let text = format!(
                "line {} (offset {line}) of {}: {reason}",
                line + 1,
                self.stream
            );
            headers.push(DECODE_ERROR, text);
            Event {
                key: None,
                payload: Bytes::from(bytes),
                headers,
                timestamp_ms: None,
                position: position.clone(),
            }
        };
        if overflow {
            let reason = format!(
                "longer than max_line_bytes ({} bytes); payload truncated to that size",
                self.settings.max_line_bytes
            );
            return Some(undecodable(bytes, reason));
        }
        match self.settings.format {
            LineFormat::Raw => Some(Event {
                key: None,
                payload: Bytes::from(bytes),
                headers: Headers::new(),
                timestamp_ms: None,
                position,
            }),
            LineFormat::Envelope if bytes.iter().all(u8::is_ascii_whitespace) => None,
            LineFormat::Envelope => match envelope::decode(&bytes) {
                Ok(record) => Some(Event {
                    key: record.key,
                    payload: record.payload,
                    headers: record.headers,
                    timestamp_ms: record.timestamp_ms,
                    position,
                }),
                Err(e) => {
                    let mut reason = e.to_string();
                    if e.suggests_raw_format() {
                        reason.push_str(
                            " (with `layout: raw` every line is read as a payload as is)",
                        );
                    }
                    Some(undecodable(bytes, reason))
                }
            },
        }
    }

    /// Pauses or resumes the file if `partitions` names its partition 0.
    fn set_paused(&mut self, partitions: &[PartitionId], paused: bool) {
        if partitions.contains(&0) {
            self.paused = paused;
        }
    }
}

/// Appends `bytes` to the line being read, up to `max` bytes in all.
fn append_limited(partial: &mut Vec<u8>, overflow: &mut bool, bytes: &[u8], max: usize) {
    if *overflow {
        return;
    }
    let room = max.saturating_sub(partial.len());
    if bytes.len() > room {
        partial.extend_from_slice(&bytes[..room]);
        *overflow = true;
    } else {
        partial.extend_from_slice(bytes);
    }
}

/// Positions a freshly opened file at `start`: seeks to its byte offset when
/// that is still the start of a line, otherwise counts lines from the
/// beginning. Returns the reader, the next line number and its byte.
async fn position(
    mut file: File,
    start: Option<Checkpoint>,
    follow: bool,
) -> Result<(BufReader<File>, u64, u64), String> {
    let Some(checkpoint) = start.filter(|c| c.next_offset > 0) else {
        return Ok((BufReader::with_capacity(READ_BUFFER, file), 0, 0));
    };
    let io = |e: std::io::Error| {
        format!(
            "cannot find the committed line {}: {e}",
            checkpoint.next_offset
        )
    };
    if let Some(byte) = checkpoint.byte_offset {
        if starts_line(&mut file, byte, follow).await.map_err(io)? {
            file.seek(SeekFrom::Start(byte)).await.map_err(io)?;
            return Ok((
                BufReader::with_capacity(READ_BUFFER, file),
                checkpoint.next_offset,
                byte,
            ));
        }
    }
    file.seek(SeekFrom::Start(0)).await.map_err(io)?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let (lines, bytes) = skip_lines(&mut reader, checkpoint.next_offset, follow)
        .await
        .map_err(io)?;
    if lines < checkpoint.next_offset {
        return Err(format!(
            "lines up to {} were committed but the file has only {lines}; was it replaced? \
             delete the commit file to read it from the start",
            checkpoint.next_offset
        ));
    }
    Ok((reader, checkpoint.next_offset, bytes))
}

/// True when byte `byte` of the file starts a line (or is the end of a
/// non-followed file whose last line had no newline).
async fn starts_line(file: &mut File, byte: u64, follow: bool) -> std::io::Result<bool> {
    let len = file.metadata().await?.len();
    if byte == 0 || byte > len {
        return Ok(byte == 0);
    }
    file.seek(SeekFrom::Start(byte - 1)).await?;
    let mut previous = [0u8; 1];
    file.read_exact(&mut previous).await?;
    Ok(previous[0] == b'\n' || (byte == len && !follow))
}

/// Skips up to `n` lines; returns how many were skipped and their bytes. A
/// last line without newline counts only when the file is not followed
/// (that is when such a line is handed out).
async fn skip_lines(
    reader: &mut BufReader<File>,
    n: u64,
    follow: bool,
) -> std::io::Result<(u64, u64)> {
    let (mut lines, mut bytes, mut tail) = (0u64, 0u64, false);
    while lines < n {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if tail && !follow {
                lines += 1;
            }
            break;
        }
        let mut consumed = buf.len();
        for (i, b) in buf.iter().enumerate() {
            if *b == b'\n' {
                lines += 1;
                if lines == n {
                    consumed = i + 1;
                    break;
                }
            }
        }
        tail = buf[consumed - 1] != b'\n';
        reader.consume(consumed);
        bytes += consumed as u64;
    }
    Ok((lines, bytes))
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        if let Some(assigned) = SourceMessage::assign_once(&mut self.assigned, || vec![0]) {
            return Ok(assigned);
        }
        let max = max_events.max(1);
        loop {
            if self.paused {
                // Only `resume` (which needs this future dropped) ends a pause.
                std::future::pending::<()>().await;
            }
            if self.ready.len() >= max || (self.at_end && !self.ready.is_empty()) {
                return Ok(self.drain(max));
            }
            if self.at_end {
                return Ok(SourceMessage::End);
            }
            // Cancel safe: waiting here consumes nothing.
            let buf = match self.reader.fill_buf().await {
                Ok(buf) => buf,
                Err(e) => {
                    let message = format!("cannot read {}: {e}", self.stream);
                    spate_connector::internal_events::FetchError {
                        connector: "file",
                        name: &self.name,
                        error: &message,
                        context: "file source read failed",
                    }
                    .emit();
                    return Err(self.unavailable(message));
                }
            };
            if buf.is_empty() {
                if !self.ready.is_empty() {
                    return Ok(self.drain(max));
                }
                if self.settings.follow {
                    tokio::time::sleep(self.settings.poll_interval).await;
                } else {
                    if !self.partial.is_empty() || self.overflow {
                        self.finish_line();
                    }
                    self.at_end = true;
                }
                continue;
            }
            // From here to the end of the iteration nothing awaits.
            let (consumed, complete) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let content = if complete { &buf[..consumed - 1] } else { buf };
            append_limited(
                &mut self.partial,
                &mut self.overflow,
                content,
                self.settings.max_line_bytes,
            );
            self.reader.consume(consumed);
            self.read_pos += consumed as u64;
            if complete {
                self.finish_line();
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.set_paused(partitions, true);
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.set_paused(partitions, false);
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let Some(next) = positions
            .iter()
            .rev()
            .find(|p| p.partition == 0)
            .map(|p| p.next_offset)
        else {
            return Ok(());
        };
        let byte_offset = self
            .line_starts
            .binary_search_by_key(&next, |(line, _)| *line)
            .ok()
            .map(|i| self.line_starts[i].1);
        while self
            .line_starts
            .front()
            .is_some_and(|(line, _)| *line < next)
        {
            self.line_starts.pop_front();
        }
        let checkpoint = Checkpoint {
            next_offset: next,
            byte_offset,
        };
        if self.last_committed == Some(checkpoint) {
            return Ok(());
        }
        if let Some(state) = &self.commit_file {
            let content = CommitFileContent {
                path: self.stream.to_string(),
                checkpoint,
            };
            let timer = spate_connector::internal_events::CommitTimer::start("file");
            let stored = state.store(&content).await;
            timer.finish(
                &self.name,
                &stored,
                "storing the file source's commit failed",
            );
            if let Err(e) = stored {
                return Err(self.unavailable(e.to_string()));
            }
        }
        *lock(&self.committed) = Some(checkpoint);
        self.last_committed = Some(checkpoint);
        Ok(())
    }
}
