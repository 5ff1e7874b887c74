//! The source checks every source runs (order, cancel safety, pause) and
//! those of durable and resumable positions, plus the dispatch of every
//! check onto a fresh stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::session::{
    bounded, expected_count, list, parse, payloads, produce, show, Session, Split,
};
use super::{exactly_once, group, sink, Check, Harness, TestStream};
use crate::event::{Event, PartitionId};
use crate::source::SourceMessage;

/// Runs `check` on a fresh stream of the harness's fixture.
pub(super) async fn run(check: Check, harness: Arc<Harness>) -> Result<(), String> {
    let h = &*harness;
    let label = check.name();
    let stream = bounded(h.wait, "making a fresh stream", h.fixture.stream(label)).await??;
    let stream = &*stream;
    match check {
        Check::SourceOrder => order(h, stream, label).await,
        Check::SourceCancelSafety => cancel_safety(h, stream, label).await,
        Check::SourcePause => pause(h, stream, label).await,
        Check::SourceResumeAtCommit => resume_at_commit(h, stream, label).await,
        Check::SourceRedelivery => redelivery(h, stream, label).await,
        Check::SourceReleaseOnRevoke => group::release_on_revoke(h, stream, label).await,
        Check::SourceResumeFromStored => resume_from_stored(h, stream, label).await,
        Check::SourceExactlyOnceCommit => exactly_once::source(h, stream, label, false).await,
        Check::SourceExactlyOnceAbort => exactly_once::source(h, stream, label, true).await,
        Check::SinkAckDurable => sink::ack_durable(h, stream, label).await,
        Check::SinkTransactionalTarget => sink::transactional_target(h, stream).await,
        Check::SinkSessionCommit => sink::session(h, stream, label, false).await,
        Check::SinkSessionAbort => sink::session(h, stream, label, true).await,
    }
}

/// Order within a partition, and every produced event delivered once.
async fn order(h: &Harness, stream: &dyn TestStream, label: &str) -> Result<(), String> {
    let mut session = Session::open(stream, h.wait).await?;
    let produced = produce(h, stream, label, 0).await?;
    let mut events = session
        .read("reading the produced events", expected_count(h, &produced))
        .await?;
    if !h.generated {
        producer_order(&events)?;
        events.extend(session.drain(h.quiet).await?);
        once_each(&produced, &events)?;
    }
    session.close().await
}

/// Each producer partition's events arrive in the order produced.
fn producer_order(events: &[Event]) -> Result<(), String> {
    let mut last: BTreeMap<u32, usize> = BTreeMap::new();
    for e in events {
        let Some((p, seq)) = parse(&e.payload) else {
            return Err(format!(
                "an event carries a payload the suite did not produce: {}",
                show(&e.payload)
            ));
        };
        if let Some(before) = last.insert(p, seq) {
            if seq <= before {
                return Err(format!(
                    "event {seq} of producer partition {p} came after event {before} \
                     (source partition {}, offset {}): order within a partition was lost",
                    e.position.partition, e.position.offset
                ));
            }
        }
    }
    Ok(())
}

/// Every produced payload was delivered exactly once, and nothing else.
fn once_each(produced: &[Bytes], events: &[Event]) -> Result<(), String> {
    let mut counts: BTreeMap<&Bytes, usize> = produced.iter().map(|p| (p, 0)).collect();
    for e in events {
        match counts.get_mut(&e.payload) {
            Some(n) => *n += 1,
            None => {
                return Err(format!(
                    "an event carries a payload that was never produced: {}",
                    show(&e.payload)
                ))
            }
        }
    }
    let missing: Vec<&Bytes> = counts
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| *p)
        .collect();
    let copies: Vec<&Bytes> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        return Err(format!("events never delivered: {}", list(missing)));
    }
    if !copies.is_empty() {
        return Err(format!(
            "events delivered more than once in one session: {}",
            list(copies)
        ));
    }
    Ok(())
}

/// `next` cancelled at every stage (the engine calls it in `select!`)
/// loses nothing.
async fn cancel_safety(h: &Harness, stream: &dyn TestStream, label: &str) -> Result<(), String> {
    let mut session = Session::open(stream, h.wait).await?;
    let produced = produce(h, stream, label, 0).await?;
    let n = expected_count(h, &produced);
    let limits = [0, 1, 2, 5].map(Duration::from_millis);
    let mut events = Vec::new();
    let mut progress = Instant::now();
    let mut round = 0;
    while events.len() < n {
        if progress.elapsed() > h.wait {
            return Err(format!(
                "with `next` cancelled midway, only {} of {n} events came within {:?}",
                events.len(),
                h.wait
            ));
        }
        round += 1;
        if let Some(SourceMessage::Events(batch)) = session.next(limits[round % 4]).await? {
            events.extend(batch);
            progress = Instant::now();
        }
    }
    if h.generated {
        session.close().await?;
        let mut replay = Session::open(stream, h.wait).await?;
        let again = replay.read("reading again without cancelling", n).await?;
        replay.close().await?;
        return same_prefix(&events, &again);
    }
    events.extend(session.drain(h.quiet).await?);
    once_each(&produced, &events)?;
    session.close().await
}

/// Per partition, one reading is a prefix of the other.
fn same_prefix(cancelled: &[Event], plain: &[Event]) -> Result<(), String> {
    let by_partition = |events: &[Event]| {
        let mut map: BTreeMap<PartitionId, Vec<(u64, Bytes)>> = BTreeMap::new();
        for e in events {
            map.entry(e.position.partition)
                .or_default()
                .push((e.position.offset, e.payload.clone()));
        }
        map
    };
    let (a, b) = (by_partition(cancelled), by_partition(plain));
    for (p, left) in &a {
        let right = b.get(p).map_or(&[][..], Vec::as_slice);
        let k = left.len().min(right.len());
        if let Some(i) = (0..k).find(|&i| left[i] != right[i]) {
            return Err(format!(
                "partition {p}: with `next` cancelled midway, event {i} was offset {} ({}), \
                 read plainly it is offset {} ({})",
                left[i].0,
                show(&left[i].1),
                right[i].0,
                show(&right[i].1)
            ));
        }
    }
    Ok(())
}

/// Nothing of a paused partition after `pause` returned; delivery again
/// after `resume`.
async fn pause(h: &Harness, stream: &dyn TestStream, label: &str) -> Result<(), String> {
    let mut session = Session::open(stream, h.wait).await?;
    session.commit_as_read = true;
    let mut produced = produce(h, stream, label, 0).await?;
    let first = session.read("reading before the pause", 1).await?;
    let mut paused: BTreeSet<PartitionId> = session.assigned.clone();
    paused.extend(first.iter().map(|e| e.position.partition));
    let paused: Vec<PartitionId> = paused.into_iter().collect();
    session
        .source
        .pause(&paused)
        .map_err(|e| format!("`pause` failed: {e}"))?;
    let during = session.drain(h.quiet).await?;
    let leaked: Vec<&Event> = during
        .iter()
        .filter(|e| paused.contains(&e.position.partition))
        .collect();
    if !leaked.is_empty() {
        return Err(format!(
            "after `pause({paused:?})` returned, {} events of paused partitions came within {:?}: {}",
            leaked.len(),
            h.quiet,
            list(leaked.iter().map(|e| &e.payload))
        ));
    }
    session
        .source
        .resume(&paused)
        .map_err(|e| format!("`resume` failed: {e}"))?;
    let second = produce(h, stream, label, h.events).await?;
    let expected: BTreeSet<Bytes> = if h.generated {
        let rest = session.read("reading after `resume`", 1).await;
        return rest.map(|_| ()).map_err(|e| format!("after `resume`: {e}"));
    } else if h.source.is_some_and(|c| c.durable_positions) {
        produced.extend(second);
        let seen: BTreeSet<Bytes> = payloads(&first)
            .union(&payloads(&during))
            .cloned()
            .collect();
        produced.into_iter().filter(|p| !seen.contains(p)).collect()
    } else {
        second.into_iter().collect()
    };
    session
        .read_all("after `resume`", &expected)
        .await
        .map_err(|e| format!("delivery did not restart: {e}"))?;
    session.close().await
}

/// Session one reads everything and commits half of each partition;
/// session two reads until the other half came (or a wait passed).
/// Returns the split, what session two delivered and what it did not.
async fn commit_then_reopen(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
) -> Result<(Split, Vec<Event>, BTreeSet<Bytes>), String> {
    let (mut first, _, split) = Session::open_reading_produced(h, stream, label).await?;
    first.commit(&split.positions).await?;
    first.close().await?;
    let mut second = Session::open(stream, h.wait).await?;
    let (later, missing) = second.collect(&payloads(&split.rest)).await?;
    second.close().await?;
    Ok((split, later, missing))
}

/// A new session starts at the committed position: nothing below it again.
async fn resume_at_commit(h: &Harness, stream: &dyn TestStream, label: &str) -> Result<(), String> {
    let (split, later, missing) = commit_then_reopen(h, stream, label).await?;
    let again = split.committed_among(&later);
    if !again.is_empty() {
        return Err(format!(
            "a new session delivered {} events below the committed positions {:?} again: {}",
            again.len(),
            split.positions,
            list(again)
        ));
    }
    if missing.len() == split.rest.len() && !missing.is_empty() {
        return Err(format!(
            "a new session delivered none of the {} events from the committed positions {:?} on within {:?}",
            missing.len(),
            split.positions,
            h.wait
        ));
    }
    Ok(())
}

/// What was read and not committed comes again to a new session.
async fn redelivery(h: &Harness, stream: &dyn TestStream, label: &str) -> Result<(), String> {
    let (split, later, missing) = commit_then_reopen(h, stream, label).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} events read but not committed were not delivered to a new session \
         within {:?} (it delivered {}): {}",
        missing.len(),
        split.rest.len(),
        h.wait,
        later.len(),
        list(&missing)
    ))
}

/// After `resume_from` a new session hands out nothing below the stored
/// positions, and what lies above them.
async fn resume_from_stored(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
) -> Result<(), String> {
    let (first, _, split) = Session::open_reading_produced(h, stream, label).await?;
    let stored = first.source.positions_to_store(&split.positions);
    first.close().await?;
    let source = bounded(h.wait, "opening a source session", stream.source()).await??;
    let mut second = Session::over(source, h.wait);
    second
        .source
        .resume_from(&stored)
        .map_err(|e| format!("`resume_from({stored:?})` refused: {e}"))?;
    second.resume = Some(stored.clone());
    second.until_assigned().await?;
    let (later, missing) = second.collect(&payloads(&split.rest)).await?;
    second.close().await?;
    let below = split.committed_among(&later);
    if !below.is_empty() {
        return Err(format!(
            "after `resume_from({stored:?})`, {} events below the stored positions came: {}",
            below.len(),
            list(below)
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "after `resume_from({stored:?})`, {} events above the stored positions never came: {}",
            missing.len(),
            list(&missing)
        ));
    }
    Ok(())
}
