//! Errors connectors report to the engine. Each says whether trying again
//! can help, because that decides between a retry and a stall or a failure.

use thiserror::Error;

/// A source failed to read, pause, commit or release.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The broker or file could not be reached or read; trying again may help.
    #[error("{source_name}: {message}")]
    Unavailable {
        /// Which source (connector kind and stream).
        source_name: String,
        /// What went wrong, for the operator.
        message: String,
    },
    /// The source cannot continue (fenced, misconfigured, data corrupt).
    #[error("{source_name}: {message}")]
    Fatal {
        /// Which source (connector kind and stream).
        source_name: String,
        /// What went wrong and what to do about it.
        message: String,
    },
}

impl SourceError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A sink failed to write or flush a record.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The write was not acknowledged but may be later (broker down, timeout).
    #[error("{sink_name}: {message}")]
    Unavailable {
        /// Which sink (connector kind and target).
        sink_name: String,
        /// What went wrong.
        message: String,
    },
    /// This one record can never be written as it is (too large, refused
    /// by a schema or a column, an invalid record): writing it again would
    /// fail the same way, while other records still go through. The engine
    /// does not retry it: an output record rejected so dead-letters its
    /// event (reason `output-rejected`); a dead letter rejected so is
    /// written once more in reduced form (see
    /// [`dead_letter::REDUCED`](crate::dead_letter::REDUCED)).
    ///
    /// Anything that is not about the record itself — the broker away, a
    /// timeout, missing permissions for the whole destination — is
    /// [`SinkError::Unavailable`] instead, even when it needs an operator.
    #[error("{sink_name}: record rejected: {message}")]
    Rejected {
        /// Which sink (connector kind and target).
        sink_name: String,
        /// Why the record was refused, in words, and the setting that
        /// would let it through (e.g. "the payload (1048600 bytes) is
        /// larger than the producer's `message.max.bytes` (1000000); raise
        /// `properties: {message.max.bytes: …}`"): it ends up in the dead
        /// letter's headers, where an operator reads it.
        message: String,
    },
    /// The sink's settings do not fit what it found when it connected (a
    /// mapping naming a column the table does not have): each problem at
    /// its place in the pipeline file, so it is reported like a validation
    /// error. Trying again cannot help; the file must change.
    #[error("{sink_name}: {}", describe_problems(problems))]
    Misconfigured {
        /// Which sink (connector kind and target).
        sink_name: String,
        /// Every problem found, each with its place in the pipeline file.
        problems: Vec<crate::ConfigError>,
    },
}

fn describe_problems(problems: &[crate::ConfigError]) -> String {
    let described: Vec<String> = problems
        .iter()
        .map(|p| format!("{} (line {}): {}", p.path, p.span, p.message))
        .collect();
    described.join("; ")
}

impl SinkError {
    /// True when writing the same record again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
