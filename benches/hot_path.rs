//! Micro-benchmarks of the per-record and per-batch work: envelope open,
//! Avro decode, feature building, score encoding, and ONNX Runtime inference
//! by batch size. Each group
//! reports throughput, so `cargo bench` prints records/s side by side.
//!
//! Avro decoding three ways, on the same plaintexts: `avro_decode` (to
//! apache-avro `Value`s only), `avro_decode_values` (that and
//! `FeaturePlan::extract`: the row and identity as the source thread built
//! them before the compiled plans) and `avro_decode_plan` (the row and
//! identity through the plan compiled for the writer schema, as the source
//! thread builds them now: `Transform::decode`).

use std::sync::Arc;

use apache_avro::Schema;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};

use streamscore::FeaturePlan;
use streamscore::Keyring;
use streamscore::load_schema;
use streamscore::{Decision, FeatureRows, InputDecoder, ScoreEncoder, ScoreResult};
use streamscore::{DevicePreference, Format};
use streamscore::{ModelSession, VerifiedModel, init_runtime};
use streamscore::{Transform, share};
use streamscore_tools::events::EventFactory;

/// The repository root: the owning crate is crates/<name>.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// (record key, envelope) pairs as they arrive from Kafka.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

fn fixtures() -> (Arc<Keyring>, Records) {
    let keyring = Arc::new(Keyring::generate("bench").unwrap().0);
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "bench", 9);
    let records = (0..1024)
        .map(|_| {
            let r = factory.next(None);
            (r.key, r.value.unwrap())
        })
        .collect();
    (keyring, records)
}

fn per_record(c: &mut Criterion) {
    let (keyring, records) = fixtures();
    let schema =
        load_schema(&std::path::Path::new(ROOT).join("schemas/card_transaction.v1.avsc")).unwrap();
    let model = VerifiedModel::load(&std::path::Path::new(ROOT).join("models/fraud_mlp.card.json"))
        .unwrap();
    let plan = FeaturePlan::new(&model.card)
        .for_avro_reader(&model.card, &schema)
        .unwrap();
    let decoder = InputDecoder::avro([(1, schema.clone())].into(), schema.clone());
    let plaintexts: Vec<Vec<u8>> = records
        .iter()
        .map(|(k, v)| keyring.open(v, Some(k)).unwrap())
        .collect();

    let mut g = c.benchmark_group("per_record");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("envelope_open", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|(k, v)| keyring.open(v, Some(k)).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("avro_decode", |b| {
        b.iter(|| {
            plaintexts
                .iter()
                .map(|p| decoder.decode(p).map(|_| 1).unwrap())
                .sum::<usize>()
        })
    });
    decode_to_rows(&mut g, &keyring, &schema, &plan, &decoder, &plaintexts);
    let mut row = FeatureRows::default();
    let decoded: Vec<_> = plaintexts
        .iter()
        .map(|p| decoder.decode(p).unwrap())
        .collect();
    g.bench_function("features", |b| {
        b.iter(|| {
            for fields in &decoded {
                row.clear();
                plan.extract(fields, &mut row).unwrap();
            }
        })
    });
    let encoder = ScoreEncoder::new(
        Format::Avro,
        load_schema(&std::path::Path::new(ROOT).join("schemas/score_result.v1.avsc")).unwrap(),
        101,
    );
    let result = ScoreResult {
        event_id: "0b8f3c1e-2d4a-4e7b-9c1d-5f6a7b8c9d0e".into(),
        record_key: Some("card-000123".into()),
        score: 0.125,
        decision: Decision::Pass,
        threshold: 0.5,
        model_name: model.card.name.clone(),
        model_version: model.card.version.clone(),
        model_sha256: model.card.sha256.clone(),
        source_topic: "transactions".into(),
        source_partition: 3,
        source_offset: 123_456,
        event_time: 1_790_000_000_000,
        scored_at: 1_790_000_000_050,
    };
    g.bench_function("score_encode", |b| {
        b.iter(|| {
            (0..records.len())
                .map(|_| encoder.encode(&result).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

/// Plaintext to feature row and identity: through apache-avro `Value`s and
/// `FeaturePlan::extract` as before, and through the plan compiled for the
/// writer schema (`Transform::decode`), which the source thread runs now.
fn decode_to_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
    keyring: &Arc<Keyring>,
    schema: &Schema,
    plan: &FeaturePlan,
    decoder: &InputDecoder,
    plaintexts: &[Vec<u8>],
) {
    let mut row = FeatureRows::default();
    g.bench_function("avro_decode_values", |b| {
        b.iter(|| {
            for p in plaintexts {
                row.clear();
                plan.extract(&decoder.decode(p).unwrap(), &mut row).unwrap();
            }
        })
    });
    let transform = Transform::new(
        share(keyring.clone()),
        InputDecoder::avro([(1, schema.clone())].into(), schema.clone()),
        plan.clone(),
        1 << 20,
        Arc::default(),
    );
    g.bench_function("avro_decode_plan", |b| {
        b.iter(|| {
            for p in plaintexts {
                row.clear();
                transform.decode(p, &mut row).unwrap();
            }
        })
    });
}

fn inference(c: &mut Criterion) {
    let library = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| format!("{ROOT}/.local/onnxruntime/lib/libonnxruntime.so"));
    let env =
        init_runtime(std::path::Path::new(&library)).expect("run `make setup` for libonnxruntime");
    let model = VerifiedModel::load(&std::path::Path::new(ROOT).join("models/fraud_mlp.card.json"))
        .unwrap();
    let mut session = ModelSession::open(&env, &model, DevicePreference::Cpu, 1).unwrap();
    let width = model.card.features.len();
    let mut g = c.benchmark_group("onnxruntime_cpu");
    for batch in [1usize, 8, 32, 128, 512, 2048] {
        let features: Vec<f32> = (0..batch * width).map(|i| (i % 17) as f32 * 0.1).collect();
        let mut scores = Vec::with_capacity(batch);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                scores.clear();
                session.score(&features, batch, &mut scores).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, per_record, inference);
criterion_main!(benches);
