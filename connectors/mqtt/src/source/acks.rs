//! Acknowledging: a commit queues the PUBACKs of the messages it covers
//! (those of the current session), and the queue is handed to the client
//! as far as its request channel takes them.

use std::sync::atomic::Ordering;

use rumqttc::{Publish, QoS};
use spate_connector::internal_events::AckFailed;
use spate_connector::{CommitPosition, SourceError};

use super::MqttSource;

impl MqttSource {
    /// Queues the acks of the messages `positions` cover and sends what
    /// the client takes now.
    pub(super) fn queue_acks(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let current = self.session.load(Ordering::Acquire);
        for position in positions {
            self.check_partition(position.partition)?;
            let state = &mut self.partitions[position.partition as usize];
            while state
                .held
                .front()
                .is_some_and(|h| h.offset < position.next_offset)
            {
                let held = state.held.pop_front().expect("front exists");
                if held.session != current {
                    continue;
                }
                if !held.ack {
                    continue;
                }
                let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
                publish.pkid = held.packet_id;
                self.pending_acks
                    .push_back((publish, Some((position.partition, held.offset))));
            }
        }
        self.flush_acks();
        Ok(())
    }

    /// Hands queued acks to the client; false if some still wait.
    pub(super) fn flush_acks(&mut self) -> bool {
        while let Some((publish, _)) = self.pending_acks.front() {
            match self.client.try_ack(publish) {
                Ok(()) => {
                    let Some((publish, held)) = self.pending_acks.pop_front() else {
                        break;
                    };
                    // Forget the id only once the ack is on its way, so a
                    // redelivery before it is still recognised.
                    if held.is_some() && self.held_ids.get(&publish.pkid) == held.as_ref() {
                        self.held_ids.remove(&publish.pkid);
                    }
                }
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::PubAck(_))) => return false,
                Err(error) => {
                    // The event loop is gone; the broker redelivers.
                    AckFailed {
                        connector: "mqtt",
                        name: &self.name,
                        error: &error,
                        context: "acks not sent: the MQTT client is gone; the broker redelivers",
                    }
                    .emit();
                    self.pending_acks.clear();
                    return true;
                }
            }
        }
        true
    }
}
