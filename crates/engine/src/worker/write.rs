//! A handler task's write stages: how an item's outputs and dead letter
//! reach their sinks. The [`Writer`] is chosen once, when the function
//! starts, from its delivery mode:
//!
//! - [`Writer::Direct`] writes each record to its sink; an item is finished
//!   only when the sink acknowledged every write, and a failed write is
//!   tried again after backoff (only the writes that failed).
//! - [`Writer::Staged`] (`exactly_once`) writes nothing: it checks each
//!   record with its sink, gives it its record id and stages it, with the
//!   handler's state changes, in the item's completion; the scheduler writes
//!   them into a transaction once the watermark passes the event.

use std::sync::Arc;
use std::time::Duration;

use spate_connector::{transaction, PendingWrite, Record, SinkError, RECORD_ID_HEADER};

use super::{count_retry, fail, finished_handled, process, FunctionShared};
use crate::backoff;
use crate::dead_letter::{rejected_dead_letter, write_dead_letter};
use crate::events::{DeadLetterDeferred, OutputWriteFailed, OutputsAcknowledged};
use crate::policy::Delivery;
use crate::stage::{self, Failed};
use crate::work::{Accepted, Completion, Destination, Outcome, Stage, Verdict, WorkItem};

/// How a function's outputs and dead letters are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// To their sinks, each finished once acknowledged.
    Direct,
    /// `exactly_once`: staged in the completion; the scheduler writes them
    /// into a transaction.
    Staged,
}

/// The writes of one item while a task runs its stages.
pub(super) enum Writes {
    /// Written to the sinks as the stages run.
    Direct,
    /// The records staged so far.
    Staged(Vec<(Destination, Record)>),
}

impl Writer {
    /// The writer of a function with this delivery mode.
    pub fn of(delivery: Delivery) -> Self {
        match delivery {
            Delivery::ExactlyOnce => Self::Staged,
            Delivery::AtLeastOnce | Delivery::AtMostOnce => Self::Direct,
        }
    }

    /// The writes of an item about to run its stages.
    pub(super) fn begin(self) -> Writes {
        match self {
            Self::Direct => Writes::Direct,
            Self::Staged => Writes::Staged(Vec::new()),
        }
    }
}

impl Writes {
    /// The `Emit` stage: writes (or stages) the item's outputs.
    pub(super) async fn emit(
        &mut self,
        shared: &FunctionShared,
        item: &mut WorkItem,
        pending: Vec<(usize, Record)>,
    ) -> Option<Verdict> {
        match self {
            Self::Direct => emit(shared, item, pending).await,
            Self::Staged(staged) => stage_outputs(shared, item, pending, staged),
        }
    }

    /// The `DeadLetter` stage: writes (or stages) the item's dead letter.
    pub(super) async fn dead_letter(
        &mut self,
        shared: &FunctionShared,
        item: &mut WorkItem,
        record: Record,
    ) -> Option<Verdict> {
        match self {
            Self::Direct => write_dead_letter(shared, item, record).await,
            Self::Staged(staged) => stage_dead_letter(shared, item, record, staged),
        }
    }

    /// What the item's completion carries once its stages stopped with
    /// `verdict`: nothing when written directly; when staged, the staged
    /// records, with the handler's state changes if the item finished —
    /// they commit with the event whether its outputs were staged or it was
    /// dead-lettered after the handler ran: the handler's memory holds them
    /// either way.
    pub(super) fn finish(
        self,
        item: &mut WorkItem,
        verdict: &Verdict,
    ) -> Vec<(Destination, Record)> {
        let Self::Staged(mut staged) = self else {
            return Vec::new();
        };
        if matches!(verdict, Verdict::Finished(_)) {
            staged.extend(item.state_changes.drain(..).map(|change| {
                let delete = change.value.is_none();
                let record = Record {
                    key: Some(change.key),
                    payload: change.value.unwrap_or_default(),
                    ..Record::default()
                };
                (Destination::State { delete }, record)
            }));
        }
        staged
    }
}

/// `exactly_once`: checks each output with its sink (a record a sink
/// would refuse is dead-lettered now, while that is still possible) and
/// stages them with their record ids.
fn stage_outputs(
    shared: &FunctionShared,
    item: &mut WorkItem,
    pending: Vec<(usize, Record)>,
    staged: &mut Vec<(Destination, Record)>,
) -> Option<Verdict> {
    for (index, record) in &pending {
        if let Err(error) = shared.outputs[*index].sink.check(record) {
            let retryable = error.is_retryable();
            let failed = Failed::new(stage::OUTPUT_REJECTED, error.to_string(), retryable);
            return fail(shared, item, failed);
        }
    }
    let outputs = pending.len();
    let position = &item.event.position;
    staged.extend(
        pending
            .into_iter()
            .enumerate()
            .map(|(n, (index, mut record))| {
                record
                    .headers
                    .set(RECORD_ID_HEADER, transaction::record_id(position, Some(n)));
                (Destination::Output(index), record)
            }),
    );
    Some(finished_handled(shared, outputs))
}

/// `exactly_once`: stages the dead letter. One its sink refuses cannot be
/// committed: like a dead-letter write that fails, it is tried again
/// (after backoff) and the partition's position waits, loudly.
fn stage_dead_letter(
    shared: &FunctionShared,
    item: &mut WorkItem,
    mut record: Record,
    staged: &mut Vec<(Destination, Record)>,
) -> Option<Verdict> {
    match shared.dead_letter.check(&record) {
        Ok(()) => {}
        Err(error) if error.is_retryable() => {
            DeadLetterDeferred(&error).emit(&shared.scope);
            return Some(retry_write(shared, item, Stage::DeadLetter(record)));
        }
        Err(error) => return rejected_dead_letter(shared, item, record, &error),
    }
    let id = transaction::record_id(&item.event.position, None);
    record.headers.set(RECORD_ID_HEADER, id);
    staged.push((Destination::DeadLetter, record));
    Some(Verdict::Finished(Outcome::DeadLettered))
}

/// Hands pending outputs to their sinks. When every one is accepted in
/// order the item is reported `Written`, so its lane moves on while the
/// acknowledgements are awaited by [`await_acks`]; otherwise the accepted
/// ones are awaited here and only the failed ones are tried again.
async fn emit(
    shared: &FunctionShared,
    item: &mut WorkItem,
    pending: Vec<(usize, Record)>,
) -> Option<Verdict> {
    let sends = match pending.as_slice() {
        // The common case, one output: no join over one future.
        [(index, record)] => vec![shared.outputs[*index].sink.send(record.clone()).await],
        _ => {
            futures::future::join_all(
                pending
                    .iter()
                    .map(|(index, record)| shared.outputs[*index].sink.send(record.clone())),
            )
            .await
        }
    };
    let mut accepted = Vec::with_capacity(pending.len());
    let mut results = Vec::new();
    for ((index, record), sent) in pending.into_iter().zip(sends) {
        match sent {
            Ok(ack) => accepted.push((index, record, ack)),
            Err(error) => results.push((index, record, Err(error))),
        }
    }
    if results.is_empty() {
        return Some(Verdict::Written(Accepted(accepted)));
    }
    results.extend(resolve(accepted).await);
    settle(shared, item, results)
}

/// Waits for the acknowledgements of an item's accepted writes, then
/// finishes it, retries what failed, or runs its dead letter.
pub async fn await_acks(
    shared: &FunctionShared,
    mut item: WorkItem,
    accepted: Accepted,
) -> Completion {
    let results = resolve(accepted.0).await;
    match settle(shared, &mut item, results) {
        Some(verdict) => {
            count_retry(shared, &verdict);
            Completion {
                item,
                verdict,
                staged: Vec::new(),
                // No task was occupied: nothing for the scaler to learn.
                service_time: Duration::ZERO,
            }
        }
        // Rejected: the item moved on to its dead letter.
        None => process(shared, item).await,
    }
}

/// Waits for the acknowledgements of the written items of one run, all at
/// once, and reports each as [`await_acks`] does, in run order: one future
/// for the run, not one per event. The items wait together, not one after
/// another: a sink's acknowledgement may time out only once waited on (a
/// JetStream publish ack does), and after a lost connection each would
/// otherwise time out in turn, holding the run for the sum of the timeouts.
pub async fn await_run_acks(
    shared: Arc<FunctionShared>,
    written: Vec<(WorkItem, Accepted)>,
) -> Vec<Completion> {
    let shared = &shared;
    futures::future::join_all(
        written
            .into_iter()
            .map(|(item, accepted)| await_acks(shared, item, accepted)),
    )
    .await
}

/// Waits for every accepted write's acknowledgement.
async fn resolve(
    accepted: Vec<(usize, Record, PendingWrite)>,
) -> Vec<(usize, Record, Result<(), SinkError>)> {
    if accepted.len() == 1 {
        let mut results = Vec::with_capacity(1);
        for (index, record, ack) in accepted {
            results.push((index, record, ack.await));
        }
        return results;
    }
    futures::future::join_all(
        accepted
            .into_iter()
            .map(|(index, record, ack)| async move { (index, record, ack.await) }),
    )
    .await
}

/// Judges an item's write results: finished when all were acknowledged,
/// a dead letter when one was rejected, else a retry of the failed ones.
fn settle(
    shared: &FunctionShared,
    item: &mut WorkItem,
    results: Vec<(usize, Record, Result<(), SinkError>)>,
) -> Option<Verdict> {
    let total = results.len();
    let mut failed = Vec::new();
    let mut rejected = None;
    let mut acknowledged = 0;
    for (index, record, result) in results {
        match result {
            Ok(()) => acknowledged += 1,
            Err(error) if error.is_retryable() => {
                let output = &shared.outputs[index].name;
                OutputWriteFailed(&error).emit(shared.scope.connector(output));
                failed.push((index, record));
            }
            Err(error) => rejected = Some(error.to_string()),
        }
    }
    OutputsAcknowledged {
        count: acknowledged,
    }
    .emit(&shared.scope);
    if let Some(message) = rejected {
        return fail(
            shared,
            item,
            Failed::new(stage::OUTPUT_REJECTED, message, false),
        );
    }
    if failed.is_empty() {
        item.write_failures = 0;
        return Some(finished_handled(shared, total));
    }
    Some(retry_write(shared, item, Stage::Emit(failed)))
}

/// Schedules another try of a failed output or dead-letter write, backing
/// off on consecutive write failures (not handler attempts).
pub(crate) fn retry_write(shared: &FunctionShared, item: &mut WorkItem, stage: Stage) -> Verdict {
    item.write_failures += 1;
    item.stage = stage;
    Verdict::RetryAfter(backoff::delay(
        shared.retry.initial_backoff,
        shared.retry.max_backoff,
        item.write_failures,
    ))
}
