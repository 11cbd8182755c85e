#!/usr/bin/env python3
"""A complete consumer of streamscore's score topic in Python, written from
docs/wire-format.md alone: it reads only committed results
(isolation.level=read_committed: scores of aborted transactions stay
invisible), decodes each value as Confluent-framed Avro (schema id 101,
schemas/score_result.v1.avsc) or as JSON, as the processor's
`output.format` says, and prints one JSON object per score.

    pip install confluent-kafka fastavro
    python3 consumer.py --bootstrap 127.0.0.1:9092 --topic scores --format avro
    python3 consumer.py ... -X security.protocol=SSL -X ssl.ca.location=ca.pem

With a schema registry (the processor's output.schema_registry registers
the score schema there, and frames the id it gives), the stock Confluent
deserializer decodes each score by the id in its framing instead:

    pip install "confluent-kafka[avro,schemaregistry]"
    python3 consumer.py ... --schema-registry http://registry:8081

It stores a record's offset only after printing it, so a restart resumes
after the last score printed (at least once; the output's source_topic,
source_partition and source_offset identify a score if you must deduplicate).
"""
import argparse
import datetime
import io
import json
import os
import struct
import sys
import time

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class NotAScore(Exception):
    """A value that is not a score in the expected format."""


def millis(value):
    """fastavro returns timestamp-millis fields as datetimes; print them as
    the milliseconds since the epoch that the wire carries."""
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    return value


def decode_avro(value, schema, schema_id):
    from fastavro import schemaless_reader

    # Confluent framing: magic byte 0, then the schema id, 4 bytes big-endian.
    if len(value) < 5 or value[0] != 0:
        raise NotAScore("not Confluent-framed Avro (magic byte 0)")
    (got,) = struct.unpack(">I", value[1:5])
    if got != schema_id:
        raise NotAScore(f"schema id {got}, expected {schema_id}")
    body = io.BytesIO(value[5:])
    record = schemaless_reader(body, schema)
    if body.read(1):
        raise NotAScore("bytes after the Avro record")
    return {k: millis(v) for k, v in record.items()}


def decode_json(value):
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotAScore(f"not JSON: {e}") from None
    if not isinstance(record, dict):
        raise NotAScore("JSON that is not an object")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True, help="the processor's output.topic")
    ap.add_argument("--group", default="score-reader", help="consumer group id")
    ap.add_argument("--format", choices=["avro", "json"], default="avro", help="the processor's output.format")
    ap.add_argument("--schema", default=os.path.join(os.path.dirname(__file__), "../../schemas/score_result.v1.avsc"))
    ap.add_argument("--schema-id", type=int, default=101, help="the processor's output.avro_schema_id")
    ap.add_argument("--schema-registry", metavar="URL", default=None,
                    help="decode with confluent_kafka's AvroDeserializer, fetching each schema by the "
                         "id in the framing from this Confluent-API registry (ignores --schema and --schema-id)")
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="exit after this many seconds without a record (default: run until Ctrl-C)")
    ap.add_argument("-X", dest="properties", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka property, e.g. security.protocol=SSL (repeatable)")
    args = ap.parse_args()

    from confluent_kafka import Consumer, KafkaError
    from fastavro import parse_schema

    with open(args.schema) as f:
        schema = parse_schema(json.load(f))
    deserialize = None
    if args.schema_registry:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        stock = AvroDeserializer(SchemaRegistryClient({"url": args.schema_registry}))

        def deserialize(msg):
            try:
                record = stock(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            except Exception as e:  # the deserializer's errors: framing, unknown id, Avro
                raise NotAScore(f"the Confluent deserializer refused it: {e}") from None
            if not isinstance(record, dict):
                raise NotAScore("not a record")
            return {k: millis(v) for k, v in record.items()}
    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        # Scores are written in Kafka transactions: never show aborted ones.
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        # Offsets are stored by hand below, after a score is printed.
        "enable.auto.offset.store": False,
    }
    for prop in args.properties:
        key, sep, value = prop.partition("=")
        if not sep:
            raise SystemExit(f"-X {prop}: expected KEY=VALUE")
        config[key] = value
    consumer = Consumer(config)
    consumer.subscribe([args.topic])
    last = time.monotonic()
    undecodable = 0
    try:
        while args.idle_timeout is None or time.monotonic() - last < args.idle_timeout:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                # Transport errors and brokers going away are retried by the
                # client itself; only a fatal error ends the consumer.
                if msg.error().fatal():
                    raise SystemExit(f"fatal consumer error: {msg.error()}")
                print(f"consumer error (retried): {msg.error()}", file=sys.stderr)
                continue
            last = time.monotonic()
            try:
                if deserialize is not None:
                    score = deserialize(msg)
                elif args.format == "avro":
                    score = decode_avro(msg.value() or b"", schema, args.schema_id)
                else:
                    score = decode_json(msg.value() or b"")
            except NotAScore as e:
                undecodable += 1
                print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {e}", file=sys.stderr)
            else:
                _, timestamp = msg.timestamp()
                print(json.dumps({
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp_ms": timestamp,
                    "key": (msg.key() or b"").decode("utf-8", "replace"),
                    **score,
                }), flush=True)
            consumer.store_offsets(message=msg)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    if undecodable:
        raise SystemExit(f"{undecodable} records were not {args.format} scores")


if __name__ == "__main__":
    main()
