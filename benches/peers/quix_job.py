# Quix Streams peer of the comparison (benches/compare.rs, scenario 1):
# Kafka -> map (identity on the raw bytes) -> Kafka, as a Quix Streams user
# would write it. Configured only through BENCH_* environment variables set
# by the harness; runs until SIGTERM, then stops gracefully (Quix commits
# what it processed).
#
# Guarantees it is asked for: processing_guarantee at-least-once or
# exactly-once (Kafka transactions), commit_interval 100 ms like spate and
# the raw loop; payload and key forwarded unchanged (the harness verifies
# record ids and latency stamps carried in the payload).
import os

from quixstreams import Application

env = os.environ
app = Application(
    broker_address=env["BENCH_BOOTSTRAP"],
    consumer_group=env["BENCH_GROUP"],
    auto_offset_reset="earliest",
    processing_guarantee=env["BENCH_GUARANTEE"],
    commit_interval=0.1,
    auto_create_topics=False,
    state_dir=env["BENCH_STATE_DIR"],
    consumer_extra_config={
        "session.timeout.ms": int(env["BENCH_SESSION_MS"]),
        # A third of the session, as spate's source and the raw loop set it.
        "heartbeat.interval.ms": min(3000, int(env["BENCH_SESSION_MS"]) // 3),
        "fetch.wait.max.ms": int(env["BENCH_FETCH_WAIT_MS"]),
    },
    producer_extra_config={"linger.ms": 5},
)
source = app.topic(env["BENCH_INPUT"], key_deserializer="bytes", value_deserializer="bytes")
sink = app.topic(env["BENCH_OUTPUT"], key_serializer="bytes", value_serializer="bytes")
sdf = app.dataframe(source)
sdf = sdf.apply(lambda value: value)
sdf.to_topic(sink)

if __name__ == "__main__":
    app.run()
