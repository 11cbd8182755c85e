//! The compiled plans against their oracle, apache-avro's `from_avro_datum`
//! into `Value`s and `FeaturePlan::extract`: on every record, for the v1 and
//! v2 writers and evolved ones (fields reordered, added, removed, promoted,
//! made unions, defaulted), read with the configured reader schema and with
//! others, the same row, identity and outcome class; and the same on
//! arbitrary and mutated bytes, where the plan must not panic either. Records
//! come from apache-avro's writer and from a hand writer for what it does not
//! write: arrays and maps in sized blocks (negative counts), and every length
//! and count of a record replaced in turn by a hostile one.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::schema::{Name, Namespace, ResolvedSchema};
use apache_avro::types::Value as AvroValue;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};

use super::rows::{self, RowDecoder, RowError};
use super::{DecodeError, InputDecoder, confluent_frame, test_allocation_limit};
use crate::features::FeaturePlan;
use crate::features::FeatureRows;
use crate::model::VerifiedModel;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn schema_file(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{ROOT}/schemas/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A schema from `base` with its fields edited.
fn edited(base: &str, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Schema {
    let mut json = schema_file(base);
    edit(json["fields"].as_array_mut().unwrap());
    Schema::parse(&json).unwrap()
}

fn set_type(fields: &mut [serde_json::Value], name: &str, ty: serde_json::Value) {
    let f = fields.iter_mut().find(|f| f["name"] == name).unwrap();
    f["type"] = ty;
}

fn set_default(fields: &mut [serde_json::Value], name: &str, default: serde_json::Value) {
    let f = fields.iter_mut().find(|f| f["name"] == name).unwrap();
    f["default"] = default;
}

fn remove(fields: &mut Vec<serde_json::Value>, names: &[&str]) {
    fields.retain(|f| !names.iter().any(|n| f["name"] == *n));
}

/// A writer a later producer might use: fields reordered, promoted, made
/// unions, and new ones of every complex type the reader skips.
fn evolved_writer() -> Schema {
    use serde_json::json;
    edited("card_transaction.v2.avsc", |fields| {
        fields.reverse();
        set_type(fields, "event_time", json!("long"));
        set_type(fields, "card_id", json!(["null", "string"]));
        set_type(fields, "amount", json!(["null", "double"]));
        set_type(fields, "amount_avg_30d", json!("float"));
        set_type(fields, "amount_to_avg_ratio", json!("long"));
        set_type(fields, "merchant_category", json!("long"));
        set_type(fields, "merchant_risk", json!(["int", "float", "null"]));
        set_type(fields, "hour_of_day", json!(["long", "int"]));
        set_type(fields, "seconds_since_last_txn", json!("int"));
        set_type(fields, "merchant_country", json!(["string", "null"]));
        fields.insert(
            3,
            json!({"name": "trace", "type": {"type": "record", "name": "Trace", "fields": [
                {"name": "hops", "type": {"type": "array", "items": "string"}},
                {"name": "tags", "type": {"type": "map", "values": ["null", "long"]}},
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
                {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
                {"name": "blob", "type": "bytes"},
                {"name": "flag", "type": "boolean"},
                {"name": "ratio", "type": "float"},
                {"name": "at", "type": {"type": "int", "logicalType": "date"}}
            ]}}),
        );
        fields.push(json!({"name": "traces", "type": {"type": "array", "items": "Trace"}}));
        fields.push(json!({"name": "note", "type": ["null", "Digest", "string", "Kind"]}));
    })
}

/// The configured reader with nullable and defaulted fields, for Missing
/// features and defaults.
fn lenient_reader() -> Schema {
    use serde_json::json;
    edited("card_transaction.v2.avsc", |fields| {
        set_default(fields, "event_id", json!("no-id"));
        set_type(fields, "ip_risk", json!(["null", "double"]));
        set_default(fields, "ip_risk", json!(null));
        set_type(fields, "device_risk", json!(["double", "null"]));
        set_default(fields, "device_risk", json!(0.25));
        set_default(fields, "chargebacks_1y", json!(2));
        set_type(fields, "hour_of_day", json!("long"));
        set_default(fields, "hour_of_day", json!(12));
        set_type(fields, "distance_from_home_km", json!("float"));
        set_default(fields, "distance_from_home_km", json!(1e39));
        set_default(fields, "card_id", json!(""));
    })
}

/// A writer that leaves out what the lenient reader defaults.
fn sparse_writer() -> Schema {
    use serde_json::json;
    edited("card_transaction.v1.avsc", |fields| {
        remove(
            fields,
            &[
                "event_id",
                "device_risk",
                "chargebacks_1y",
                "hour_of_day",
                "card_id",
            ],
        );
        set_type(fields, "ip_risk", json!(["null", "double"]));
        set_type(fields, "event_time", json!("int"));
        set_type(fields, "amount", json!(["null", "int", "double"]));
    })
}

/// One writer read with one reader: the plan (through `RowDecoder`) and the oracle.
struct Pair {
    name: &'static str,
    id: u32,
    writer: Schema,
    names: HashMap<Name, Schema>,
    oracle: InputDecoder,
    features: FeaturePlan,
    rows: RowDecoder,
}

/// A failing case names the pair; the schemas and decoders would bury it.
impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (writer id {})", self.name, self.id)
    }
}

fn pair(name: &'static str, id: u32, writer: Schema, reader: Schema) -> Pair {
    test_allocation_limit();
    let model = VerifiedModel::load(std::path::Path::new(&format!(
        "{ROOT}/models/fraud_mlp.card.json"
    )))
    .unwrap();
    let features = FeaturePlan::new(&model.card)
        .for_avro_reader(&model.card, &reader)
        .unwrap();
    let names = ResolvedSchema::try_from(&writer)
        .unwrap()
        .get_names()
        .iter()
        .map(|(n, s)| (n.clone(), (*s).clone()))
        .collect();
    let decoder = || InputDecoder::avro(HashMap::from([(id, writer.clone())]), reader.clone());
    Pair {
        name,
        id,
        names,
        oracle: decoder(),
        rows: RowDecoder::new(decoder(), features.clone()),
        features,
        writer,
    }
}

fn pairs() -> &'static [Pair] {
    static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let v1 = edited("card_transaction.v1.avsc", |_| {});
        let v2 = edited("card_transaction.v2.avsc", |_| {});
        let no_card = edited("card_transaction.v1.avsc", |f| remove(f, &["card_id"]));
        vec![
            pair("v1 as v2", 1, v1.clone(), v2.clone()),
            pair("v2 as v2", 2, v2.clone(), v2.clone()),
            pair("v2 as v1", 2, v2.clone(), v1.clone()),
            pair("evolved as v2", 3, evolved_writer(), v2.clone()),
            pair("sparse as lenient", 4, sparse_writer(), lenient_reader()),
            pair("v1 as lenient", 1, v1, lenient_reader()),
            pair("evolved as lenient", 3, evolved_writer(), lenient_reader()),
            // card_id has no default in v2: every record fails resolution.
            pair("no card_id as v2", 5, no_card, v2),
        ]
    })
}

/// The plan's outcome equals the oracle's: rows bit for bit, identity, the
/// feature error, and the decode error's variant (the plan's decoding and
/// resolution messages are its own). Both leave `row` as found on error.
fn agree(p: &Pair, plaintext: &[u8]) -> Result<(), TestCaseError> {
    let mut fast_row = FeatureRows {
        numbers: vec![-1.0],
        texts: Vec::new(),
    };
    let fast = p.rows.decode(plaintext, &mut fast_row);
    let mut old_row = FeatureRows {
        numbers: vec![-1.0],
        texts: Vec::new(),
    };
    let old = p
        .oracle
        .decode(plaintext)
        .map_err(RowError::from)
        .and_then(|f| Ok(p.features.extract(&f, &mut old_row)?));
    let bits = |row: &[f32]| row.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    match (&fast, &old) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", p.name),
        (Err(RowError::Features(a)), Err(RowError::Features(b))) => {
            prop_assert_eq!(a, b, "{}", p.name)
        }
        (
            Err(RowError::Decode(DecodeError::Avro(_))),
            Err(RowError::Decode(DecodeError::Avro(_))),
        ) => {}
        (Err(RowError::Decode(a)), Err(RowError::Decode(b))) => prop_assert_eq!(a, b, "{}", p.name),
        _ => prop_assert!(false, "{}: plan {fast:?}, oracle {old:?}", p.name),
    }
    prop_assert_eq!(
        bits(&fast_row.numbers),
        bits(&old_row.numbers),
        "{}",
        p.name
    );
    Ok(())
}

fn ints() -> BoxedStrategy<i32> {
    prop_oneof![3 => -100..100i32, 1 => any::<i32>()].boxed()
}

fn longs() -> BoxedStrategy<i64> {
    prop_oneof![3 => -1000..1000i64, 1 => any::<i64>()].boxed()
}

fn doubles() -> BoxedStrategy<f64> {
    prop_oneof![6 => -1e6..1e6f64, 1 => any::<f64>(), 1 => Just(f64::NAN)].boxed()
}

fn floats() -> BoxedStrategy<f32> {
    prop_oneof![6 => -1e6..1e6f32, 1 => any::<f32>()].boxed()
}

/// Values of `schema`, for the schemas these tests write.
fn values(
    schema: &Schema,
    names: &HashMap<Name, Schema>,
    ns: &Namespace,
) -> BoxedStrategy<AvroValue> {
    values_at(schema, names, ns, 0)
}

/// How many named references deep a recursive type is written; past it a
/// union takes its first branch (null, in these schemas), so generation ends.
const MAX_DEPTH: usize = 3;

fn values_at(
    schema: &Schema,
    names: &HashMap<Name, Schema>,
    ns: &Namespace,
    depth: usize,
) -> BoxedStrategy<AvroValue> {
    use AvroValue as V;
    let inner = |s: &Schema, ns: &Namespace| values_at(s, names, ns, depth);
    match schema {
        Schema::Null => Just(V::Null).boxed(),
        Schema::Boolean => any::<bool>().prop_map(V::Boolean).boxed(),
        Schema::Int => ints().prop_map(V::Int).boxed(),
        Schema::Date => ints().prop_map(V::Date).boxed(),
        Schema::Long => longs().prop_map(V::Long).boxed(),
        Schema::TimestampMillis => longs().prop_map(V::TimestampMillis).boxed(),
        Schema::Float => floats().prop_map(V::Float).boxed(),
        Schema::Double => doubles().prop_map(V::Double).boxed(),
        Schema::Bytes => vec(any::<u8>(), 0..6).prop_map(V::Bytes).boxed(),
        Schema::String => "\\PC{0,6}".prop_map(V::String).boxed(),
        Schema::Uuid => any::<[u8; 16]>()
            .prop_map(|b| V::Uuid(apache_avro::Uuid::from_bytes(b)))
            .boxed(),
        Schema::Fixed(f) => {
            let size = f.size;
            vec(any::<u8>(), size)
                .prop_map(move |b| V::Fixed(size, b))
                .boxed()
        }
        Schema::Enum(e) => {
            let symbols = e.symbols.clone();
            (0..symbols.len())
                .prop_map(move |i| V::Enum(i as u32, symbols[i].clone()))
                .boxed()
        }
        Schema::Array(a) => vec(inner(&a.items, ns), 0..3).prop_map(V::Array).boxed(),
        Schema::Map(m) => hash_map("[a-z]{1,3}", inner(&m.types, ns), 0..3)
            .prop_map(V::Map)
            .boxed(),
        Schema::Union(u) => {
            let take = if depth >= MAX_DEPTH {
                1
            } else {
                u.variants().len()
            };
            Union::new(u.variants().iter().take(take).enumerate().map(|(i, v)| {
                inner(v, ns)
                    .prop_map(move |x| V::Union(i as u32, Box::new(x)))
                    .boxed()
            }))
            .boxed()
        }
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(ns);
            r.fields
                .iter()
                .map(|f| {
                    let name = f.name.clone();
                    inner(&f.schema, &full.namespace)
                        .prop_map(move |v| (name.clone(), v))
                        .boxed()
                })
                .collect::<Vec<_>>()
                .prop_map(V::Record)
                .boxed()
        }
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(ns);
            values_at(&names[&full], names, &full.namespace, depth + 1)
        }
        other => panic!("no generator for {other:?}"),
    }
}

/// A pair and a framed record its writer wrote: apache-avro's encoding, or
/// the same value with its arrays and maps written in blocks that carry their
/// byte size (a negative count), one item a block, as other writers may.
fn records() -> impl Strategy<Value = (&'static Pair, Vec<u8>)> {
    (0..pairs().len(), any::<bool>()).prop_flat_map(|(i, sized)| {
        let p = &pairs()[i];
        values(&p.writer, &p.names, &None).prop_map(move |v| {
            let datum = if sized {
                Writer::new(p, true, None).datum(&v)
            } else {
                apache_avro::to_avro_datum(&p.writer, v).unwrap()
            };
            (p, confluent_frame(p.id, &datum))
        })
    })
}

/// Avro binary written by hand, for what apache-avro does not write: arrays
/// and maps in sized blocks (`sized`: each item a block of its own, its
/// count negative and followed by its size in bytes), and one length or
/// count (the `at`-th written) replaced by a hostile value.
struct Writer<'p> {
    names: &'p HashMap<Name, Schema>,
    writer: &'p Schema,
    sized: bool,
    hostile: Option<(usize, i64)>,
    lengths: usize,
}

impl<'p> Writer<'p> {
    fn new(p: &'p Pair, sized: bool, hostile: Option<(usize, i64)>) -> Self {
        Self {
            names: &p.names,
            writer: &p.writer,
            sized,
            hostile,
            lengths: 0,
        }
    }

    fn datum(self, value: &AvroValue) -> Vec<u8> {
        self.datum_and_lengths(value).0
    }

    /// The datum and how many lengths and counts it holds.
    fn datum_and_lengths(mut self, value: &AvroValue) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        self.write(value, self.writer, &None, &mut out);
        (out, self.lengths)
    }

    /// A length or count, unless it is the one to replace.
    fn len(&mut self, n: i64, out: &mut Vec<u8>) {
        let n = match self.hostile {
            Some((at, hostile)) if at == self.lengths => hostile,
            _ => n,
        };
        self.lengths += 1;
        out.extend(varint(n));
    }

    fn blocks(&mut self, items: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        if self.sized {
            for item in items {
                self.len(-1, out);
                self.len(item.len() as i64, out);
                out.extend(item);
            }
        } else if !items.is_empty() {
            self.len(items.len() as i64, out);
            out.extend(items.concat());
        }
        self.len(0, out);
    }

    fn write(&mut self, value: &AvroValue, schema: &Schema, ns: &Namespace, out: &mut Vec<u8>) {
        use AvroValue as V;
        match (schema, value) {
            (Schema::Ref { name }, v) => {
                let full = name.fully_qualified_name(ns);
                let names = self.names;
                self.write(v, &names[&full], &full.namespace, out);
            }
            (Schema::Null, V::Null) => {}
            (Schema::Boolean, V::Boolean(b)) => out.push(u8::from(*b)),
            (_, V::Int(n) | V::Date(n)) => out.extend(varint(i64::from(*n))),
            (_, V::Enum(n, _)) => out.extend(varint(i64::from(*n))),
            (_, V::Long(n) | V::TimestampMillis(n)) => out.extend(varint(*n)),
            (_, V::Float(x)) => out.extend(x.to_le_bytes()),
            (_, V::Double(x)) => out.extend(x.to_le_bytes()),
            (_, V::Bytes(b)) => {
                self.len(b.len() as i64, out);
                out.extend(b);
            }
            (_, V::String(s)) => {
                self.len(s.len() as i64, out);
                out.extend(s.as_bytes());
            }
            (_, V::Fixed(_, b)) => out.extend(b),
            (Schema::Union(u), V::Union(i, v)) => {
                out.extend(varint(i64::from(*i)));
                self.write(v, &u.variants()[*i as usize], ns, out);
            }
            (Schema::Array(a), V::Array(items)) => {
                let items = items
                    .iter()
                    .map(|v| {
                        let mut item = Vec::new();
                        self.write(v, &a.items, ns, &mut item);
                        item
                    })
                    .collect();
                self.blocks(items, out);
            }
            (Schema::Map(m), V::Map(entries)) => {
                let items = entries
                    .iter()
                    .map(|(k, v)| {
                        let mut item = Vec::new();
                        self.len(k.len() as i64, &mut item);
                        item.extend(k.as_bytes());
                        self.write(v, &m.types, ns, &mut item);
                        item
                    })
                    .collect();
                self.blocks(items, out);
            }
            (Schema::Record(r), V::Record(fields)) => {
                let full = r.name.fully_qualified_name(ns);
                for (field, (_, v)) in r.fields.iter().zip(fields) {
                    self.write(v, &field.schema, &full.namespace, out);
                }
            }
            (s, v) => panic!("no writer for {v:?} as {s:?}"),
        }
    }
}

/// Zigzag varint, as the spec writes a long.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return out;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Bytes to put in a record: lengths and counts from small to over every
/// limit, negative ones, and varints of eleven bytes.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(-1i64),
            Just(64 * 1024),
            Just(64 * 1024 + 1),
            0..300i64,
            any::<i64>(),
        ]
        .prop_map(varint),
        Just([vec![0x80; 10], vec![0x01]].concat()),
        Just(vec![0xff; 11]),
        vec(any::<u8>(), 1..8),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, b)| Mutation::Flip(at, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), hostile_bytes()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), hostile_bytes()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        hostile_bytes().prop_map(Mutation::Append),
    ]
}

/// Applies `m` past the 5-byte frame (a broken frame is the oracle's path).
fn mutate(record: &mut Vec<u8>, m: &Mutation) {
    let body = record.len() - 5;
    let at = |i: usize| 5 + if body == 0 { 0 } else { i % (body + 1) };
    match m {
        Mutation::Flip(i, b) if body > 0 => record[5 + i % body] ^= b,
        Mutation::Flip(..) => {}
        Mutation::Cut(i) => record.truncate(at(*i)),
        Mutation::Insert(i, bytes) => {
            let i = at(*i);
            record.splice(i..i, bytes.iter().copied());
        }
        Mutation::Overwrite(i, bytes) => {
            let i = at(*i);
            let end = (i + bytes.len()).min(record.len());
            record.splice(i..end, bytes.iter().copied());
        }
        Mutation::Append(bytes) => record.extend_from_slice(bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plan_and_oracle_agree_on_written_records((p, record) in records()) {
        agree(p, &record)?;
    }

    #[test]
    fn plan_and_oracle_agree_on_mutated_records(
        (p, mut record) in records(),
        mutations in vec(mutation(), 1..4),
    ) {
        for m in &mutations {
            mutate(&mut record, m);
        }
        agree(p, &record)?;
    }

    #[test]
    fn plan_and_oracle_agree_on_arbitrary_bytes(
        i in 0..8usize,
        body in vec(any::<u8>(), 0..160),
    ) {
        let p = &pairs()[i % pairs().len()];
        agree(p, &confluent_frame(p.id, &body))?;
    }
}

#[test]
fn every_test_writer_compiles_to_a_plan() {
    for p in pairs() {
        assert!(
            rows::fallbacks(&p.oracle, &p.features).is_empty(),
            "{} falls back: {:?}",
            p.name,
            rows::fallbacks(&p.oracle, &p.features)
        );
    }
}

/// The records the properties must not only reject: written ones are mostly
/// accepted, and each kind of outcome turns up.
#[test]
fn the_written_records_reach_every_outcome() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..600 {
        let (p, record) = records().new_tree(&mut runner).unwrap().current();
        let outcome = match p.rows.decode(&record, &mut FeatureRows::default()) {
            Ok(_) => "row",
            Err(RowError::Decode(_)) => "decode",
            Err(RowError::Features(crate::features::FeatureError::Missing(_))) => "missing",
            Err(RowError::Features(crate::features::FeatureError::NotFinite(_))) => "not finite",
            Err(RowError::Features(_)) => "other feature",
        };
        *seen.entry(outcome).or_default() += 1;
    }
    for outcome in ["row", "decode", "missing", "not finite"] {
        assert!(seen.get(outcome).copied().unwrap_or(0) >= 10, "{seen:?}");
    }
}

fn v2_record(country: Option<&str>) -> Vec<u8> {
    let p = &pairs()[1];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let AvroValue::Record(mut fields) = values(&p.writer, &p.names, &None)
        .new_tree(&mut runner)
        .unwrap()
        .current()
    else {
        unreachable!()
    };
    for (name, value) in &mut fields {
        *value = match (name.as_str(), &*value) {
            ("merchant_country", _) => match country {
                Some(c) => AvroValue::Union(1, Box::new(AvroValue::String(c.into()))),
                None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            },
            (_, AvroValue::Double(_)) => AvroValue::Double(0.5),
            _ => value.clone(),
        };
    }
    let datum = apache_avro::to_avro_datum(&p.writer, AvroValue::Record(fields)).unwrap();
    confluent_frame(p.id, &datum)
}

/// apache-avro reads a union index or a string cut off by the end of the
/// datum as null; the plan does too, so records the library accepts are
/// still accepted (pinned here, and found by the properties above).
#[test]
fn the_librarys_end_of_datum_nulls_are_accepted_alike() {
    let p = &pairs()[1];
    let whole = v2_record(None);
    let cut = &whole[..whole.len() - 1];
    let mut row = FeatureRows::default();
    assert!(p.rows.decode(cut, &mut row).is_ok());
    agree(p, cut).unwrap();
    let whole = v2_record(Some("DE"));
    let cut = &whole[..whole.len() - 1];
    assert!(p.rows.decode(cut, &mut row).is_ok());
    agree(p, cut).unwrap();
}

/// Writers the plan does not express stay on the apache-avro path, say why,
/// and still decode.
#[test]
fn writers_the_plan_cannot_express_fall_back_to_apache_avro() {
    use serde_json::json;
    let v2 = edited("card_transaction.v2.avsc", |_| {});
    let cases = [
        (
            // bytes read as a string resolves only when they are UTF-8
            edited("card_transaction.v2.avsc", |f| {
                set_type(f, "merchant_country", json!(["null", "string", "bytes"]))
            }),
            "resolves by the value",
        ),
        (
            edited("card_transaction.v2.avsc", |f| {
                f.push(
                    json!({"name": "chain", "type": {"type": "record", "name": "Link",
                    "fields": [{"name": "next", "type": ["null", "Link"]}]}}),
                )
            }),
            "recursive",
        ),
        (
            edited("card_transaction.v2.avsc", |f| {
                f.push(json!({"name": "uid", "type": {"type": "string", "logicalType": "uuid"}}))
            }),
            "Uuid",
        ),
        (
            edited("card_transaction.v2.avsc", |f| {
                set_type(f, "card_id", json!({"type": "array", "items": "string"}))
            }),
            "card_id",
        ),
    ];
    for (i, (writer, why)) in cases.into_iter().enumerate() {
        let p = pair("fallback", 9, writer, v2.clone());
        let fallbacks = rows::fallbacks(&p.oracle, &p.features);
        let reason = fallbacks
            .get(&9)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(reason.contains(why), "case {i}: {fallbacks:?}");
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..20 {
            let value = values(&p.writer, &p.names, &None)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let datum = apache_avro::to_avro_datum(&p.writer, value).unwrap();
            agree(&p, &confluent_frame(9, &datum)).unwrap();
        }
    }
}

/// Some values each pair's writer writes, the same on every run.
fn samples(p: &Pair, n: usize) -> Vec<AvroValue> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = values(&p.writer, &p.names, &None);
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Two values equal, floats to the bit (NaN included), maps by key.
fn same(a: &AvroValue, b: &AvroValue) -> bool {
    use AvroValue as V;
    match (a, b) {
        (V::Float(x), V::Float(y)) => x.to_bits() == y.to_bits(),
        (V::Double(x), V::Double(y)) => x.to_bits() == y.to_bits(),
        (V::Union(i, x), V::Union(j, y)) => i == j && same(x, y),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (V::Map(x), V::Map(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (V::Record(x), V::Record(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((m, x), (n, y))| m == n && same(x, y))
        }
        (x, y) => x == y,
    }
}

/// The hand writer is right, so the properties on what it writes test the
/// plan: unsized, it writes apache-avro's bytes; sized, apache-avro reads
/// back the value it was given, to the last byte.
#[test]
fn the_hand_writer_writes_what_apache_avro_reads() {
    let mut sized_blocks = 0;
    for p in pairs() {
        for value in samples(p, 40) {
            let plain = Writer::new(p, false, None).datum(&value);
            let sized = Writer::new(p, true, None).datum(&value);
            assert_eq!(
                plain,
                apache_avro::to_avro_datum(&p.writer, value.clone()).unwrap()
            );
            let mut rest = &sized[..];
            let back = apache_avro::from_avro_datum(&p.writer, &mut rest, None).unwrap();
            assert!(
                rest.is_empty() && same(&back, &value),
                "{}: {value:?}",
                p.name
            );
            sized_blocks += usize::from(sized != plain);
        }
    }
    assert!(sized_blocks >= 20, "{sized_blocks}");
}

/// Every length and count a record holds (strings, bytes, map keys, block
/// counts and sizes), one at a time, replaced by a hostile one: negative,
/// at and past the allocation limit, past the end, past 32 and 64 bits.
#[test]
fn hostile_lengths_anywhere_in_a_record_agree() {
    let limit = i64::try_from(test_allocation_limit()).unwrap();
    let hostile = [
        -1,
        -2,
        i64::MIN,
        i64::MAX,
        limit,
        limit + 1,
        1 << 31,
        1 << 40,
        0,
        3,
    ];
    let mut rows = 0;
    for p in pairs() {
        for value in samples(p, 6) {
            for sized in [false, true] {
                let (_, lengths) = Writer::new(p, sized, None).datum_and_lengths(&value);
                for at in 0..lengths {
                    for &h in &hostile {
                        let datum = Writer::new(p, sized, Some((at, h))).datum(&value);
                        let record = confluent_frame(p.id, &datum);
                        agree(p, &record).unwrap();
                        rows += usize::from(
                            p.rows.decode(&record, &mut FeatureRows::default()).is_ok(),
                        );
                    }
                }
            }
        }
    }
    assert!(rows >= 10, "{rows}");
}

/// The plan's rules for a feature and the event time, which skip building a
/// `Value` for a number, are `FeaturePlan`'s on every scalar kind.
#[test]
fn the_plans_feature_rules_are_the_value_rules() {
    use super::plan::{event_time, feature};
    use super::scalar::Scalar as S;
    use crate::features::{avro_event_time, avro_feature};
    let mut cases = vec![
        S::Null,
        S::Boolean(false),
        S::Boolean(true),
        S::Bytes(b"\x01"),
        S::String("1.5"),
    ];
    for n in [0i32, -7, i32::MAX, i32::MIN] {
        cases.extend([S::Int(n), S::Date(n), S::TimeMillis(n)]);
    }
    for n in [0i64, -7, 1 << 40, i64::MAX, i64::MIN] {
        cases.extend([
            S::Long(n),
            S::TimeMicros(n),
            S::TimestampMillis(n),
            S::TimestampMicros(n),
            S::TimestampNanos(n),
            S::LocalTimestampMillis(n),
            S::LocalTimestampMicros(n),
            S::LocalTimestampNanos(n),
        ]);
    }
    for x in [0.0f64, -1.5, 1e-50, 1e39, f64::MAX, f64::INFINITY, f64::NAN] {
        cases.extend([S::Double(x), S::Float(x as f32)]);
    }
    for v in cases {
        let value = v.to_value();
        assert_eq!(
            feature("f", v).map(f32::to_bits),
            avro_feature("f", &value).map(f32::to_bits),
            "{v:?}"
        );
        assert_eq!(event_time(v), avro_event_time(&value), "{v:?}");
    }
}
