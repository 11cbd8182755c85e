//! Anything a producer or an attacker can put on the input topic: arbitrary
//! bytes and mutations of valid records through envelope opening, Avro and
//! JSON decoding and feature building. Nothing may panic; every record gets a
//! row or a rejection with a reason. (proptest, bounded, runs in `make test`.)

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use streamscore::FeaturePlan;
use streamscore::Format;
use streamscore::InputDecoder;
use streamscore::Keyring;
use streamscore::Transform;
use streamscore::VerifiedModel;
use streamscore::load_schema;
use streamscore_tools::events::EventFactory;

/// The repository root: the owning crate is crates/<name>.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

struct World {
    keyring: Arc<Keyring>,
    avro: Transform,
    json: Transform,
    avro_event: Vec<u8>,
    json_event: Vec<u8>,
}

fn world() -> World {
    // As the pipeline does: a hostile length prefix cannot allocate more than a record holds.
    apache_avro::util::max_allocation_bytes(64 * 1024);
    let model = VerifiedModel::load(&std::path::Path::new(ROOT).join("models/fraud_mlp.card.json"))
        .unwrap();
    let schema =
        load_schema(&std::path::Path::new(ROOT).join("schemas/card_transaction.v1.avsc")).unwrap();
    let keyring = Arc::new(Keyring::generate("fuzz").unwrap().0);
    let plan = FeaturePlan::new(&model.card);
    let avro_plan = plan.clone().for_avro_reader(&model.card, &schema).unwrap();
    let avro = Transform::new(
        streamscore::share(keyring.clone()),
        InputDecoder::avro(HashMap::from([(1, schema.clone())]), schema),
        avro_plan,
        64 * 1024,
        Arc::default(),
    );
    let json = Transform::new(
        streamscore::share(keyring.clone()),
        InputDecoder::json(),
        plan,
        64 * 1024,
        Arc::default(),
    );
    let mut avro_factory = EventFactory::new(keyring.clone(), Format::Avro, "fuzz", 1);
    let json_factory = EventFactory::new(keyring.clone(), Format::Json, "fuzz", 1);
    let fields = avro_factory.fields("e-1", "card-1");
    let avro_event = avro_factory.encode(fields.clone(), 1);
    let json_event = json_factory.encode(fields, 1);
    World {
        keyring,
        avro,
        json,
        avro_event,
        json_event,
    }
}

fn check(t: &Transform, value: &[u8], key: &[u8]) {
    let mut row = streamscore::FeatureRows::default();
    match t.apply(Some(value), Some(key), &mut row) {
        Ok(_) => assert_eq!(row.numbers.len(), t.width()),
        Err(rejection) => {
            assert!(row.is_empty(), "a rejected record left a partial row");
            let rejection = rejection
                .rejection()
                .expect("no registry here: every failure is a rejection");
            assert!(!rejection.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(value in proptest::collection::vec(any::<u8>(), 0..512), key in proptest::collection::vec(any::<u8>(), 0..16)) {
        let w = world_once();
        check(&w.avro, &value, &key);
        check(&w.json, &value, &key);
    }

    #[test]
    fn arbitrary_plaintext_in_a_valid_envelope_never_panics(plain in proptest::collection::vec(any::<u8>(), 0..512)) {
        let w = world_once();
        let sealed = w.keyring.seal(&plain, Some(b"k"));
        check(&w.avro, &sealed, b"k");
        check(&w.json, &sealed, b"k");
        // Framed as schema 1, so the Avro decoder really parses the junk.
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend_from_slice(&plain);
        check(&w.avro, &w.keyring.seal(&framed, Some(b"k")), b"k");
    }

    #[test]
    fn mutated_valid_events_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let w = world_once();
        for (t, event) in [(&w.avro, &w.avro_event), (&w.json, &w.json_event)] {
            let mut plain = event.clone();
            for (at, byte) in &flips {
                let i = at % plain.len();
                plain[i] ^= byte | 1;
            }
            check(t, &w.keyring.seal(&plain, Some(b"k")), b"k");
            let truncated = &event[..cut % event.len()];
            check(t, &w.keyring.seal(truncated, Some(b"k")), b"k");
        }
    }

    #[test]
    fn mutated_envelopes_are_rejected(at in any::<usize>(), byte in 1u8..) {
        let w = world_once();
        let mut sealed = w.keyring.seal(&w.avro_event, Some(b"k"));
        let i = at % sealed.len();
        sealed[i] ^= byte;
        let mut row = streamscore::FeatureRows::default();
        prop_assert!(w.avro.apply(Some(&sealed), Some(b"k"), &mut row).is_err());
    }
}

fn world_once() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(world)
}

#[test]
fn the_unmutated_events_are_accepted() {
    // Guards the properties above against testing only rejections.
    let w = world_once();
    for (t, event) in [(&w.avro, &w.avro_event), (&w.json, &w.json_event)] {
        let mut row = streamscore::FeatureRows::default();
        t.apply(
            Some(&w.keyring.seal(event, Some(b"k"))),
            Some(b"k"),
            &mut row,
        )
        .unwrap();
        assert_eq!(row.numbers.len(), 24);
    }
}

/// The dead-letter reason each edge case gets, as docs/wire-format.md lists
/// them; some are not what a user might guess (a short ciphertext is a
/// malformed envelope, not a failed decryption; a wrong Confluent magic byte
/// is decode_failed, not unknown_schema), so each is pinned here.
#[test]
fn each_edge_case_gets_its_documented_reason() {
    use apache_avro::types::Value as AvroValue;
    let w = world_once();
    let reason = |t: &Transform, value: &[u8]| {
        let mut row = streamscore::FeatureRows::default();
        match t.apply(Some(value), Some(b"k"), &mut row) {
            Ok(_) => "accepted".to_owned(),
            Err(r) => r
                .rejection()
                .map_or("unscored", |r| r.reason.as_str())
                .to_owned(),
        }
    };
    let sealed = w.keyring.seal(&w.avro_event, Some(b"k"));
    let n = usize::from(sealed[1]);

    // Envelope: a key id that is not UTF-8 (same length, so only that differs).
    let mut bad_id = sealed.clone();
    bad_id[2] = 0xff;
    assert_eq!(reason(&w.avro, &bad_id), "malformed_envelope");
    // A ciphertext shorter than its 16-byte tag.
    let short = &sealed[..2 + n + 12 + 15];
    assert_eq!(reason(&w.avro, short), "malformed_envelope");
    // An envelope version (its first byte) other than 0x01.
    let mut version = sealed.clone();
    version[0] = 0x02;
    assert_eq!(reason(&w.avro, &version), "malformed_envelope");

    // Plaintext: a Confluent magic byte other than 0.
    let mut magic = w.avro_event.clone();
    magic[0] = 1;
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&magic, Some(b"k"))),
        "decode_failed"
    );
    // Bytes after the Avro record.
    let mut trailing = w.avro_event.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&trailing, Some(b"k"))),
        "decode_failed"
    );

    // A boolean byte other than 0 or 1: found by encoding the event with
    // is_online false and true, and setting the one byte that differs to 2.
    let schema =
        load_schema(&std::path::Path::new(ROOT).join("schemas/card_transaction.v1.avsc")).unwrap();
    let mut factory = EventFactory::new(w.keyring.clone(), Format::Avro, "edge", 3);
    let fields = factory.fields("e-2", "card-2");
    let with = |b: bool| {
        let f: Vec<_> = fields
            .iter()
            .map(|(k, v)| match k.as_str() {
                "is_online" => (k.clone(), AvroValue::Boolean(b)),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        streamscore_tools::events::encode_avro(&schema, f, 1).unwrap()
    };
    let (off, on) = (with(false), with(true));
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&on, Some(b"k"))),
        "accepted"
    );
    let at: Vec<usize> = (0..off.len()).filter(|&i| off[i] != on[i]).collect();
    assert_eq!(at.len(), 1, "one byte holds is_online");
    let mut two = on.clone();
    two[at[0]] = 2;
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&two, Some(b"k"))),
        "decode_failed"
    );

    // A feature finite as a double but not as the float32 the model takes.
    let huge: Vec<_> = fields
        .iter()
        .map(|(k, v)| match k.as_str() {
            "amount" => (k.clone(), AvroValue::Double(1e39)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let huge = streamscore_tools::events::encode_avro(&schema, huge, 1).unwrap();
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&huge, Some(b"k"))),
        "invalid_features"
    );
    let json = String::from_utf8(w.json_event.clone()).unwrap();
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    map.insert("amount".into(), serde_json::json!(1e39));
    let json = serde_json::to_vec(&map).unwrap();
    assert_eq!(
        reason(&w.json, &w.keyring.seal(&json, Some(b"k"))),
        "invalid_features"
    );
}

/// The rest of docs/wire-format.md's "Which reason" table.
#[test]
fn the_other_listed_edge_cases_get_their_documented_reasons() {
    let w = world_once();
    let reason = |t: &Transform, value: &[u8], key: &[u8]| {
        let mut row = streamscore::FeatureRows::default();
        match t.apply(Some(value), Some(key), &mut row) {
            Ok(_) => "accepted".to_owned(),
            Err(r) => r
                .rejection()
                .map_or("unscored", |r| r.reason.as_str())
                .to_owned(),
        }
    };
    let sealed = w.keyring.seal(&w.avro_event, Some(b"k"));
    let mut no_id = sealed.clone();
    no_id[1] = 0;
    assert_eq!(reason(&w.avro, &no_id, b"k"), "malformed_envelope");
    let mut long_id = sealed.clone();
    long_id[1] = 65;
    assert_eq!(reason(&w.avro, &long_id, b"k"), "malformed_envelope");

    let other = Keyring::generate("other").unwrap().0;
    let foreign = other.seal(&w.avro_event, Some(b"k"));
    assert_eq!(reason(&w.avro, &foreign, b"k"), "unknown_key");
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(reason(&w.avro, &tampered, b"k"), "decrypt_failed");
    assert_eq!(reason(&w.avro, &sealed, b"another key"), "decrypt_failed");

    let mut unknown_schema = w.avro_event.clone();
    unknown_schema[4] = 7;
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&unknown_schema, Some(b"k")), b"k"),
        "unknown_schema"
    );
    assert_eq!(
        reason(&w.avro, &w.keyring.seal(&[0, 0, 0], Some(b"k")), b"k"),
        "decode_failed"
    );

    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&w.json_event).unwrap();
    map.remove("amount");
    let json = serde_json::to_vec(&map).unwrap();
    assert_eq!(
        reason(&w.json, &w.keyring.seal(&json, Some(b"k")), b"k"),
        "invalid_features"
    );
}
