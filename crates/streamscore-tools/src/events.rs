//! Synthetic card transactions, encoded and sealed the way an upstream
//! producer would, plus deliberately bad records of every kind the processor
//! must dead-letter. Used by the demo and by the tests.

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, LogNormal, Poisson};

use streamscore::Format;
use streamscore::confluent_frame;
use streamscore::dead_letters::Reason;
use streamscore::{Keyring, random_key};

/// Confluent schema id of schemas/card_transaction.v1.avsc in the default config.
pub const INPUT_SCHEMA_ID: u32 = 1;

/// Confluent-framed Avro of `fields` written with `schema` (any version).
pub fn encode_avro(
    schema: &Schema,
    fields: Vec<(String, AvroValue)>,
    schema_id: u32,
) -> Result<Vec<u8>, apache_avro::Error> {
    let datum = apache_avro::to_avro_datum(schema, AvroValue::Record(fields))?;
    Ok(confluent_frame(schema_id, &datum))
}

/// A bad record the demo and tests inject, and the reason it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// A ciphertext byte flipped after sealing.
    Tampered,
    /// Sealed with a key id the processor does not have.
    UnknownKey,
    /// Sealed with the right key id but other key bytes.
    WrongKey,
    /// Random bytes, not an envelope.
    Garbage,
    /// A valid envelope around plaintext that is not a valid event.
    Undecodable,
    /// A valid envelope around Avro framed with an unknown schema id.
    UnknownSchema,
    /// A record with no value.
    Tombstone,
    /// A valid envelope sealed for another record key.
    KeySwapped,
}

impl BadKind {
    pub const ALL: [BadKind; 8] = [
        BadKind::Tampered,
        BadKind::UnknownKey,
        BadKind::WrongKey,
        BadKind::Garbage,
        BadKind::Undecodable,
        BadKind::UnknownSchema,
        BadKind::Tombstone,
        BadKind::KeySwapped,
    ];

    pub fn expected_reason(self, format: Format) -> Reason {
        match self {
            BadKind::Tampered | BadKind::WrongKey | BadKind::KeySwapped => Reason::DecryptFailed,
            BadKind::UnknownKey => Reason::UnknownKey,
            BadKind::Garbage => Reason::MalformedEnvelope,
            BadKind::Undecodable => Reason::DecodeFailed,
            BadKind::UnknownSchema if format == Format::Avro => Reason::UnknownSchema,
            BadKind::UnknownSchema => Reason::DecodeFailed,
            BadKind::Tombstone => Reason::EmptyValue,
        }
    }
}

/// One record to publish on the input topic.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub event_id: String,
    pub bad: Option<BadKind>,
}

/// Makes encrypted events. Deterministic for a given seed, except nonces.
pub struct EventFactory {
    rng: StdRng,
    keyring: std::sync::Arc<Keyring>,
    impostor: Keyring,
    unknown: Keyring,
    schema: Schema,
    format: Format,
    run: String,
    seq: u64,
}

pub const SCHEMA_V1: &str = include_str!("../../../schemas/card_transaction.v1.avsc");

impl EventFactory {
    pub fn new(keyring: std::sync::Arc<Keyring>, format: Format, run: &str, seed: u64) -> Self {
        let active = keyring.active_id().to_owned();
        Self {
            rng: StdRng::seed_from_u64(seed),
            impostor: Keyring::from_keys([(active.as_str(), random_key())], &active)
                .expect("a generated key is valid"),
            unknown: Keyring::from_keys([("retired-key", random_key())], "retired-key")
                .expect("a generated key is valid"),
            keyring,
            schema: Schema::parse_str(SCHEMA_V1).expect("the shipped schema parses"),
            format,
            run: run.to_owned(),
            seq: 0,
        }
    }

    /// The plaintext fields of a synthetic transaction, in schema order.
    pub fn fields(&mut self, event_id: &str, card_id: &str) -> Vec<(String, AvroValue)> {
        let r = &mut self.rng;
        let holder = Holder::draw(r);
        let mut fields = vec![
            ("event_id".into(), AvroValue::String(event_id.to_owned())),
            ("card_id".into(), AvroValue::String(card_id.to_owned())),
            (
                "event_time".into(),
                AvroValue::TimestampMillis(now_millis()),
            ),
            ("amount".into(), AvroValue::Double(holder.amount)),
            ("amount_avg_30d".into(), AvroValue::Double(holder.avg)),
            (
                "amount_to_avg_ratio".into(),
                AvroValue::Double(holder.amount / holder.avg),
            ),
        ];
        // In schema order, which is also the order of the draws: a seed must
        // keep giving the same events.
        fields.extend(merchant_fields(r));
        fields.extend(history_fields(r, &holder));
        fields.extend(risk_fields(r, &holder));
        fields
    }

    /// Encodes fields as the configured plaintext format (Avro: with schema v1).
    pub fn encode(&self, fields: Vec<(String, AvroValue)>, schema_id: u32) -> Vec<u8> {
        match self.format {
            Format::Avro => encode_avro(&self.schema, fields, schema_id)
                .expect("synthetic fields match the shipped schema"),
            Format::Json => {
                let map: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .map(|(k, v)| {
                        let j = match v {
                            AvroValue::String(s) => serde_json::Value::from(s),
                            AvroValue::Double(d) => serde_json::Value::from(d),
                            AvroValue::Int(i) => serde_json::Value::from(i),
                            AvroValue::Long(i) | AvroValue::TimestampMillis(i) => {
                                serde_json::Value::from(i)
                            }
                            AvroValue::Boolean(b) => serde_json::Value::from(b),
                            _ => serde_json::Value::Null,
                        };
                        (k, j)
                    })
                    .collect();
                serde_json::to_vec(&map).expect("a JSON map always serialises")
            }
        }
    }

    /// The next record: good, or of the given bad kind.
    pub fn next(&mut self, bad: Option<BadKind>) -> OutRecord {
        self.seq += 1;
        let event_id = format!("{}-{:08}", self.run, self.seq);
        let card = format!("card-{:05}", self.rng.random_range(0..5000));
        let key = card.clone().into_bytes();
        let fields = self.fields(&event_id, &card);
        let plaintext = self.encode(fields, INPUT_SCHEMA_ID);
        let value = match bad {
            None => Some(self.keyring.seal(&plaintext, Some(&key))),
            Some(BadKind::Tampered) => {
                let mut v = self.keyring.seal(&plaintext, Some(&key));
                let i = self.rng.random_range(v.len() - 20..v.len());
                v[i] ^= 0x5a;
                Some(v)
            }
            Some(BadKind::UnknownKey) => Some(self.unknown.seal(&plaintext, Some(&key))),
            Some(BadKind::WrongKey) => Some(self.impostor.seal(&plaintext, Some(&key))),
            Some(BadKind::Garbage) => {
                let len = self.rng.random_range(1..200);
                let mut v: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                v[0] = 0xff; // never a valid version byte
                Some(v)
            }
            Some(BadKind::Undecodable) => {
                let junk: &[u8] = match self.format {
                    Format::Avro => &[0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    Format::Json => b"{\"event_id\": ",
                };
                Some(self.keyring.seal(junk, Some(&key)))
            }
            Some(BadKind::UnknownSchema) => {
                let mut framed = plaintext.clone();
                if self.format == Format::Avro {
                    framed[1..5].copy_from_slice(&999u32.to_be_bytes());
                } else {
                    framed = b"[1, 2, 3]".to_vec();
                }
                Some(self.keyring.seal(&framed, Some(&key)))
            }
            Some(BadKind::Tombstone) => None,
            Some(BadKind::KeySwapped) => Some(self.keyring.seal(&plaintext, Some(b"another-card"))),
        };
        OutRecord {
            key,
            value,
            event_id,
            bad,
        }
    }
}

/// The card holder behind one transaction. The rare risky one transacts
/// more often, fails more attempts and uses riskier devices, so that the
/// model has something to find.
struct Holder {
    /// Mean amount over 30 days.
    avg: f64,
    amount: f64,
    risky: bool,
    device_risk: f64,
}

impl Holder {
    fn draw(r: &mut StdRng) -> Self {
        let avg: f64 = LogNormal::new(3.5, 0.8)
            .map(|d| d.sample(r))
            .unwrap_or(30.0);
        let amount = avg * LogNormal::new(0.0, 0.6).map(|d| d.sample(r)).unwrap_or(1.0);
        let risky = r.random_bool(0.04);
        let device_risk = if risky {
            beta(r, 6.0, 2.0)
        } else {
            beta(r, 1.5, 10.0)
        };
        Self {
            avg,
            amount,
            risky,
            device_risk,
        }
    }
}

// The distributions' parameters are constants; the fallbacks only keep a
// typo in one from stopping the generator.
fn beta(r: &mut StdRng, a: f64, b: f64) -> f64 {
    Beta::new(a, b).map(|d| d.sample(r)).unwrap_or(0.1)
}

fn exp(r: &mut StdRng, mean: f64) -> f64 {
    Exp::new(1.0 / mean).map(|d| d.sample(r)).unwrap_or(mean)
}

fn poisson(r: &mut StdRng, l: f64) -> i32 {
    Poisson::new(l).map(|d| d.sample(r) as i32).unwrap_or(0)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where and when the card was used.
fn merchant_fields(r: &mut StdRng) -> Vec<(String, AvroValue)> {
    vec![
        (
            "merchant_category".into(),
            AvroValue::Int(r.random_range(0..20)),
        ),
        ("merchant_risk".into(), AvroValue::Double(beta(r, 2.0, 8.0))),
        ("hour_of_day".into(), AvroValue::Int(r.random_range(0..24))),
        ("day_of_week".into(), AvroValue::Int(r.random_range(0..7))),
        ("is_online".into(), AvroValue::Boolean(r.random_bool(0.45))),
        (
            "card_present".into(),
            AvroValue::Boolean(r.random_bool(0.5)),
        ),
    ]
}

/// The card's recent use and age.
fn history_fields(r: &mut StdRng, holder: &Holder) -> Vec<(String, AvroValue)> {
    let risky = holder.risky;
    vec![
        (
            "distance_from_home_km".into(),
            AvroValue::Double(exp(r, 15.0)),
        ),
        (
            "distance_from_last_txn_km".into(),
            AvroValue::Double(exp(r, 10.0)),
        ),
        (
            "seconds_since_last_txn".into(),
            AvroValue::Long(exp(r, 20_000.0) as i64),
        ),
        (
            "txn_count_1h".into(),
            AvroValue::Int(poisson(r, if risky { 3.0 } else { 0.6 })),
        ),
        ("txn_count_24h".into(), AvroValue::Int(poisson(r, 4.0))),
        (
            "amount_sum_24h".into(),
            AvroValue::Double(holder.avg * exp(r, 3.0)),
        ),
        (
            "distinct_merchants_24h".into(),
            AvroValue::Int(poisson(r, 2.5)),
        ),
        (
            "failed_attempts_24h".into(),
            AvroValue::Int(poisson(r, if risky { 2.0 } else { 0.15 })),
        ),
        (
            "account_age_days".into(),
            AvroValue::Int(r.random_range(1..5000)),
        ),
        (
            "card_age_days".into(),
            AvroValue::Int(r.random_range(1..2000)),
        ),
    ]
}

/// The risk signals an upstream system would attach.
fn risk_fields(r: &mut StdRng, holder: &Holder) -> Vec<(String, AvroValue)> {
    vec![
        ("is_foreign".into(), AvroValue::Boolean(r.random_bool(0.08))),
        (
            "currency_mismatch".into(),
            AvroValue::Boolean(r.random_bool(0.06)),
        ),
        ("device_risk".into(), AvroValue::Double(holder.device_risk)),
        ("ip_risk".into(), AvroValue::Double(beta(r, 1.5, 10.0))),
        ("chargebacks_1y".into(), AvroValue::Int(poisson(r, 0.05))),
    ]
}
