#!/usr/bin/env python3
"""A complete streamscore producer in Python, written from docs/wire-format.md
alone: it encodes card transactions as Confluent-framed Avro, seals each one
in the version-1 envelope with AES-256-GCM, and publishes them to Kafka.

    pip install confluent-kafka fastavro cryptography
    python3 producer.py --bootstrap 127.0.0.1:9092 --topic transactions \
        --keyring keyring.json --count 100
    python3 producer.py --check-vector     # reproduce the spec's test vector

With a schema registry (the processor's input.schema_registry), the schema
id comes from the registry instead of --schema-id: --register registers
--schema under the topic's subject (<topic>-value) and uses the id it gives;
without --register it must be registered there already.

    pip install "confluent-kafka[schemaregistry]" fastavro cryptography
    python3 producer.py ... --schema-registry http://registry:8081 --register
"""
import argparse
import base64
import io
import json
import os
import random
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 0x01


def seal(key_id: str, key: bytes, plaintext: bytes, record_key: bytes, nonce: bytes | None = None) -> bytes:
    """Envelope v1: 0x01 | len(key id) | key id | nonce | ciphertext+tag.
    Associated data: the header (first 2+n bytes) followed by the record key."""
    kid = key_id.encode("utf-8")
    assert 1 <= len(kid) <= 64, "key ids are 1..64 bytes"
    header = bytes([VERSION, len(kid)]) + kid
    nonce = nonce if nonce is not None else os.urandom(12)  # fresh random nonce per record
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + record_key)


def confluent_avro(parsed_schema, schema_id: int, record: dict) -> bytes:
    """Magic byte 0, 4-byte big-endian schema id, Avro binary."""
    from fastavro import schemaless_writer

    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def transaction(i: int, rng: random.Random) -> dict:
    avg = rng.lognormvariate(3.5, 0.8)
    amount = avg * rng.lognormvariate(0.0, 0.6)
    return {
        "event_id": f"py-{i:06d}",
        "card_id": f"card-{rng.randrange(5000):05d}",
        "event_time": int(time.time() * 1000),
        "amount": amount,
        "amount_avg_30d": avg,
        "amount_to_avg_ratio": amount / avg,
        "merchant_category": rng.randrange(20),
        "merchant_risk": rng.betavariate(2, 8),
        "hour_of_day": rng.randrange(24),
        "day_of_week": rng.randrange(7),
        "is_online": rng.random() < 0.45,
        "card_present": rng.random() < 0.5,
        "distance_from_home_km": rng.expovariate(1 / 15),
        "distance_from_last_txn_km": rng.expovariate(1 / 10),
        "seconds_since_last_txn": int(rng.expovariate(1 / 20000)),
        "txn_count_1h": rng.randrange(3),
        "txn_count_24h": rng.randrange(9),
        "amount_sum_24h": avg * rng.gammavariate(2, 1.5),
        "distinct_merchants_24h": rng.randrange(6),
        "failed_attempts_24h": rng.randrange(2),
        "account_age_days": rng.randrange(1, 5000),
        "card_age_days": rng.randrange(1, 2000),
        "is_foreign": rng.random() < 0.08,
        "currency_mismatch": rng.random() < 0.06,
        "device_risk": rng.betavariate(1.5, 10),
        "ip_risk": rng.betavariate(1.5, 10),
        "chargebacks_1y": 0,
    }


def check_vector() -> None:
    """The test vector of docs/wire-format.md, section 1.3."""
    got = seal("2026-11", bytes(range(32)), b'{"event_id":"vector-1","amount":12.5}', b"card-00042",
               nonce=bytes(range(0xA0, 0xAC)))
    want = ("0107323032362d3131a0a1a2a3a4a5a6a7a8a9aaab9d3a195b20a576e00b01a5e9250ca5bd04c32b3da3956e4efd6349"
            "f311df573be34469cad2b5766862e8d1f3395b862e98bca16534")
    assert got.hex() == want, f"test vector mismatch: {got.hex()}"
    print("test vector: ok")


def registry_id(url: str, subject: str, schema_text: str, register: bool) -> int:
    """The id of the schema under the subject, registering it first if asked."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

    client = SchemaRegistryClient({"url": url})
    schema = Schema(schema_text, "AVRO")
    try:
        if register:
            return client.register_schema(subject, schema)
        return client.lookup_schema(subject, schema).schema_id
    except SchemaRegistryError as e:
        raise SystemExit(f"schema registry {url}, subject {subject}: {e}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--topic")
    ap.add_argument("--keyring", help='JSON file {"active": ID, "keys": {ID: BASE64}}')
    ap.add_argument("--schema", default=os.path.join(os.path.dirname(__file__), "../../schemas/card_transaction.v1.avsc"))
    ap.add_argument("--schema-id", type=int, default=1)
    ap.add_argument("--schema-registry", metavar="URL", default=None,
                    help="take the schema id from this Confluent-API registry (subject <topic>-value)")
    ap.add_argument("--register", action="store_true",
                    help="with --schema-registry: register --schema first (an identical one gives its id)")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds a record may wait for the broker's acknowledgement (message.timeout.ms)")
    ap.add_argument("--check-vector", action="store_true")
    args = ap.parse_args()
    if args.check_vector:
        check_vector()
        return
    from confluent_kafka import Producer
    from fastavro import parse_schema

    with open(args.keyring) as f:
        keyring = json.load(f)
    key_id = keyring["active"]
    key = base64.b64decode(keyring["keys"][key_id])
    with open(args.schema) as f:
        schema_text = f.read()
    schema = parse_schema(json.loads(schema_text))
    if args.schema_registry:
        args.schema_id = registry_id(args.schema_registry, f"{args.topic}-value", schema_text, args.register)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        # librdkafka's default is 5 minutes; every record gets its delivery
        # report, success or failure, within this bound.
        "message.timeout.ms": int(args.timeout * 1000),
    })
    # Only a delivery report says a record arrived: count the failures by error.
    failures = {}

    def on_delivery(err, _msg):
        if err is not None:
            failures[str(err)] = failures.get(str(err), 0) + 1

    rng = random.Random(7)
    for i in range(args.count):
        event = transaction(i, rng)
        record_key = event["card_id"].encode()
        value = seal(key_id, key, confluent_avro(schema, args.schema_id, event), record_key)
        producer.produce(args.topic, key=record_key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    # flush() returns how many records are still waiting for their report.
    pending = producer.flush(args.timeout + 30)
    failed = sum(failures.values())
    if failed or pending:
        reasons = "; ".join(f"{err} ({n})" for err, n in sorted(failures.items()))
        if pending:
            reasons = "; ".join(filter(None, [reasons, f"{pending} still unacknowledged"]))
        raise SystemExit(f"{failed + pending} of {args.count} records were not delivered to {args.topic}: {reasons}")
    print(f"produced {args.count} records to {args.topic} with key {key_id}")

if __name__ == "__main__":
    main()
