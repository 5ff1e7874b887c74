//! The exactly-once session of a function and what it holds: the records
//! written into the open transaction (kept until it commits, to write them
//! again after an abort), and the commit running in the background.
//!
//! # Committing in the background
//!
//! A commit (a Kafka transaction's `send_offsets_to_transaction` and
//! `commit_transaction`, a database `COMMIT`) takes round trips to the
//! broker. Awaited in the scheduler's task it stopped everything else —
//! dispatching, reading, staging — once per `transaction_interval`. So the
//! session is moved into a task that commits it ([`Transactions::spawn_commit`]),
//! and comes back with the outcome ([`Committing::outcome`]). Meanwhile
//! handlers keep running and finished events' records keep waiting in
//! their partitions (bounded by the in-flight bounds, as always); nothing is
//! written into the session until it is back, so a transaction holds exactly
//! the records below the positions it commits, as before.

use std::time::{Duration, Instant};

use spate_connector::{
    CommitPosition, Record, SessionOwner, Sink, Source, StateChange, StoredPosition,
    TransactionError, TransactionSession, TransactionalTarget,
};
use tokio::task::JoinHandle;

use super::pacing::Pacing;
use crate::events::{CommitTaskFailed, SessionOpened, TransactionReplayed};
use crate::work::{Destination, PartKey};
use crate::{EngineError, NamedSink, SessionHost};

/// A record written into the open transaction, kept until it commits.
pub(super) struct Written {
    pub(super) part: PartKey,
    pub(super) epoch: u64,
    pub(super) destination: Destination,
    pub(super) record: Record,
    /// The in-flight bytes its event held (on the event's first record).
    pub(super) bytes: u64,
    /// True on the event's first record: counts the event once.
    pub(super) first_of_event: bool,
    /// For a state change: the partition's stable name.
    pub(super) state_partition: Option<String>,
}

/// What a commit in the background comes back with.
pub(crate) type Committed = (Box<dyn TransactionSession>, Result<(), TransactionError>);

/// A commit running in the background, and what it commits.
pub(crate) struct Committing {
    task: CommitTask,
    /// The positions it commits, by partition.
    pub(super) positions: Vec<(PartKey, u64)>,
    /// The same as the source's commit takes them.
    pub(super) commit: Vec<CommitPosition>,
    /// Partitions about to be let go (their records are dropped on failure).
    pub(super) releasing: Vec<PartKey>,
    pub(super) started: Instant,
}

/// The commit task, aborted when dropped. A scheduler that goes away
/// without taking the outcome in (its task was cancelled: a crash, as far
/// as this function is concerned) takes its commit with it: a commit task
/// left running could land after a restarted function opened its own
/// session, committing positions behind that session's back.
pub(super) struct CommitTask(JoinHandle<Committed>);

impl Drop for CommitTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Committing {
    /// Waits for the commit to end; the session comes back with it. A
    /// commit task that panicked loses the session: a fatal error.
    pub(super) async fn outcome(&mut self, name: &str) -> Option<Committed> {
        match (&mut self.task.0).await {
            Ok(committed) => Some(committed),
            Err(join) => {
                CommitTaskFailed {
                    session: name,
                    error: &join,
                }
                .emit();
                None
            }
        }
    }
}

/// The exactly-once state of a function.
pub(crate) struct Transactions {
    /// The session; `None` while it commits in the background.
    session: Option<Box<dyn TransactionSession>>,
    /// The session's name, for logs.
    pub(super) name: String,
    /// The commit running in the background, if one is.
    pub(crate) committing: Option<Committing>,
    /// The session stores the source's positions itself (a database's):
    /// the source resumes from them, and handler state commits with them.
    pub(super) resumes: bool,
    outputs: Vec<TransactionalTarget>,
    dead_letter: TransactionalTarget,
    pub(super) open: Vec<Written>,
    /// Events whose records are in `open`.
    pub(super) open_events: usize,
    /// The open transaction was aborted: write `open` again first.
    pub(super) needs_replay: bool,
    /// When the open transaction commits, and the back-off after a
    /// failed one.
    pub(super) pacing: Pacing,
    /// The session can never commit again.
    pub(super) dead: bool,
    /// Why the session died, until the scheduler takes it to stop the
    /// function.
    pub(super) fatal: Option<EngineError>,
}

pub(super) fn target_of(sink: &dyn Sink, role: &str) -> Result<TransactionalTarget, String> {
    sink.transactional_target().ok_or_else(|| {
        format!(
            "{role} `{}` cannot write inside a transaction, so `exactly_once` cannot cover it",
            sink.name()
        )
    })
}

impl Transactions {
    /// Opens the session — the source's, or under [`SessionHost::Sink`]
    /// the first output's (else the dead-letter sink's), which stores the
    /// source's positions itself — and checks that it accepts every output
    /// and the dead-letter sink. A sink's session then hands the source the
    /// positions stored so far.
    pub(super) async fn open(
        source: &mut dyn Source,
        outputs: &[NamedSink],
        dead_letter: &dyn Sink,
        host: SessionHost,
        owner: SessionOwner,
        interval: Duration,
        max_events: usize,
    ) -> Result<Self, String> {
        let mut targets = Vec::with_capacity(outputs.len());
        for output in outputs {
            targets.push(target_of(
                &*output.sink,
                &format!("output `{}`:", output.name),
            )?);
        }
        let dead_letter_target = target_of(dead_letter, "the dead-letter sink")?;
        let mut session = match host {
            SessionHost::Source => source
                .begin_exactly_once()
                .await
                .map_err(|e| format!("opening the exactly-once session failed: {e}"))?,
            SessionHost::Sink => {
                let sink = outputs.first().map_or(dead_letter, |o| &*o.sink);
                sink.begin_exactly_once(&owner).await.map_err(|e| {
                    format!(
                        "opening the exactly-once session in `{}` failed: {e}",
                        sink.name()
                    )
                })?
            }
        };
        for target in targets.iter().chain(std::iter::once(&dead_letter_target)) {
            session.accepts(target).map_err(|why| {
                format!(
                    "`{}` cannot commit records to {}:{} together with its positions: {why}",
                    session.name(),
                    target.kind,
                    target.destination
                )
            })?;
        }
        let resumes = host == SessionHost::Sink;
        let mut resumed_from = None;
        if resumes {
            let positions = session
                .load_positions()
                .await
                .map_err(|e| format!("reading the stored positions failed: {e}"))?;
            source.resume_from(&positions).map_err(|e| e.to_string())?;
            resumed_from = Some(positions.len());
        }
        SessionOpened {
            session: session.name(),
            resumed_from,
        }
        .emit();
        Ok(Self {
            name: session.name().to_owned(),
            session: Some(session),
            committing: None,
            resumes,
            outputs: targets,
            dead_letter: dead_letter_target,
            open: Vec::new(),
            open_events: 0,
            needs_replay: false,
            pacing: Pacing::new(interval, max_events),
            dead: false,
            fatal: None,
        })
    }

    /// False while the session is dead, backing off after a failure, or
    /// committing.
    pub(crate) fn can_commit_now(&self) -> bool {
        !self.dead && self.committing.is_none() && self.pacing.may_commit()
    }

    /// The session, unless it is committing in the background.
    pub(super) fn session(&mut self) -> Result<&mut dyn TransactionSession, TransactionError> {
        match self.session.as_deref_mut() {
            Some(session) => Ok(session),
            None => Err(TransactionError::Fatal {
                session: self.name.clone(),
                message: "the session was used while it committed (a bug in spate)".to_owned(),
            }),
        }
    }

    /// Moves the session into a task that commits the open transaction
    /// with these positions.
    pub(super) fn spawn_commit(
        &mut self,
        positions: Vec<(PartKey, u64)>,
        commit: Vec<CommitPosition>,
        stored: Vec<StoredPosition>,
        releasing: Vec<PartKey>,
    ) -> Result<(), TransactionError> {
        let Some(mut session) = self.session.take() else {
            return Err(TransactionError::Fatal {
                session: self.name.clone(),
                message: "a second commit was started while one ran (a bug in spate)".to_owned(),
            });
        };
        let task = {
            let commit = commit.clone();
            tokio::spawn(async move {
                let result = session.commit(&commit, &stored).await;
                (session, result)
            })
        };
        self.committing = Some(Committing {
            task: CommitTask(task),
            positions,
            commit,
            releasing,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Takes the session back from a finished commit.
    pub(super) fn restore(&mut self, session: Box<dyn TransactionSession>) {
        self.session = Some(session);
    }

    /// Writes one remembered record (or state change) into the session.
    async fn send(&mut self, written: &Written) -> Result<(), TransactionError> {
        match written.destination {
            Destination::State { delete } => {
                let change = StateChange {
                    key: written.record.key.clone().unwrap_or_default(),
                    value: (!delete).then(|| written.record.payload.clone()),
                };
                let partition = written.state_partition.as_deref().unwrap_or_default();
                self.session()?.write_state(partition, change).await
            }
            destination => {
                let target = self.target(destination).clone();
                self.session()?.write(&target, written.record.clone()).await
            }
        }
    }

    fn target(&self, destination: Destination) -> &TransactionalTarget {
        match destination {
            Destination::Output(index) => &self.outputs[index],
            Destination::DeadLetter | Destination::State { .. } => &self.dead_letter,
        }
    }

    /// Writes a record into the open transaction; remembers it either way.
    pub(super) async fn write(&mut self, written: Written) -> Result<(), TransactionError> {
        let result = if self.needs_replay {
            Ok(()) // the whole of `open` is written again before the commit
        } else {
            self.send(&written).await
        };
        if written.first_of_event {
            self.open_events += 1;
        }
        self.open.push(written);
        result
    }

    /// Writes everything in `open` again into a fresh transaction.
    pub(super) async fn replay(&mut self) -> Result<(), TransactionError> {
        TransactionReplayed {
            session: &self.name,
            records: self.open.len(),
        }
        .emit();
        let open = std::mem::take(&mut self.open);
        let mut result = Ok(());
        for written in &open {
            result = self.send(written).await;
            if result.is_err() {
                break;
            }
        }
        self.open = open;
        result?;
        self.needs_replay = false;
        Ok(())
    }
}
