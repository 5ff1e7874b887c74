//! The exactly-once session of a source that claims `exactly_once`
//! (rules 1 and 2 of [`crate::transaction`]): a commit makes the records
//! written since the last commit and the source positions visible
//! together; an abort makes nothing visible (for atomic sessions) and the
//! same records can be written again into a new transaction, each then
//! visible once.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::session::{bounded, exactly, list, payloads, Reader, Session, Split};
use super::{Harness, TestStream, Transactions};
use crate::event::{Event, Record};
use crate::transaction::{record_id, TransactionSession, TransactionalTarget, RECORD_ID_HEADER};

/// The record the engine would write for `event`'s first output.
pub(super) fn record_of(event: &Event) -> Record {
    let mut record = Record {
        key: event.key.clone(),
        payload: event.payload.clone(),
        ..Record::default()
    };
    record
        .headers
        .set(RECORD_ID_HEADER, record_id(&event.position, Some(0)));
    record
}

/// Writes `records` into the open transaction, within the wait.
pub(super) async fn write_all(
    h: &Harness,
    tx: &mut dyn TransactionSession,
    target: &TransactionalTarget,
    records: Vec<Record>,
) -> Result<(), String> {
    for record in records {
        bounded(h.wait, "a transactional `write`", tx.write(target, record))
            .await?
            .map_err(|e| format!("a transactional `write` failed: {e}"))?;
    }
    Ok(())
}

/// Nothing but `allowed` is visible through `reader` over a quiet period,
/// for an atomic session; `when` says at which point.
pub(super) async fn nothing_more(
    h: &Harness,
    reader: &mut Reader<'_>,
    allowed: &BTreeSet<Bytes>,
    when: &str,
) -> Result<(), String> {
    if h.transactions == Transactions::Idempotent {
        return Ok(());
    }
    let counts = reader.counts(allowed, h.wait, h.quiet).await?;
    let visible: Vec<&Bytes> = counts.keys().filter(|p| !allowed.contains(*p)).collect();
    if visible.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} records are visible {when}: {}",
        visible.len(),
        list(visible)
    ))
}

/// Commit (and, with `abort`, abort first) through the source's session.
pub(super) async fn source(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
    abort: bool,
) -> Result<(), String> {
    let output = bounded(
        h.wait,
        "making the output stream",
        stream.transaction_output(),
    )
    .await??;
    let sink = bounded(h.wait, "building the output's sink", output.sink()).await??;
    let target = sink
        .transactional_target()
        .ok_or("the output's sink names no transactional target")?;
    let mut reader = Reader::open(&*output, h.wait).await?;
    let mut input = Session::open(stream, h.wait).await?;
    let mut tx = bounded(
        h.wait,
        "`begin_exactly_once`",
        input.source.begin_exactly_once(),
    )
    .await?
    .map_err(|e| format!("the source claims exactly_once, yet `begin_exactly_once` failed: {e}"))?;
    tx.accepts(&target)
        .map_err(|e| format!("the session refuses the output {target:?}: {e}"))?;
    let (_, split) = input.read_produced(h, stream, label).await?;
    let records = || split.committed.iter().map(record_of).collect::<Vec<_>>();
    let none = BTreeSet::new();
    if abort {
        write_all(h, &mut *tx, &target, records()).await?;
        bounded(h.wait, "`abort`", tx.abort())
            .await?
            .map_err(|e| format!("`abort` failed: {e}"))?;
        nothing_more(h, &mut reader, &none, "after their transaction was aborted").await?;
    }
    write_all(h, &mut *tx, &target, records()).await?;
    if !abort {
        nothing_more(h, &mut reader, &none, "before their transaction committed").await?;
    }
    let stored = input.source.positions_to_store(&split.positions);
    bounded(
        h.wait,
        "the session's `commit`",
        tx.commit(&split.positions, &stored),
    )
    .await?
    .map_err(|e| format!("the session's `commit` failed: {e}"))?;
    input.commit(&split.positions).await?;
    let expected = payloads(&split.committed);
    let counts = reader.counts(&expected, h.wait, h.quiet).await?;
    let whose = if abort {
        "records written again after an abort and committed"
    } else {
        "committed records"
    };
    exactly(&counts, &expected, whose)?;
    drop(tx);
    input.close().await?;
    reader.close().await?;
    positions_visible(h, stream, &split).await
}

/// A new session of the input starts at the positions the transaction
/// committed.
async fn positions_visible(
    h: &Harness,
    stream: &dyn TestStream,
    split: &Split,
) -> Result<(), String> {
    let mut next = Session::open(stream, h.wait).await?;
    let (later, missing) = next.collect(&payloads(&split.rest)).await?;
    next.close().await?;
    let again = split.committed_among(&later);
    if !again.is_empty() {
        return Err(format!(
            "the records are visible but the positions {:?} committed with them are not: \
             a new session delivered {}",
            split.positions,
            list(again)
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "after the transaction, a new session did not deliver {} events above its \
             positions {:?}: {}",
            missing.len(),
            split.positions,
            list(&missing)
        ));
    }
    Ok(())
}
