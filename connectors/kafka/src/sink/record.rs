//! A record as the producer writes it: its destination topic (the
//! `spate-kafka-topic` header, checked against Kafka's rules, or the sink's
//! `topic`) and its other headers, in order, repeated names kept. Used by
//! the sink and by the transaction session alike.

use rdkafka::message::{Header, OwnedHeaders};
use spate_connector::Record;

use super::check_topic_name;
use crate::error::Failure;

/// Header that sends one record to another topic than the sink's `topic`.
pub const TOPIC_HEADER: &str = "spate-kafka-topic";
/// A record's destination topic (borrowed from the record's override
/// header or the default: no copy per record) and Kafka headers (`None`
/// when there is none to write: librdkafka then builds no header list).
pub(crate) struct Prepared<'a> {
    pub topic: &'a str,
    pub headers: Option<OwnedHeaders>,
}

/// Picks the topic (the override header or `default_topic`) and converts
/// the other headers.
pub(crate) fn prepare<'a>(
    record: &'a Record,
    default_topic: &'a str,
) -> Result<Prepared<'a>, Failure> {
    let topic = match record.headers.get(TOPIC_HEADER) {
        None => default_topic,
        Some(value) => {
            let topic = std::str::from_utf8(value).map_err(|_| {
                Failure::rejected(format!("header `{TOPIC_HEADER}` is not UTF-8 text"))
            })?;
            check_topic_name(topic)
                .map_err(|why| Failure::rejected(format!("header `{TOPIC_HEADER}`: {why}")))?;
            topic
        }
    };
    let written = record
        .headers
        .iter()
        .filter(|(name, _)| *name != TOPIC_HEADER)
        .count();
    if written == 0 {
        return Ok(Prepared {
            topic,
            headers: None,
        });
    }
    let mut headers = OwnedHeaders::new_with_capacity(written);
    for (name, value) in record.headers.iter() {
        if name == TOPIC_HEADER {
            continue;
        }
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_ref()),
        });
    }
    Ok(Prepared {
        topic,
        headers: Some(headers),
    })
}
