//! Source rule 4 for sources whose partitions a group assigns: a revoked
//! partition is held until the engine released it (its next owner gets
//! none of its events before), and its next owner starts at the position
//! committed before the release.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::session::{among, bounded, list, payloads, Session, Split};
use super::{Harness, TestStream};
use crate::event::{Event, PartitionId};
use crate::source::{CommitPosition, SourceMessage};

/// Polls both members for at most `limit`; returns the events each got.
async fn step(
    old: &mut Session,
    new: Option<&mut Session>,
    limit: Duration,
) -> Result<(Vec<Event>, Vec<Event>), String> {
    let events = |message: Option<SourceMessage>| match message {
        Some(SourceMessage::Events(events)) => events,
        _ => Vec::new(),
    };
    match new {
        None => Ok((events(old.next(limit).await?), Vec::new())),
        Some(new) => tokio::select! {
            message = old.next(limit) => Ok((events(message?), Vec::new())),
            message = new.next(limit) => Ok((Vec::new(), events(message?))),
        },
    }
}

/// The payloads of `events` in `partitions`.
fn of(events: &[Event], partitions: &[PartitionId]) -> BTreeSet<Bytes> {
    payloads(
        &events
            .iter()
            .filter(|e| partitions.contains(&e.position.partition))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// Rule 4: revoke, hold, commit, release, hand over at the commit.
pub(super) async fn release_on_revoke(
    h: &Harness,
    stream: &dyn TestStream,
    label: &str,
) -> Result<(), String> {
    let (mut old, events, split) = Session::open_reading_produced(h, stream, label).await?;
    old.commit(&split.positions).await?;
    let joined = bounded(h.wait, "a rebalance", stream.rebalance()).await??;
    let mut new = joined.map(|source| Session::over(source, h.wait));
    let mut early = Vec::new();
    let deadline = Instant::now() + h.wait;
    while old.revoked.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "no `Revoked` came within {:?} of a rebalance",
                h.wait
            ));
        }
        early.extend(
            step(&mut old, new.as_mut(), Duration::from_millis(100))
                .await?
                .1,
        );
    }
    let revoked = old.revoked.clone();
    let held = of(&events, &revoked);
    let hold_until = Instant::now() + h.quiet;
    while Instant::now() < hold_until {
        early.extend(
            step(&mut old, new.as_mut(), Duration::from_millis(50))
                .await?
                .1,
        );
    }
    let taken = among(&early, &held);
    if !taken.is_empty() {
        return Err(format!(
            "partitions {revoked:?} were revoked and not yet released, yet their new owner got \
             {} of their events: {}",
            taken.len(),
            list(taken)
        ));
    }
    let positions: Vec<CommitPosition> = split
        .positions
        .iter()
        .filter(|p| revoked.contains(&p.partition))
        .copied()
        .collect();
    old.commit(&positions).await?;
    bounded(h.wait, "`release`", old.source.release(&revoked))
        .await?
        .map_err(|e| format!("`release({revoked:?})` failed: {e}"))?;
    hand_over(h, &mut old, new.as_mut(), &split, &revoked).await?;
    if let Some(new) = new {
        new.close().await?;
    }
    old.close().await
}

/// After the release, the next owner delivers what the old one read and
/// did not commit, and nothing it committed.
async fn hand_over(
    h: &Harness,
    old: &mut Session,
    mut new: Option<&mut Session>,
    split: &Split,
    revoked: &[PartitionId],
) -> Result<(), String> {
    let mut missing = of(&split.rest, revoked);
    let committed = of(&split.committed, revoked);
    let mut got = Vec::new();
    let mut progress = Instant::now();
    while !missing.is_empty() && progress.elapsed() < h.wait {
        let (from_old, from_new) =
            step(old, new.as_deref_mut(), Duration::from_millis(100)).await?;
        let owned = if new.is_some() { from_new } else { from_old };
        if !owned.is_empty() {
            progress = Instant::now();
        }
        for e in &owned {
            missing.remove(&e.payload);
        }
        got.extend(owned);
    }
    let again = among(&got, &committed);
    if !again.is_empty() {
        return Err(format!(
            "after the release, the next owner of {revoked:?} delivered events below the \
             committed positions again: {}",
            list(again)
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "after the release, the next owner of {revoked:?} did not deliver {} events read \
             and not committed within {:?}: {}",
            missing.len(),
            h.wait,
            list(&missing)
        ));
    }
    Ok(())
}
