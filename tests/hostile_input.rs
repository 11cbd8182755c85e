//! Anything a producer or an attacker can put on the input topic: arbitrary
//! bytes and mutations of valid records through envelope opening, Avro and
//! JSON decoding and feature building. Nothing may panic; every record gets a
//! row or a rejection with a reason. (proptest, bounded, runs in `make test`.)

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use streamscore::codec::InputDecoder;
use streamscore::codec::schemas::load_schema;
use streamscore::config::Format;
use streamscore::demo::events::EventFactory;
use streamscore::envelope::Keyring;
use streamscore::features::FeaturePlan;
use streamscore::inference::VerifiedModel;
use streamscore::transform::Transform;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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
        streamscore::envelope::share(keyring.clone()),
        InputDecoder::avro(HashMap::from([(1, schema.clone())]), schema),
        avro_plan,
        64 * 1024,
    );
    let json = Transform::new(
        streamscore::envelope::share(keyring.clone()),
        InputDecoder::json(),
        plan,
        64 * 1024,
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
    let mut row = Vec::new();
    match t.apply(Some(value), Some(key), &mut row) {
        Ok(_) => assert_eq!(row.len(), t.width()),
        Err(rejection) => {
            assert!(row.is_empty(), "a rejected record left a partial row");
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
        let mut row = Vec::new();
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
        let mut row = Vec::new();
        t.apply(
            Some(&w.keyring.seal(event, Some(b"k"))),
            Some(b"k"),
            &mut row,
        )
        .unwrap();
        assert_eq!(row.len(), 24);
    }
}
