//! A Kafka source's settings, read through the contract's
//! [`ConfigReader`]; see the [module](super) for the table.

use std::time::Duration;

use spate_connector::ConfigReader;

use crate::config::ConnectionSettings;

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// Default `statistics.interval.ms` (feeds
/// [`Source::lag`](spate_connector::Source::lag)).
const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";
/// librdkafka's `heartbeat.interval.ms` default.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Default `commit_timeout`.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the source subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic matching this (anchored) regular expression.
    Pattern(String),
}

/// `assignment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// `cooperative-sticky`.
    Cooperative,
    /// `range,roundrobin`.
    Eager,
}

/// Every setting of a Kafka source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Cluster and security.
    pub connection: ConnectionSettings,
    /// Topics or pattern.
    pub subscription: Subscription,
    /// `group_id`.
    pub group_id: String,
    /// `group_instance_id`.
    pub group_instance_id: Option<String>,
    /// `transactional_id`.
    pub transactional_id: Option<String>,
    /// `assignment`.
    pub assignment: Assignment,
    /// `start`: true for `earliest`.
    pub start_earliest: bool,
    /// `isolation`: true for `read_committed`.
    pub read_committed: bool,
    /// `session_timeout`.
    pub session_timeout: Option<Duration>,
    /// `commit_timeout`.
    pub commit_timeout: Duration,
}

impl SourceSettings {
    /// Reads a source's settings, recording every problem; `None` if any.
    pub fn read(config: &mut ConfigReader<'_>) -> Option<Self> {
        let mark = crate::error_mark(config);
        let topics = config.list("topics").map(|nodes| {
            nodes
                .into_iter()
                .filter_map(|node| match node.as_text() {
                    Some(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                    _ => {
                        config.error(
                            node.span,
                            config.child_path("topics"),
                            format!("each topic must be a name, found {}", node.type_name()),
                            None,
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let pattern = config.string("topic_pattern");
        let subscription = match (topics, pattern) {
            (Some(topics), None) if !topics.is_empty() => Some(Subscription::Topics(topics)),
            (Some(_), None) => None, // the bad entries were reported
            (None, Some(p)) if p.trim().is_empty() => {
                config.error_at_key("topic_pattern", "`topic_pattern` is empty", None);
                None
            }
            (None, Some(p)) => Some(Subscription::Pattern(anchored(&p))),
            (Some(_), Some(_)) => {
                config.error_at_key(
                    "topic_pattern",
                    "both `topics` and `topic_pattern` are set",
                    Some("keep one: `topics` for fixed names, `topic_pattern` for a regular expression".to_owned()),
                );
                None
            }
            (None, None) => {
                config.missing(
                    "topics",
                    Some(
                        "name the topics to read (`topics: [orders]`), or set `topic_pattern`"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let group_id = config.required_string(
            "group_id",
            Some(
                "the consumer group every process of this pipeline shares, e.g. `orders-fn`"
                    .to_owned(),
            ),
        );
        let group_instance_id = non_empty(config, "group_instance_id");
        let transactional_id = non_empty(config, "transactional_id");
        let assignment = match config.one_of("assignment", &["cooperative", "eager"]) {
            Some("eager") => Assignment::Eager,
            _ => Assignment::Cooperative,
        };
        let start_earliest = config.one_of("start", &["earliest", "latest"]) != Some("latest");
        let read_committed = config.one_of("isolation", &["read_committed", "read_uncommitted"])
            != Some("read_uncommitted");
        let session_timeout =
            crate::duration_at_least(config, "session_timeout", Duration::from_secs(1));
        let commit_timeout =
            crate::duration_at_least(config, "commit_timeout", Duration::from_millis(100))
                .unwrap_or(DEFAULT_COMMIT_TIMEOUT);
        let connection = ConnectionSettings::read(config);
        if crate::has_new_errors(config, mark) {
            return None;
        }
        Some(Self {
            connection,
            commit_timeout,
            subscription: subscription?,
            group_id: group_id?,
            group_instance_id,
            transactional_id,
            assignment,
            start_earliest,
            read_committed,
            session_timeout,
        })
    }

    /// `kafka:topic,topic` or `kafka:~pattern`.
    pub fn name(&self) -> String {
        match &self.subscription {
            Subscription::Topics(topics) => format!("kafka:{}", topics.join(",")),
            Subscription::Pattern(pattern) => format!("kafka:~{pattern}"),
        }
    }

    /// The librdkafka consumer configuration.
    pub fn consumer_config(&self) -> rdkafka::ClientConfig {
        let mut config = self.connection.client_config();
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if self.start_earliest {
                    "earliest"
                } else {
                    "latest"
                },
            )
            .set(
                "isolation.level",
                if self.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .set(
                "partition.assignment.strategy",
                match self.assignment {
                    Assignment::Cooperative => "cooperative-sticky",
                    Assignment::Eager => "range,roundrobin",
                },
            )
            .set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
        if let Some(id) = &self.group_instance_id {
            config.set("group.instance.id", id);
        }
        if let Some(timeout) = self.session_timeout {
            config.set("session.timeout.ms", timeout.as_millis().to_string());
            // librdkafka heartbeats every 3 s whatever the session timeout;
            // a session under 9 s needs them at a third of it, as Kafka
            // advises, or one late heartbeat costs the member its partitions.
            // `properties` may still set it (applied below).
            let heartbeat = (timeout / 3).min(DEFAULT_HEARTBEAT_INTERVAL);
            config.set("heartbeat.interval.ms", heartbeat.as_millis().to_string());
        }
        self.connection.finish(&mut config);
        config
    }

    /// How long a revocation may wait for its release: the group's
    /// rebalance deadline.
    pub(crate) fn handover_limit(&self) -> Duration {
        self.connection
            .properties
            .iter()
            .find(|(k, _)| k == "max.poll.interval.ms")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map_or(DEFAULT_MAX_POLL_INTERVAL, Duration::from_millis)
    }
}

fn anchored(pattern: &str) -> String {
    let pattern = pattern.trim();
    if pattern.starts_with('^') {
        pattern.to_owned()
    } else {
        format!("^{pattern}")
    }
}

fn non_empty(config: &mut ConfigReader<'_>, key: &'static str) -> Option<String> {
    let value = config.string(key)?;
    if value.trim().is_empty() {
        config.error_at_key(
            key,
            format!("`{key}` is empty"),
            Some("leave it out instead".to_owned()),
        );
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use spate_connector::config::ConfigErrors;
    use spate_connector::testkit::config_map;
    use spate_connector::ConfigReader;

    use super::SourceSettings;

    fn consumer_setting(entries: &[(&str, &str)], key: &str) -> Option<String> {
        let node = config_map(entries);
        let errors = ConfigErrors::default();
        let settings = SourceSettings::read(&mut ConfigReader::new(&node, "inputs[0]", &errors));
        let settings = settings.unwrap_or_else(|| panic!("{:?}", errors.into_inner()));
        settings.consumer_config().get(key).map(str::to_owned)
    }

    #[test]
    fn a_short_session_timeout_brings_the_heartbeat_down_to_a_third_of_it() {
        let base = [("topics", "orders"), ("group_id", "fn")];
        assert_eq!(consumer_setting(&base, "heartbeat.interval.ms"), None);
        let short = [base[0], base[1], ("session_timeout", "2s")];
        assert_eq!(
            consumer_setting(&short, "heartbeat.interval.ms").as_deref(),
            Some("666")
        );
        let long = [base[0], base[1], ("session_timeout", "45s")];
        assert_eq!(
            consumer_setting(&long, "heartbeat.interval.ms").as_deref(),
            Some("3000"),
            "a long session keeps librdkafka's default"
        );
    }
}
