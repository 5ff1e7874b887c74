//! What the checks share: the suite's own payloads, a source session that
//! holds everything it receives to the framing rules (no empty or oversized
//! batch, no event before its partition's assignment, offsets increasing
//! within a partition), and a reader that reads a stream back. Every wait
//! here is bounded by the harness's `wait` (or `quiet`) and says what it
//! waited for when it runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Harness, TestStream};
use crate::event::{Event, PartitionId};
use crate::source::{CommitPosition, Source, SourceMessage, StoredPosition};

/// Most events asked of one `next`: odd, so batches split partitions.
pub(super) const MAX_BATCH: usize = 7;

/// The payload of event `seq` of producer partition `partition`.
pub(super) fn payload(label: &str, partition: u32, seq: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"check\":\"{label}\",\"p\":{partition},\"seq\":{seq}}}"
    ))
}

/// The producer partition and number of a suite payload.
pub(super) fn parse(payload: &[u8]) -> Option<(u32, usize)> {
    let text = std::str::from_utf8(payload).ok()?;
    let number = |key: &str| -> Option<usize> {
        let start = text.find(key)? + key.len();
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((number("\"p\":")? as u32, number("\"seq\":")?))
}

/// A payload for messages: the text when it is UTF-8.
pub(super) fn show(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Produces `events` payloads into every producer partition of `stream`;
/// returns them all. Does nothing for a generating source.
pub(super) async fn produce(
    harness: &Harness,
    stream: &dyn TestStream,
    label: &str,
    first: usize,
) -> Result<Vec<Bytes>, String> {
    let mut all = Vec::new();
    if harness.generated {
        return Ok(all);
    }
    for p in 0..stream.partitions() {
        let payloads: Vec<Bytes> = (first..first + harness.events)
            .map(|seq| payload(label, p, seq))
            .collect();
        all.extend(payloads.iter().cloned());
        bounded(
            harness.wait,
            "producing test events",
            stream.produce(p, payloads),
        )
        .await??;
    }
    Ok(all)
}

/// `future`, or an error naming `what` if it takes longer than `limit`.
pub(super) async fn bounded<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| format!("{what} did not finish within {limit:?}"))
}

/// A source session under watch.
pub(super) struct Session {
    pub source: Box<dyn Source>,
    pub assigned: BTreeSet<PartitionId>,
    pub revoked: Vec<PartitionId>,
    last: BTreeMap<PartitionId, u64>,
    /// Positions handed to `resume_from` after every assignment.
    pub resume: Option<Vec<StoredPosition>>,
    /// Commit every batch once read, as the engine does once events are
    /// finished (a broker that bounds unacknowledged messages, as MQTT's
    /// in-flight window does, stops delivering otherwise).
    pub commit_as_read: bool,
    wait: Duration,
}

impl Session {
    /// Opens a session of `stream` and waits for its first assignment.
    pub async fn open(stream: &dyn TestStream, wait: Duration) -> Result<Self, String> {
        let source = bounded(wait, "opening a source session", stream.source()).await??;
        let mut session = Self::over(source, wait);
        session.until_assigned().await?;
        Ok(session)
    }

    /// Opens a session of `stream` and reads what [`produce`] writes into
    /// it, split as [`Session::read_produced`] does.
    pub async fn open_reading_produced(
        h: &Harness,
        stream: &dyn TestStream,
        label: &str,
    ) -> Result<(Self, Vec<Event>, Split), String> {
        let mut session = Self::open(stream, h.wait).await?;
        let (events, split) = session.read_produced(h, stream, label).await?;
        Ok((session, events, split))
    }

    /// Watches an open source.
    pub fn over(source: Box<dyn Source>, wait: Duration) -> Self {
        Self {
            source,
            assigned: BTreeSet::new(),
            revoked: Vec::new(),
            last: BTreeMap::new(),
            resume: None,
            commit_as_read: false,
            wait,
        }
    }

    /// The next message within `limit` (`None` if nothing came), after
    /// checking it against the framing rules.
    pub async fn next(&mut self, limit: Duration) -> Result<Option<SourceMessage>, String> {
        let message = match tokio::time::timeout(limit, self.source.next(MAX_BATCH)).await {
            Err(_) => return Ok(None),
            Ok(Err(error)) => {
                return Err(format!(
                    "`next` failed: {error} (assigned so far {:?}, revoked {:?})",
                    self.assigned, self.revoked
                ))
            }
            Ok(Ok(message)) => message,
        };
        self.admit(&message)?;
        if let (SourceMessage::Events(events), true) = (&message, self.commit_as_read) {
            let mut next: BTreeMap<PartitionId, u64> = BTreeMap::new();
            for e in events {
                next.insert(e.position.partition, e.position.offset + 1);
            }
            let positions: Vec<CommitPosition> =
                next.into_iter().map(CommitPosition::from).collect();
            self.commit(&positions).await?;
        }
        Ok(Some(message))
    }

    fn admit(&mut self, message: &SourceMessage) -> Result<(), String> {
        match message {
            SourceMessage::Events(events) => {
                if events.is_empty() {
                    return Err("`next` returned an empty Events message".to_owned());
                }
                if events.len() > MAX_BATCH {
                    return Err(format!(
                        "`next({MAX_BATCH})` returned {} events",
                        events.len()
                    ));
                }
                events.iter().try_for_each(|e| self.in_order(e))
            }
            SourceMessage::Assigned(partitions) => {
                self.assigned.extend(partitions);
                for p in partitions {
                    self.last.remove(p);
                }
                if let Some(positions) = self.resume.clone() {
                    self.source
                        .resume_from(&positions)
                        .map_err(|e| format!("`resume_from` refused: {e}"))?;
                }
                Ok(())
            }
            SourceMessage::Revoked(partitions) => {
                self.revoked.extend(partitions);
                Ok(())
            }
            SourceMessage::End => Ok(()),
        }
    }

    fn in_order(&mut self, event: &Event) -> Result<(), String> {
        let p = event.position.partition;
        if !self.assigned.contains(&p) {
            return Err(format!(
                "an event of partition {p} (offset {}) came before the partition was assigned",
                event.position.offset
            ));
        }
        if let Some(last) = self.last.insert(p, event.position.offset) {
            if event.position.offset <= last {
                return Err(format!(
                    "partition {p} delivered offset {} after offset {last}: offsets must increase within a partition",
                    event.position.offset
                ));
            }
        }
        Ok(())
    }

    /// Reads until the first assignment.
    pub async fn until_assigned(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.wait;
        while self.assigned.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                None => {
                    return Err(format!(
                        "a new session was assigned no partition within {:?}",
                        self.wait
                    ))
                }
                Some(SourceMessage::Events(events)) => {
                    return Err(format!(
                        "a new session delivered {} events before any assignment",
                        events.len()
                    ))
                }
                Some(SourceMessage::End) => {
                    return Err("a new session ended before any assignment".to_owned())
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Reads until `done` holds for the events so far, giving up after a
    /// `wait` with no new event.
    pub async fn read_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> Result<Vec<Event>, String> {
        let mut events = Vec::new();
        while !done(&events) {
            match self.next(self.wait).await? {
                None => {
                    return Err(format!(
                        "{what}: stalled after {} events, nothing more within {:?}",
                        events.len(),
                        self.wait
                    ))
                }
                Some(SourceMessage::Events(batch)) => events.extend(batch),
                Some(SourceMessage::End) => {
                    return Err(format!(
                        "{what}: the source ended after {} events",
                        events.len()
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(events)
    }

    /// Reads `n` events.
    pub async fn read(&mut self, what: &str, n: usize) -> Result<Vec<Event>, String> {
        self.read_until(what, |e| e.len() >= n).await
    }

    /// Reads until every payload of `expected` arrived or a wait passed
    /// without a new event; returns what came and what did not. Only a
    /// broken framing rule is an error.
    pub async fn collect(
        &mut self,
        expected: &BTreeSet<Bytes>,
    ) -> Result<(Vec<Event>, BTreeSet<Bytes>), String> {
        let mut events = Vec::new();
        let mut missing = expected.clone();
        while !missing.is_empty() {
            match self.next(self.wait).await? {
                None | Some(SourceMessage::End) => break,
                Some(SourceMessage::Events(batch)) => {
                    for e in &batch {
                        missing.remove(&e.payload);
                    }
                    events.extend(batch);
                }
                Some(_) => {}
            }
        }
        Ok((events, missing))
    }

    /// Produces a check's events (producer partition 0), reads them back,
    /// and splits each partition's in half: the first half is what the
    /// check commits or stores, the rest what must come after it.
    pub async fn read_produced(
        &mut self,
        h: &Harness,
        stream: &dyn TestStream,
        label: &str,
    ) -> Result<(Vec<Event>, Split), String> {
        let produced = produce(h, stream, label, 0).await?;
        let events = self
            .read("reading the produced events", expected_count(h, &produced))
            .await?;
        let split = Split::half(&events);
        Ok((events, split))
    }

    /// Reads until every payload of `expected` arrived.
    pub async fn read_all(
        &mut self,
        what: &str,
        expected: &BTreeSet<Bytes>,
    ) -> Result<Vec<Event>, String> {
        let (events, missing) = self.collect(expected).await?;
        if missing.is_empty() {
            return Ok(events);
        }
        Err(format!(
            "{what}: {} of {} events never delivered within {:?} (after {} events): {}",
            missing.len(),
            expected.len(),
            self.wait,
            events.len(),
            list(&missing)
        ))
    }

    /// Every event arriving within `period` (and nothing is expected).
    pub async fn drain(&mut self, period: Duration) -> Result<Vec<Event>, String> {
        let deadline = Instant::now() + period;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(events);
            }
            match self.next(left).await? {
                None | Some(SourceMessage::End) => return Ok(events),
                Some(SourceMessage::Events(batch)) => events.extend(batch),
                Some(_) => {}
            }
        }
    }

    /// Commits `positions`, within the wait.
    pub async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), String> {
        bounded(self.wait, "`commit`", self.source.commit(positions))
            .await?
            .map_err(|e| format!("`commit` failed: {e}"))
    }

    /// Closes the session, within the wait.
    pub async fn close(mut self) -> Result<(), String> {
        bounded(self.wait, "`close`", self.source.close())
            .await?
            .map_err(|e| format!("`close` failed: {e}"))
    }
}

/// Splits events read in order into the first `half` of each partition and
/// the rest, with the positions that commit the first part.
pub(super) struct Split {
    pub committed: Vec<Event>,
    pub rest: Vec<Event>,
    pub positions: Vec<CommitPosition>,
}

impl Split {
    /// The payloads of `events` that were committed already, in delivery
    /// order: what a later session must not deliver again.
    pub fn committed_among<'a>(&self, events: &'a [Event]) -> Vec<&'a Bytes> {
        among(events, &payloads(&self.committed))
    }

    /// The first half (at least one) of each partition's events.
    pub fn half(events: &[Event]) -> Self {
        let mut by_partition: BTreeMap<PartitionId, Vec<&Event>> = BTreeMap::new();
        for e in events {
            by_partition
                .entry(e.position.partition)
                .or_default()
                .push(e);
        }
        let mut split = Self {
            committed: Vec::new(),
            rest: Vec::new(),
            positions: Vec::new(),
        };
        for (partition, events) in by_partition {
            let k = (events.len() / 2).max(1);
            split
                .committed
                .extend(events[..k].iter().map(|e| (*e).clone()));
            split.rest.extend(events[k..].iter().map(|e| (*e).clone()));
            split.positions.push(CommitPosition {
                partition,
                next_offset: events[k - 1].position.offset + 1,
            });
        }
        split
    }
}

/// The payloads of `events`.
pub(super) fn payloads(events: &[Event]) -> BTreeSet<Bytes> {
    events.iter().map(|e| e.payload.clone()).collect()
}

/// The payloads of `events` that are in `set`, in delivery order: what came
/// again, or too early, for the messages of the checks that forbid it.
pub(super) fn among<'a>(events: &'a [Event], set: &BTreeSet<Bytes>) -> Vec<&'a Bytes> {
    events
        .iter()
        .map(|e| &e.payload)
        .filter(|p| set.contains(*p))
        .collect()
}

/// How many events a check reads back: twice the configured count from a
/// source that makes its own events (it need not stop at `h.events`), else
/// every produced one.
pub(super) fn expected_count(h: &Harness, produced: &[Bytes]) -> usize {
    if h.generated {
        h.events * 2
    } else {
        produced.len()
    }
}

/// A few payloads of a set, for messages.
pub(super) fn list<'a>(payloads: impl IntoIterator<Item = &'a Bytes>) -> String {
    let all: Vec<String> = payloads.into_iter().map(|p| show(p)).collect();
    let shown: Vec<&str> = all.iter().take(5).map(String::as_str).collect();
    let more = all.len().saturating_sub(shown.len());
    if more > 0 {
        format!("[{}, and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Reads a stream back: through its own store, or a new source session
/// opened before anything is written (so a source that only sees what is
/// published while it listens sees it too).
pub(super) struct Reader<'a> {
    stream: &'a dyn TestStream,
    session: Option<Session>,
    /// What the session delivered so far, by payload.
    seen: BTreeMap<Bytes, usize>,
}

impl<'a> Reader<'a> {
    pub async fn open(stream: &'a dyn TestStream, wait: Duration) -> Result<Self, String> {
        let stored = bounded(wait, "reading the stored payloads", stream.stored()).await??;
        let session = match stored {
            Some(_) => None,
            None => Some(Session::open(stream, wait).await?),
        };
        Ok(Self {
            stream,
            session,
            seen: BTreeMap::new(),
        })
    }

    /// How many times each payload is visible, once every payload of
    /// `expected` is (or a wait passed without it), and a quiet period
    /// later (so copies and strays show).
    pub async fn counts(
        &mut self,
        expected: &BTreeSet<Bytes>,
        wait: Duration,
        quiet: Duration,
    ) -> Result<BTreeMap<Bytes, usize>, String> {
        let Some(session) = self.session.as_mut() else {
            return stored_counts(self.stream, expected, wait, quiet).await;
        };
        let missing: BTreeSet<Bytes> = expected
            .iter()
            .filter(|p| !self.seen.contains_key(*p))
            .cloned()
            .collect();
        let (mut events, _) = session.collect(&missing).await?;
        events.extend(session.drain(quiet).await?);
        for e in events {
            *self.seen.entry(e.payload).or_insert(0) += 1;
        }
        Ok(self.seen.clone())
    }
}

/// [`Reader::counts`] of a stream read through its own store.
async fn stored_counts(
    stream: &dyn TestStream,
    expected: &BTreeSet<Bytes>,
    wait: Duration,
    quiet: Duration,
) -> Result<BTreeMap<Bytes, usize>, String> {
    let deadline = Instant::now() + wait;
    let read = || async {
        let stored = bounded(wait, "reading the stored payloads", stream.stored())
            .await??
            .unwrap_or_default();
        let mut counts = BTreeMap::new();
        for p in stored {
            *counts.entry(p).or_insert(0) += 1;
        }
        Ok::<_, String>(counts)
    };
    loop {
        let counts = read().await?;
        if expected.iter().all(|p| counts.contains_key(p)) || Instant::now() >= deadline {
            tokio::time::sleep(quiet).await;
            return read().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Reader<'_> {
    /// Closes the session, if any.
    pub async fn close(self) -> Result<(), String> {
        match self.session {
            Some(session) => session.close().await,
            None => Ok(()),
        }
    }
}

/// Checks that every payload of `expected` is visible exactly once and
/// nothing else is; `what` says whose records they are.
pub(super) fn exactly(
    counts: &BTreeMap<Bytes, usize>,
    expected: &BTreeSet<Bytes>,
    what: &str,
) -> Result<(), String> {
    let missing: Vec<&Bytes> = expected
        .iter()
        .filter(|p| !counts.contains_key(*p))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} {what} are not visible: {}",
            missing.len(),
            expected.len(),
            list(missing)
        ));
    }
    let copies: Vec<&Bytes> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect();
    if !copies.is_empty() {
        return Err(format!("{what} visible more than once: {}", list(copies)));
    }
    let strays: Vec<&Bytes> = counts.keys().filter(|p| !expected.contains(*p)).collect();
    if !strays.is_empty() {
        return Err(format!(
            "records visible that should not be ({what} are only {} records): {}",
            expected.len(),
            list(strays)
        ));
    }
    Ok(())
}
