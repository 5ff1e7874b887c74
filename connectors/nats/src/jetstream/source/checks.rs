//! What `spate validate --connect` checks of a JetStream input without
//! reading anything: that its stream exists (or can be created), and, for
//! an `exactly_once` function, that every JetStream output's stream
//! de-duplicates for at least twice the input's redelivery time, the rule
//! the exactly-once session enforces before its first publish.

use async_nats::jetstream::{self as js};
use spate_connector::{SourceError, TransactionalTarget};

use super::JetStreamSourceBuilder;
use crate::jetstream::exactly_once::{duplicate_window, window_problem};

impl JetStreamSourceBuilder {
    /// Connects as `build` does and checks that the stream exists (or,
    /// with `subjects`, can be created by `build`); creates nothing, binds
    /// no consumer.
    pub(super) async fn check_stream(&self) -> Result<(), SourceError> {
        let name = format!("jetstream:{}", self.stream);
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let client = self.connect.connect(&name).await.map_err(unavailable)?;
        let context = js::new(client);
        match context.get_stream(&self.stream).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                js::context::GetStreamErrorKind::JetStream(inner) if inner.code() == 404 => {
                    if self.subjects.is_empty() {
                        Err(SourceError::Fatal {
                            source_name: name.clone(),
                            message: format!(
                                "no stream `{}` at `{}`; create it, or set `subjects` so spate creates it",
                                self.stream,
                                self.connect.display_url()
                            ),
                        })
                    } else {
                        Ok(())
                    }
                }
                _ => Err(unavailable(format!(
                    "cannot read stream `{}` at `{}`: {e}",
                    self.stream,
                    self.connect.display_url()
                ))),
            },
        }
    }

    /// Reads the duplicate window of the stream capturing each JetStream
    /// target's subject, as the exactly-once session does before its
    /// first publish, and refuses one too short for this input's
    /// redelivery time.
    pub(super) async fn check_windows(
        &self,
        targets: &[TransactionalTarget],
    ) -> Result<(), SourceError> {
        let name = format!("jetstream:{}", self.stream);
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let subjects: Vec<&str> = targets
            .iter()
            .filter(|t| t.kind == "jetstream")
            .map(|t| t.destination.as_str())
            .collect();
        if subjects.is_empty() {
            return Ok(());
        }
        let context = js::new(self.connect.connect(&name).await.map_err(unavailable)?);
        for subject in subjects {
            let (stream_name, window) = duplicate_window(&context, subject)
                .await
                .map_err(unavailable)?;
            if let Some(message) =
                window_problem(&stream_name, subject, window, self.redelivery_after())
            {
                return Err(SourceError::Fatal {
                    source_name: name.clone(),
                    message,
                });
            }
        }
        Ok(())
    }
}
