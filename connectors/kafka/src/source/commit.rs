//! The commit path outside exactly-once sessions: the positions the engine
//! gives are committed to the group asynchronously through the source's
//! [`CommitQueue`](crate::consumer::CommitQueue), whose reply says whether
//! the group coordinator confirmed them; `commit` waits at most
//! `commit_timeout` for it, and never sends a second commit while an
//! earlier one's outcome is still outstanding (it waits for that first). No
//! thread blocks on the coordinator. Inside a session the session's
//! transactions carry the offsets and this does nothing.

use rdkafka::error::KafkaError;
use rdkafka::Offset;
use spate_connector::internal_events::CommitTimer;
use spate_connector::{CommitPosition, SourceError};

use super::KafkaSource;
use crate::error::{code_of, consumer_failure, is_auth_error};

impl KafkaSource {
    /// Commits `positions` (each "the next offset to read") to the group.
    pub(super) async fn commit_positions(
        &mut self,
        positions: &[CommitPosition],
    ) -> Result<(), SourceError> {
        if self.exactly_once {
            // The engine calls this after each successful session commit;
            // that transaction already stored these offsets.
            return Ok(());
        }
        let timer = CommitTimer::start("kafka");
        let outcome = self.commit_to_group(positions).await;
        timer.finish(
            &self.name,
            &outcome,
            "committing offsets to the group failed",
        );
        outcome
    }

    /// Commits `positions` to the group, outside exactly-once sessions.
    async fn commit_to_group(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let (tpl, unknown) = self.shared.interner().list(positions.iter().map(|p| {
            (
                p.partition,
                Offset::Offset(i64::try_from(p.next_offset).unwrap_or(i64::MAX)),
            )
        }));
        if !unknown.is_empty() {
            tracing::warn!(source = %self.name, partitions = ?unknown, "commit for partitions this source never had ignored");
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let timeout = self.settings.commit_timeout;
        let Some(commits) = self.commits.as_mut() else {
            return Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: "the source is closed".to_owned(),
            });
        };
        // An earlier commit whose wait ran out: its outcome was reported (as
        // not confirmed) already; only its end is awaited here.
        if commits.is_waiting() && commits.outcome(timeout).await.is_none() {
            return Err(self.commit_unavailable(
                "an earlier commit is still waiting for the group coordinator".to_owned(),
            ));
        }
        let outcome = match commits.start(&tpl) {
            Ok(()) => commits.outcome(timeout).await,
            Err(error) => Some(Err(error)),
        };
        match outcome {
            None => Err(self.commit_unavailable(format!(
                "the group coordinator did not confirm the commit within {timeout:?} (`commit_timeout`)"
            ))),
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(self.commit_failure(&error)),
        }
    }

    /// A refused or failed commit: an authorization refusal as the
    /// consumer reports it, anything else retryable.
    fn commit_failure(&self, error: &KafkaError) -> SourceError {
        if code_of(error).is_some_and(is_auth_error) {
            return consumer_failure(error, self.servers()).into_source(&self.name);
        }
        self.commit_unavailable(format!("{error}"))
    }

    fn commit_unavailable(&self, why: String) -> SourceError {
        SourceError::Unavailable {
            source_name: self.name.clone(),
            message: format!(
                "committing offsets of group `{}` at `{}` failed: {why}",
                self.settings.group_id,
                self.servers()
            ),
        }
    }
}
