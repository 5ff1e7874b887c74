# Bytewax peer of the comparison (benches/compare.rs, scenario 1):
# Kafka -> map (identity) -> Kafka with Bytewax's own Kafka connectors, as a
# Bytewax user would write it. Configured only through BENCH_* environment
# variables set by the harness; runs (tailing the input) until stopped.
#
# Guarantees it is asked for: none beyond Bytewax's defaults: no recovery
# store is configured, so Bytewax keeps no durable position (it commits no
# consumer-group offsets; a restart reads from the beginning again): at
# least once, with unbounded duplicates after a crash. Key and payload are
# forwarded unchanged (the harness verifies ids and latency stamps carried
# in the payload).
import os

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow

env = os.environ
brokers = [env["BENCH_BOOTSTRAP"]]
flow = Dataflow("spate-bench")
messages = op.input(
    "in",
    flow,
    KafkaSource(brokers, [env["BENCH_INPUT"]], tail=True, add_config={"group.id": env["BENCH_GROUP"], "fetch.wait.max.ms": env["BENCH_FETCH_WAIT_MS"]}),
)
forwarded = op.map("forward", messages, lambda m: KafkaSinkMessage(m.key, m.value))
op.output("out", forwarded, KafkaSink(brokers, env["BENCH_OUTPUT"], add_config={"linger.ms": "5"}))
