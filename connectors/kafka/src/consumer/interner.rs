//! Partition ids: maps (topic, partition) to the source's partition ids and
//! back. With one topic an id is the Kafka partition number; otherwise ids
//! are handed out densely from 0 in order of first sight and never change
//! for the life of the source.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::{Offset, TopicPartitionList};
use spate_connector::PartitionId;

/// Maps (topic, partition) to the source's partition ids and back.
#[derive(Debug)]
pub struct Interner {
    /// `Some(topic)`: ids are the partition numbers of this one topic.
    direct: Option<Arc<str>>,
    ids: HashMap<(Arc<str>, i32), PartitionId>,
    by_id: Vec<(Arc<str>, i32)>,
    topics: HashMap<String, Arc<str>>,
}

impl Interner {
    /// An interner; `single_topic` makes ids equal partition numbers.
    pub fn new(single_topic: Option<&str>) -> Self {
        Self {
            direct: single_topic.map(Arc::from),
            ids: HashMap::new(),
            by_id: Vec::new(),
            topics: HashMap::new(),
        }
    }

    fn topic(&mut self, topic: &str) -> Arc<str> {
        if let Some(direct) = self.direct.as_ref().filter(|d| &***d == topic) {
            return direct.clone();
        }
        if let Some(t) = self.topics.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.topics.insert(topic.to_owned(), t.clone());
        t
    }

    /// The id of a partition, handing out a new one if needed, and the
    /// shared topic name.
    pub fn id(&mut self, topic: &str, partition: i32) -> (PartitionId, Arc<str>) {
        let topic = self.topic(topic);
        if self.direct.as_ref() == Some(&topic) {
            if let Ok(id) = PartitionId::try_from(partition) {
                return (id, topic);
            }
        }
        let key = (topic.clone(), partition);
        if let Some(id) = self.ids.get(&key) {
            return (*id, topic);
        }
        let id = self.by_id.len() as PartitionId;
        self.by_id.push(key.clone());
        self.ids.insert(key, id);
        (id, topic)
    }

    /// The id of a partition if it has one already.
    pub fn existing(&self, topic: &str, partition: i32) -> Option<PartitionId> {
        if let Some(direct) = &self.direct {
            return (&**direct == topic)
                .then(|| PartitionId::try_from(partition).ok())
                .flatten();
        }
        self.ids.get(&(Arc::from(topic), partition)).copied()
    }

    /// The topic and partition of an id.
    pub fn lookup(&self, id: PartitionId) -> Option<(Arc<str>, i32)> {
        match &self.direct {
            Some(topic) => i32::try_from(id).ok().map(|p| (topic.clone(), p)),
            None => self.by_id.get(id as usize).cloned(),
        }
    }

    /// The ids of every partition in a list (handing out new ones).
    pub fn ids_of(&mut self, tpl: &TopicPartitionList) -> Vec<PartitionId> {
        let mut ids: Vec<PartitionId> = tpl
            .elements()
            .iter()
            .map(|e| self.id(e.topic(), e.partition()).0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A partition list for these ids, each with `offset` (unknown ids are
    /// left out and returned separately).
    pub fn list(
        &self,
        ids: impl IntoIterator<Item = (PartitionId, Offset)>,
    ) -> (TopicPartitionList, Vec<PartitionId>) {
        let mut tpl = TopicPartitionList::new();
        let mut unknown = Vec::new();
        for (id, offset) in ids {
            match self.lookup(id) {
                Some((topic, partition)) => {
                    // Only fails for an offset librdkafka cannot represent.
                    if tpl.add_partition_offset(&topic, partition, offset).is_err() {
                        unknown.push(id);
                    }
                }
                None => unknown.push(id),
            }
        }
        (tpl, unknown)
    }
}
