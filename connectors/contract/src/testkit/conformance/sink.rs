//! The sink checks: an acknowledged write is durable (a new session reads
//! it back, before any flush); a sink that claims `exactly_once` names a
//! transactional target; one that claims `durable_positions` opens a
//! session that commits records and positions together and whose abort
//! leaves nothing behind.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::exactly_once::{nothing_more, record_of, write_all};
use super::session::{bounded, exactly, payload, Reader};
use super::{Harness, TestStream};
use crate::event::{Event, Position, Record};
use crate::sink::{SessionOwner, Sink};
use crate::source::{CommitPosition, StoredPosition};
use crate::transaction::TransactionSession;

/// The suite's payloads for a sink: `events` per producer partition.
fn payloads_for(h: &Harness, stream: &dyn TestStream, label: &str) -> Vec<Bytes> {
    (0..stream.partitions())
        .flat_map(|p| (0..h.events).map(move |seq| (p, seq)))
        .map(|(p, seq)| payload(label, p, seq))
        .collect()
}

/// Every write that resolved `Ok` is readable by a new session.
pub(super) async fn ack_durable(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
) -> Result<(), String> {
    let mut reader = Reader::open(stream, h.wait).await?;
    let sink = bounded(h.wait, "building the sink", stream.sink()).await??;
    let all = payloads_for(h, stream, label);
    let (written, sent) = all.split_at(all.len() / 2);
    for p in written {
        bounded(
            h.wait,
            "`write`",
            sink.write(Record::from_payload(p.clone())),
        )
        .await?
        .map_err(|e| format!("`write` failed: {e}"))?;
    }
    let mut pending = Vec::new();
    for p in sent {
        let write = bounded(h.wait, "`send`", sink.send(Record::from_payload(p.clone())))
            .await?
            .map_err(|e| format!("`send` failed: {e}"))?;
        pending.push(write);
    }
    for write in pending {
        bounded(h.wait, "a pending write", write)
            .await?
            .map_err(|e| format!("a pending write failed: {e}"))?;
    }
    let expected: BTreeSet<Bytes> = all.iter().cloned().collect();
    let counts = reader.counts(&expected, h.wait, h.quiet).await?;
    exactly(
        &counts,
        &expected,
        "acknowledged records (read back before any flush)",
    )?;
    bounded(h.wait, "`flush`", sink.flush())
        .await?
        .map_err(|e| format!("`flush` failed: {e}"))?;
    reader.close().await
}

/// A sink claiming `exactly_once` says where its records go in a
/// transaction.
pub(super) async fn transactional_target(
    h: &Harness,
    stream: &dyn TestStream,
) -> Result<(), String> {
    let sink = bounded(h.wait, "building the sink", stream.sink()).await??;
    match sink.transactional_target() {
        Some(_) => Ok(()),
        None => {
            Err("the sink claims exactly_once, yet `transactional_target()` is None".to_owned())
        }
    }
}

/// Records of made-up events `range` of partition 0 of `label`.
fn records(label: &str, range: std::ops::Range<u64>) -> Vec<Record> {
    range
        .map(|offset| Event {
            key: None,
            payload: payload(label, 0, offset as usize),
            headers: Default::default(),
            timestamp_ms: None,
            position: Position {
                stream: label.into(),
                partition: 0,
                offset,
            },
        })
        .map(|e| record_of(&e))
        .collect()
}

async fn open(
    sink: &dyn Sink,
    owner: &SessionOwner,
    h: &Harness,
) -> Result<Box<dyn TransactionSession>, String> {
    bounded(
        h.wait,
        "the sink's `begin_exactly_once`",
        sink.begin_exactly_once(owner),
    )
    .await?
    .map_err(|e| format!("the sink claims durable_positions, yet `begin_exactly_once` failed: {e}"))
}

async fn commit(
    h: &Harness,
    tx: &mut dyn TransactionSession,
    stored: &StoredPosition,
) -> Result<(), String> {
    let position = CommitPosition {
        partition: 0,
        next_offset: stored.next_offset,
    };
    bounded(
        h.wait,
        "the session's `commit`",
        tx.commit(&[position], std::slice::from_ref(stored)),
    )
    .await?
    .map_err(|e| format!("the session's `commit` failed: {e}"))
}

/// The sink's own session: records and positions together; with `abort`,
/// an aborted transaction between two commits leaves nothing behind.
pub(super) async fn session(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
    abort: bool,
) -> Result<(), String> {
    let sink = bounded(h.wait, "building the sink", stream.sink()).await??;
    let target = sink
        .transactional_target()
        .ok_or("the sink claims durable_positions, yet `transactional_target()` is None")?;
    let owner = SessionOwner {
        pipeline: "conformance".to_owned(),
        function: label.to_owned(),
        source: format!("conformance:{label}"),
    };
    let n = h.events as u64;
    let at = |next_offset| StoredPosition {
        partition: format!("{label}-0"),
        next_offset,
    };
    let mut reader = Reader::open(stream, h.wait).await?;
    let mut tx = open(&*sink, &owner, h).await?;
    tx.accepts(&target)
        .map_err(|e| format!("the sink's session refuses its own target {target:?}: {e}"))?;
    let first: BTreeSet<Bytes> = records(label, 0..n)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    write_all(h, &mut *tx, &target, records(label, 0..n)).await?;
    nothing_more(
        h,
        &mut reader,
        &BTreeSet::new(),
        "before their transaction committed",
    )
    .await?;
    commit(h, &mut *tx, &at(n)).await?;
    let mut expected = first;
    if abort {
        write_all(h, &mut *tx, &target, records(label, n..2 * n)).await?;
        bounded(h.wait, "`abort`", tx.abort())
            .await?
            .map_err(|e| format!("`abort` failed: {e}"))?;
        nothing_more(
            h,
            &mut reader,
            &expected,
            "after their transaction was aborted",
        )
        .await?;
        write_all(h, &mut *tx, &target, records(label, n..2 * n)).await?;
        commit(h, &mut *tx, &at(2 * n)).await?;
        expected.extend(records(label, n..2 * n).into_iter().map(|r| r.payload));
    }
    let counts = reader.counts(&expected, h.wait, h.quiet).await?;
    exactly(&counts, &expected, "committed records")?;
    drop(tx);
    reader.close().await?;
    let want = at(if abort { 2 * n } else { n });
    let mut fresh = open(&*sink, &owner, h).await?;
    let positions = bounded(h.wait, "`load_positions`", fresh.load_positions())
        .await?
        .map_err(|e| format!("`load_positions` failed: {e}"))?;
    if !positions.contains(&want) {
        return Err(format!(
            "the records are visible but the position committed with them is not: a new \
             session's `load_positions` gives {positions:?}, without {want:?}"
        ));
    }
    Ok(())
}
