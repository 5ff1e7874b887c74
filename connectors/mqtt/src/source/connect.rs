//! Building an MQTT source: connecting with the session settings,
//! subscribing, and the task that polls rumqttc's event loop (keep-alive,
//! reconnects) and hands messages over through a bounded channel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Packet, Publish, SubscribeFilter};
use spate_connector::{ConfiguredCapabilities, Source, SourceBuilder, SourceError};
use tokio::sync::mpsc;

use super::sequence::Sequences;
use super::settings::SourceSettings;
use super::{MqttSource, PartitionState, SOURCE_CAPABILITIES};

/// Builds MQTT sources.
pub struct MqttSourceBuilder {
    settings: SourceSettings,
}

impl MqttSourceBuilder {
    /// A builder for validated settings.
    pub fn new(settings: SourceSettings) -> Self {
        Self { settings }
    }
}

fn random_client_id() -> String {
    crate::connection::generated_client_id("spate")
}

/// What the event-loop task hands the source.
pub(super) enum Delivery {
    /// A message and the broker session it belongs to.
    Message(Publish, u64),
    /// The subscription failed for good.
    Failed(String),
}

#[async_trait]
impl SourceBuilder for MqttSourceBuilder {
    /// An `mqtt` source resumes from positions a database stored only when
    /// it knows each topic's sequence (see [`super::sequence`]).
    fn capabilities(&self) -> Option<ConfiguredCapabilities> {
        let s = &self.settings;
        if !s.manual_acks || s.sequence.is_some() {
            return None;
        }
        Some(ConfiguredCapabilities {
            capabilities: spate_connector::Capabilities {
                resumable: false,
                ..SOURCE_CAPABILITIES
            },
            hint: "an `mqtt` input resumes from the positions a database stored when each message carries a number that grows per topic: set `sequence:` to its JSON pointer (e.g. `sequence: /seq`; an epoch-milliseconds timestamp works), or use `delivery: at_least_once` with an upsert `key`".to_owned(),
        })
    }

    /// Connects and subscribes as `build` does, but as a throwaway client
    /// with a clean session (so a running spate with the same `client_id`
    /// is not pushed off, and its session is left alone); then lets go.
    async fn check(&self) -> Result<(), SourceError> {
        let s = &self.settings;
        let name = format!("{}:{}", s.kind, s.filters.join(","));
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let (client, mut event_loop) = s
            .connect
            .connect_throwaway(&random_client_id())
            .await
            .map_err(unavailable)?;
        client
            .subscribe_many(s.subscribe_filters())
            .await
            .map_err(|e| unavailable(format!("cannot subscribe: {e}")))?;
        await_suback(s, &mut event_loop, &name).await?;
        let _ = client.try_disconnect();
        Ok(())
    }

    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let s = &self.settings;
        let name = format!("{}:{}", s.kind, s.filters.join(","));
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let client_id = s.client_id.clone().unwrap_or_else(random_client_id);
        let mut options = s
            .connect
            .options(&client_id, s.clean_session)
            .await
            .map_err(unavailable)?;
        options.set_manual_acks(s.manual_acks);
        let (client, mut event_loop) = s.connect.client(options);
        let session_present = s
            .connect
            .first_connack(&mut event_loop)
            .await
            .map_err(unavailable)?;
        tracing::info!(source = %name, session_present, "MQTT connected");
        let filters = s.subscribe_filters();
        client
            .subscribe_many(filters.clone())
            .await
            .map_err(|e| unavailable(format!("cannot subscribe: {e}")))?;
        // Wait for the SUBACK; a persistent session may deliver queued
        // messages before it, which are kept.
        let early = await_suback(s, &mut event_loop, &name).await?;
        let (tx, rx) = mpsc::channel(s.max_buffered);
        let session = Arc::new(AtomicU64::new(0));
        let driver = tokio::spawn(drive(
            event_loop,
            client.clone(),
            filters,
            tx,
            session.clone(),
            name.clone(),
        ));
        let partitions = (0..s.router.partitions)
            .map(|_| PartitionState::default())
            .collect();
        let mut source = MqttSource {
            stream: Arc::from(s.filters.join(",").as_str()),
            name,
            client,
            rx,
            driver,
            session,
            session_seen: 0,
            manual_acks: s.manual_acks,
            router: s.router.clone(),
            partitions,
            assigned: false,
            unread_total: 0,
            max_buffered: s.max_buffered,
            held_ids: HashMap::new(),
            pending_acks: VecDeque::new(),
            failed: None,
            round_robin: 0,
            sequences: s.sequence.clone().map(Sequences::new),
        };
        for publish in early {
            source.ingest(publish, 0);
        }
        Ok(Box::new(source))
    }
}

/// Polls until the broker confirms the subscription; returns the messages
/// a persistent session delivered before it. A refusal is fatal, no answer
/// within the connect timeout (plus a second) retryable.
async fn await_suback(
    s: &SourceSettings,
    event_loop: &mut rumqttc::EventLoop,
    name: &str,
) -> Result<Vec<rumqttc::Publish>, SourceError> {
    let mut early = Vec::new();
    let wait = s.connect.connect_timeout + Duration::from_secs(1);
    let subscribed = tokio::time::timeout(wait, async {
        loop {
            match event_loop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => early.push(p),
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => return suback_problem(&ack),
                Ok(_) => {}
                Err(e) => return Some(s.connect.describe_error(&e)),
            }
        }
    })
    .await;
    match subscribed {
        Ok(None) => Ok(early),
        Ok(Some(problem)) => Err(SourceError::Fatal {
            source_name: name.to_owned(),
            message: problem,
        }),
        Err(_) => Err(SourceError::Unavailable {
            source_name: name.to_owned(),
            message: "the broker did not confirm the subscription in time".to_owned(),
        }),
    }
}

fn suback_problem(ack: &rumqttc::SubAck) -> Option<String> {
    ack.return_codes
        .iter()
        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        .then(|| {
            "the broker refused the subscription (check the topic filters and the broker's ACL for this user)"
                .to_owned()
        })
}

/// Polls the event loop forever (keep-alive, reconnects) and forwards
/// messages; stops when the source is dropped.
async fn drive(
    mut event_loop: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    tx: mpsc::Sender<Delivery>,
    session: Arc<AtomicU64>,
    name: String,
) {
    let mut failures = 0u32;
    loop {
        match event_loop.poll().await {
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                let current = session.load(Ordering::Acquire);
                // Waiting here stops reading the socket (backpressure).
                if tx.send(Delivery::Message(publish, current)).await.is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                let context = if ack.session_present {
                    "MQTT reconnected; session resumed"
                } else {
                    "MQTT reconnected but the broker lost the session; subscribing again (unacknowledged messages of the old session may be lost)"
                };
                spate_connector::internal_events::Reconnected {
                    connector: "mqtt",
                    target: &name,
                    context,
                }
                .emit();
                if !ack.session_present {
                    session.fetch_add(1, Ordering::AcqRel);
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        let _ = tx
                            .send(Delivery::Failed(format!("cannot subscribe again: {e}")))
                            .await;
                        return;
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                if let Some(problem) = suback_problem(&ack) {
                    let _ = tx.send(Delivery::Failed(problem)).await;
                    return;
                }
            }
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // The broker has read every ack sent before the DISCONNECT
                // once it closes the connection. Stopping sooner lets a
                // new session of the same client id connect first, and a
                // broker taking the session over drops the old
                // connection's unread acks (Mosquitto does): the messages
                // of the last commit would come again.
                let closed = async { while event_loop.poll().await.is_ok() {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                spate_connector::internal_events::ConnectionLost {
                    connector: "mqtt",
                    target: &name,
                    error: Some(&e),
                    context: "MQTT connection lost; reconnecting",
                }
                .emit();
                let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
