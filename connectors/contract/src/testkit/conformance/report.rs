//! The suite's checks by name, which of them apply to a connector, and the
//! report of a run: every check passed, skipped (with why) or failed (with
//! what broke), none left out.

use std::fmt;

use super::Harness;

/// One named check of the suite; see [`Check::rule`] for what each checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Source rule 2, and events of a partition only after its assignment.
    SourceOrder,
    /// Source rule 5: a `next` dropped midway loses nothing.
    SourceCancelSafety,
    /// Source rule 3: pause stops delivery, resume restarts it.
    SourcePause,
    /// Source rule 1 (`durable_positions`): a new session starts at the
    /// committed position.
    SourceResumeAtCommit,
    /// Source rule 1 (`durable_positions`): what was read and not
    /// committed is delivered again to a new session.
    SourceRedelivery,
    /// Source rule 4 (group sources): revoked partitions are held until
    /// released, then their next owner starts at the committed position.
    SourceReleaseOnRevoke,
    /// Source rule 6 (`resumable`): no event below a position given to
    /// `resume_from`.
    SourceResumeFromStored,
    /// Transaction rule 1 (source `exactly_once`): a commit makes records
    /// and positions visible together.
    SourceExactlyOnceCommit,
    /// Transaction rules 1–2 (source `exactly_once`): an abort makes
    /// nothing visible and the same records can be written again.
    SourceExactlyOnceAbort,
    /// The sink rule: an acknowledged write is durable, readable by a new
    /// session.
    SinkAckDurable,
    /// Sink `exactly_once`: the sink names a transactional target.
    SinkTransactionalTarget,
    /// Sink `durable_positions`: its session commits records and positions
    /// together.
    SinkSessionCommit,
    /// Sink `durable_positions`: its session's abort leaves nothing behind.
    SinkSessionAbort,
}

impl Check {
    /// Every check, in the order the suite runs them.
    pub const ALL: [Check; 13] = [
        Check::SourceOrder,
        Check::SourceCancelSafety,
        Check::SourcePause,
        Check::SourceResumeAtCommit,
        Check::SourceRedelivery,
        Check::SourceReleaseOnRevoke,
        Check::SourceResumeFromStored,
        Check::SourceExactlyOnceCommit,
        Check::SourceExactlyOnceAbort,
        Check::SinkAckDurable,
        Check::SinkTransactionalTarget,
        Check::SinkSessionCommit,
        Check::SinkSessionAbort,
    ];

    /// The check's name in reports and stream names.
    pub fn name(self) -> &'static str {
        match self {
            Check::SourceOrder => "source-order",
            Check::SourceCancelSafety => "source-cancel-safety",
            Check::SourcePause => "source-pause",
            Check::SourceResumeAtCommit => "source-resume-at-commit",
            Check::SourceRedelivery => "source-redelivery",
            Check::SourceReleaseOnRevoke => "source-release-on-revoke",
            Check::SourceResumeFromStored => "source-resume-from-stored",
            Check::SourceExactlyOnceCommit => "source-exactly-once-commit",
            Check::SourceExactlyOnceAbort => "source-exactly-once-abort",
            Check::SinkAckDurable => "sink-ack-durable",
            Check::SinkTransactionalTarget => "sink-transactional-target",
            Check::SinkSessionCommit => "sink-session-commit",
            Check::SinkSessionAbort => "sink-session-abort",
        }
    }

    /// The rule the check holds the connector to, in one line.
    pub fn rule(self) -> &'static str {
        match self {
            Check::SourceOrder => "events of a partition come after its assignment, in order",
            Check::SourceCancelSafety => "a cancelled `next` loses no event",
            Check::SourcePause => "pause stops delivery, resume restarts it",
            Check::SourceResumeAtCommit => "a new session resumes at the committed position",
            Check::SourceRedelivery => "events read and not committed are delivered again",
            Check::SourceReleaseOnRevoke => "revoked partitions are held until released",
            Check::SourceResumeFromStored => "no event below a position given to `resume_from`",
            Check::SourceExactlyOnceCommit => {
                "a commit makes records and positions visible together"
            }
            Check::SourceExactlyOnceAbort => "an abort makes neither visible; a retry is accepted",
            Check::SinkAckDurable => "an acknowledged write is durable",
            Check::SinkTransactionalTarget => "an exactly-once sink names a transactional target",
            Check::SinkSessionCommit => "the sink's session commits records and positions together",
            Check::SinkSessionAbort => "the sink's session abort leaves nothing behind",
        }
    }

    /// `Ok` when the check applies to the connector, else why it is skipped.
    pub(super) fn applies(self, harness: &Harness) -> Result<(), String> {
        let source = harness.source.ok_or("the connector has no source");
        let sink = harness.sink.ok_or("the connector has no sink");
        let claimed = |yes: bool, what: &str| {
            if yes {
                Ok(())
            } else {
                Err(format!("not claimed: {what}"))
            }
        };
        match self {
            Check::SourceOrder | Check::SourceCancelSafety | Check::SourcePause => {
                source.map(|_| ()).map_err(str::to_owned)
            }
            Check::SourceResumeAtCommit | Check::SourceRedelivery => {
                claimed(source?.durable_positions, "source durable_positions")
            }
            Check::SourceReleaseOnRevoke => {
                source?;
                claimed(harness.group, "source partitions assigned by a group")
            }
            Check::SourceResumeFromStored => claimed(source?.resumable, "source resumable"),
            Check::SourceExactlyOnceCommit | Check::SourceExactlyOnceAbort => {
                claimed(source?.exactly_once, "source exactly_once")
            }
            Check::SinkAckDurable => sink.map(|_| ()).map_err(str::to_owned),
            Check::SinkTransactionalTarget => claimed(sink?.exactly_once, "sink exactly_once"),
            Check::SinkSessionCommit | Check::SinkSessionAbort => {
                claimed(sink?.durable_positions, "sink durable_positions")
            }
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The connector kept the rule.
    Passed,
    /// The check does not apply (the capability is not claimed); why.
    Skipped(String),
    /// The connector broke the rule; what happened.
    Failed(String),
}

/// Every check's outcome for one connector.
#[derive(Debug, Clone)]
pub struct Report {
    /// The connector's name.
    pub connector: String,
    /// Each check with its outcome, in the order they ran.
    pub outcomes: Vec<(Check, Outcome)>,
}

impl Report {
    pub(super) fn new(connector: &str) -> Self {
        Self {
            connector: connector.to_owned(),
            outcomes: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, check: Check, outcome: Outcome) {
        self.outcomes.push((check, outcome));
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }

    /// The outcome of `check`.
    pub fn outcome(&self, check: Check) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(c, _)| *c == check)
            .map(|(_, o)| o)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |pick: fn(&Outcome) -> bool| self.outcomes.iter().filter(|(_, o)| pick(o)).count();
        writeln!(
            f,
            "conformance of `{}`: {} passed, {} skipped, {} failed",
            self.connector,
            count(|o| matches!(o, Outcome::Passed)),
            count(|o| matches!(o, Outcome::Skipped(_))),
            count(|o| matches!(o, Outcome::Failed(_))),
        )?;
        for (check, outcome) in &self.outcomes {
            match outcome {
                Outcome::Passed => writeln!(f, "  passed  {} ({})", check.name(), check.rule())?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {} ({why})", check.name())?,
                Outcome::Failed(what) => writeln!(
                    f,
                    "  FAILED  {}: {what} [rule: {}]",
                    check.name(),
                    check.rule()
                )?,
            }
        }
        Ok(())
    }
}
