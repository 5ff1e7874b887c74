//! The commit path outside exactly-once sessions: the positions the engine
//! gives are committed to the group synchronously on tokio's blocking pool,
//! waiting at most `commit_timeout`, with never more than one commit
//! waiting for the group coordinator at a time. Inside a session the
//! session's transactions carry the offsets and this does nothing.

use rdkafka::consumer::{CommitMode, Consumer};
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
        // librdkafka waits for the group coordinator without limit; wait at
        // most `commit_timeout` here, and never start a second commit while
        // an earlier one still waits (so at most one blocking thread).
        let timeout = self.settings.commit_timeout;
        if let Some(earlier) = self.pending_commit.as_mut() {
            if tokio::time::timeout(timeout, earlier).await.is_err() {
                return Err(self.commit_unavailable(
                    "an earlier commit is still waiting for the group coordinator".to_owned(),
                ));
            }
            // Its outcome was reported (as not confirmed) already.
            self.pending_commit = None;
        }
        let consumer = self.consumer()?.clone();
        let task = self
            .pending_commit
            .insert(tokio::task::spawn_blocking(move || {
                consumer.commit(&tpl, CommitMode::Sync)
            }));
        let committed = match tokio::time::timeout(timeout, task).await {
            Err(_) => {
                return Err(self.commit_unavailable(format!(
                    "the group coordinator did not confirm the commit within {timeout:?} (`commit_timeout`)"
                )))
            }
            Ok(joined) => {
                self.pending_commit = None;
                joined.map_err(|e| SourceError::Fatal {
                    source_name: self.name.clone(),
                    message: format!("the commit task failed: {e}"),
                })?
            }
        };
        match committed {
            Ok(()) => Ok(()),
            Err(error) if code_of(&error).is_some_and(is_auth_error) => {
                Err(consumer_failure(&error, self.servers()).into_source(&self.name))
            }
            Err(error) => Err(self.commit_unavailable(format!("{error}"))),
        }
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
