//! The `file` sink: records appended to a JSON Lines file as [`envelope`]
//! lines, with group commit.
//!
//! Every [`Sink::send`] (and [`Sink::write`]) encodes its record in the
//! caller's task and sends the line over a bounded queue to one writer task;
//! `send` returns once the line is queued. The writer takes
//! everything queued, writes it with one system call, flushes (the file has
//! no user-space buffer, so the data is with the OS once written), calls
//! `sync_data` when `fsync` is on, and only then completes each write: a
//! write resolves `Ok` only once its own line is in the file. A failed write
//! fails every write of its group with [`SinkError::Unavailable`] naming the
//! path, and the writer cuts the file back to its last good length so a
//! half-written group never leaves a broken line behind. [`Sink::flush`]
//! waits for everything queued before it and always syncs the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use spate_connector::{PendingWrite, Record, Sink, SinkError};
use tokio::sync::{mpsc, oneshot};

use super::envelope;

/// Writes queued before the writer task makes callers wait.
const QUEUE: usize = 4096;

/// Most writes grouped into one system call.
const MAX_GROUP: usize = 1024;

/// A file sink's settings (see the [module docs](super) for the keys).
#[derive(Debug, Clone)]
pub struct FileSinkSettings {
    /// The file to write; parent directories are created.
    pub path: PathBuf,
    /// Keep what the file holds (`true`) or truncate it when opening.
    pub append: bool,
    /// `sync_data` after every group, not only on flush.
    pub fsync: bool,
}

impl FileSinkSettings {
    /// Settings for appending to `path`, with every default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            append: true,
            fsync: false,
        }
    }
}

type Ack = oneshot::Sender<Result<(), Arc<str>>>;

enum Command {
    Write { line: Vec<u8>, ack: Ack },
    Flush { ack: Ack },
}

/// Appends records to a JSON Lines file; see the [module docs](self).
pub struct FileSink {
    name: String,
    queue: mpsc::Sender<Command>,
}

impl FileSink {
    /// Creates the parent directories, opens (or creates) the file and
    /// starts the writer task. Needs a tokio runtime.
    pub async fn open(settings: FileSinkSettings) -> Result<Self, SinkError> {
        let name = format!("file:{}", settings.path.display());
        let path = settings.path.clone();
        let opened =
            tokio::task::spawn_blocking(move || open_file(&settings.path, settings.append))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
        let (file, len) = opened.map_err(|e| SinkError::Unavailable {
            sink_name: name.clone(),
            message: format!("cannot open {}: {e}", path.display()),
        })?;
        let (queue, commands) = mpsc::channel(QUEUE);
        let writer = Writer {
            file: Some(file),
            good_len: len,
            dirty: false,
            fsync: settings.fsync,
            path: path.display().to_string(),
        };
        tokio::spawn(writer.run(commands));
        Ok(Self { name, queue })
    }

    fn stopped(&self) -> SinkError {
        SinkError::Unavailable {
            sink_name: self.name.clone(),
            message: "the file writer stopped".to_owned(),
        }
    }

    /// Queues `command` (in order with every other) and returns what
    /// resolves once the writer task answered it.
    async fn enqueue(
        &self,
        command: Command,
        done: oneshot::Receiver<Result<(), Arc<str>>>,
    ) -> Result<PendingWrite, SinkError> {
        self.queue.send(command).await.map_err(|_| self.stopped())?;
        let name = self.name.clone();
        Ok(Box::pin(async move {
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(SinkError::Unavailable {
                    sink_name: name,
                    message: message.to_string(),
                }),
                Err(_) => Err(SinkError::Unavailable {
                    sink_name: name,
                    message: "the file writer stopped".to_owned(),
                }),
            }
        }))
    }

    /// Encodes `record` as its line and queues it.
    async fn enqueue_record(&self, record: &Record) -> Result<PendingWrite, SinkError> {
        let mut line = Vec::with_capacity(record.payload.len() + 64);
        envelope::encode(record, &mut line);
        let (ack, done) = oneshot::channel();
        self.enqueue(Command::Write { line, ack }, done).await
    }
}

fn open_file(path: &std::path::Path, append: bool) -> io::Result<(fs::File, u64)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    if !append {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
    }
    let file = OpenOptions::new().append(true).create(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.enqueue_record(&record).await?.await
    }

    /// Queues the line and returns at once: lines sent one after another
    /// are written together, in the order sent, and each resolves once its
    /// group is in the file.
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        self.enqueue_record(&record).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let (ack, done) = oneshot::channel();
        self.enqueue(Command::Flush { ack }, done).await?.await
    }
}

/// The writer task's state.
struct Writer {
    /// `None` only while a group is being written on the blocking pool, or
    /// after that pool lost it (a panic).
    file: Option<fs::File>,
    /// File length after the last fully written group.
    good_len: u64,
    /// A failed group may have left bytes past `good_len`.
    dirty: bool,
    fsync: bool,
    path: String,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while commands.recv_many(&mut group, MAX_GROUP).await > 0 {
            let mut bytes = Vec::new();
            let mut sync = self.fsync;
            for command in &group {
                match command {
                    Command::Write { line, .. } => bytes.extend_from_slice(line),
                    Command::Flush { .. } => sync = true,
                }
            }
            let result = self.write_group(bytes, sync).await;
            if let Err(e) = &result {
                tracing::debug!(path = %self.path, writes = group.len(), "file sink write failed");
                spate_connector::internal_events::ProduceError {
                    connector: "file",
                    name: &self.path,
                    error: e,
                    context: "file sink write failed",
                }
                .emit();
            }
            for command in group.drain(..) {
                let (Command::Write { ack, .. } | Command::Flush { ack }) = command;
                // The caller may have given up waiting; the line is written anyway.
                let _ = ack.send(result.clone());
            }
        }
    }

    async fn write_group(&mut self, bytes: Vec<u8>, sync: bool) -> Result<(), Arc<str>> {
        let Some(mut file) = self.file.take() else {
            return Err(Arc::from(format!(
                "cannot write to {}: the file was lost after an earlier failure",
                self.path
            )));
        };
        let (good_len, dirty) = (self.good_len, self.dirty);
        let joined = tokio::task::spawn_blocking(move || {
            let result = write_all(&mut file, good_len, dirty, &bytes, sync);
            (file, result, bytes.len() as u64)
        })
        .await;
        let (file, result, written) = match joined {
            Ok(parts) => parts,
            Err(e) => return Err(Arc::from(format!("cannot write to {}: {e}", self.path))),
        };
        self.file = Some(file);
        match result {
            Ok(()) => {
                self.good_len += written;
                self.dirty = false;
                Ok(())
            }
            Err((e, cut_back)) => {
                self.dirty = !cut_back;
                Err(Arc::from(format!("cannot write to {}: {e}", self.path)))
            }
        }
    }
}

/// Writes one group. On failure, returns the error and whether the file
/// could be cut back to `good_len`.
fn write_all(
    file: &mut fs::File,
    good_len: u64,
    dirty: bool,
    bytes: &[u8],
    sync: bool,
) -> Result<(), (io::Error, bool)> {
    if dirty {
        // An earlier group failed half-way and the file could not be cut
        // back then; appending now would glue lines together.
        file.set_len(good_len).map_err(|e| (e, false))?;
    }
    let written = file
        .write_all(bytes)
        .and_then(|()| file.flush())
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    written.map_err(|e| (e, file.set_len(good_len).is_ok()))
}
