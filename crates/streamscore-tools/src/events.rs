//! Synthetic card transactions, encoded and sealed the way an upstream
//! producer would, plus deliberately bad records of every kind the processor
//! must dead-letter. Used by the demo, the bench and the tests.
//!
//! The transactions are drawn from the world of models/world.py (real 4-digit
//! merchant category codes, heavy-tailed amounts, a daily profile, rare
//! attacks on a card), the one the default model was trained on.

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Binomial, Distribution, Gamma, LogNormal, Pareto, Poisson};

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
    world: World,
    /// The Confluent id framed in front of good records.
    schema_id: u32,
    /// Writing with schemas/card_transaction.v2.avsc (v1 and merchant_country).
    v2: bool,
}

pub const SCHEMA_V2: &str = include_str!("../../../schemas/card_transaction.v2.avsc");

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
            world: World::new(),
            schema_id: INPUT_SCHEMA_ID,
            v2: false,
        }
    }

    /// Frames good records with this schema id (a registry's id for v1).
    pub fn with_schema_id(mut self, schema_id: u32) -> Self {
        self.schema_id = schema_id;
        self
    }

    /// Writes with schema v2 (v1 and merchant_country), framed with `schema_id`.
    pub fn writing_v2(mut self, schema_id: u32) -> Self {
        self.schema = Schema::parse_str(SCHEMA_V2).expect("the shipped schema parses");
        self.schema_id = schema_id;
        self.v2 = true;
        self
    }

    /// The plaintext fields of a synthetic transaction, in schema order.
    pub fn fields(&mut self, event_id: &str, card_id: &str) -> Vec<(String, AvroValue)> {
        let txn = Txn::draw(&mut self.rng, &self.world);
        let mut fields = vec![
            ("event_id".into(), AvroValue::String(event_id.to_owned())),
            ("card_id".into(), AvroValue::String(card_id.to_owned())),
            (
                "event_time".into(),
                AvroValue::TimestampMillis(now_millis()),
            ),
        ];
        fields.extend(txn.fields());
        if self.v2 {
            let country = if self.rng.random_bool(0.5) {
                "US"
            } else {
                "DE"
            };
            fields.push((
                "merchant_country".into(),
                AvroValue::Union(1, Box::new(AvroValue::String(country.into()))),
            ));
        }
        fields
    }

    /// Encodes fields as the configured plaintext format (Avro: with schema
    /// v1, or v2 after [`Self::writing_v2`]).
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
        let plaintext = self.encode(fields, self.schema_id);
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

// The world of models/world.py, ported: the default model (fraud_gbm) was
// trained on it, so the events the demo, the bench and the tests send look
// like its training data and it flags a believable share of them. The
// tables are checked against world.py by a unit test below; the scalar
// parameters are ported by hand (change both sides together). Schema v1
// has no merchant_country, so the merchant's country (latent in world.py)
// is not drawn here: only whether it is foreign.

/// A merchant category: its 4-digit MCC and how transactions there look.
struct Mcc {
    code: i32,
    /// What it is; only the check against world.py reads it.
    #[cfg_attr(not(test), allow(dead_code))]
    name: &'static str,
    /// Relative share of ordinary transactions.
    weight: f64,
    /// The 5th and 95th percentiles of an ordinary amount (USD), before the
    /// cardholder's level and the tail.
    lo: f64,
    hi: f64,
    /// Share of transactions online.
    online: f64,
    /// 0..1: drives merchant_risk and how often attacks go there.
    risk: f64,
}

const fn mcc(
    code: i32,
    name: &'static str,
    weight: f64,
    lo: f64,
    hi: f64,
    online: f64,
    risk: f64,
) -> Mcc {
    Mcc {
        code,
        name,
        weight,
        lo,
        hi,
        online,
        risk,
    }
}

/// world.py's MCCS, row for row.
const MCCS: [Mcc; 24] = [
    mcc(
        5411,
        "grocery stores, supermarkets",
        16.0,
        5.0,
        300.0,
        0.08,
        0.05,
    ),
    mcc(5812, "restaurants", 10.0, 12.0, 150.0, 0.05, 0.05),
    mcc(5814, "fast food", 10.0, 4.0, 30.0, 0.1, 0.04),
    mcc(5541, "fuel", 8.0, 20.0, 120.0, 0.0, 0.08),
    mcc(5311, "department stores", 5.0, 15.0, 400.0, 0.35, 0.08),
    mcc(5310, "discount stores", 4.0, 5.0, 150.0, 0.25, 0.05),
    mcc(5999, "miscellaneous retail", 6.0, 5.0, 250.0, 0.45, 0.15),
    mcc(5732, "electronics", 4.0, 30.0, 2500.0, 0.55, 0.25),
    mcc(5691, "clothing", 4.0, 20.0, 350.0, 0.5, 0.12),
    mcc(5912, "pharmacies", 5.0, 5.0, 150.0, 0.1, 0.04),
    mcc(5945, "toys, games", 2.0, 10.0, 200.0, 0.55, 0.15),
    mcc(5815, "digital goods: media", 3.0, 1.0, 40.0, 1.0, 0.2),
    mcc(4899, "cable, streaming", 2.0, 10.0, 120.0, 1.0, 0.05),
    mcc(4900, "utilities", 2.0, 30.0, 300.0, 0.9, 0.03),
    mcc(4111, "commuter transit", 5.0, 2.0, 60.0, 0.3, 0.03),
    mcc(4121, "taxis, rideshare", 5.0, 8.0, 80.0, 0.9, 0.06),
    mcc(7011, "hotels", 3.0, 90.0, 1200.0, 0.6, 0.12),
    mcc(4511, "airlines", 2.0, 80.0, 2000.0, 0.85, 0.25),
    mcc(6011, "ATM cash", 3.0, 20.0, 500.0, 0.0, 0.2),
    mcc(
        5967,
        "direct marketing: inbound telemarketing",
        1.5,
        10.0,
        300.0,
        0.95,
        0.55,
    ),
    mcc(4829, "money transfer", 1.0, 50.0, 2500.0, 0.8, 0.7),
    mcc(6051, "quasi-cash, crypto", 0.8, 50.0, 5000.0, 0.95, 0.75),
    mcc(7995, "gambling", 0.7, 20.0, 1000.0, 0.85, 0.6),
    mcc(5933, "pawn shops", 0.3, 30.0, 800.0, 0.05, 0.45),
];

/// Relative volume by hour of the day, ordinary and in an attack.
const HOURS: [f64; 24] = [
    1.2, 0.8, 0.5, 0.4, 0.4, 0.7, 1.5, 2.8, 4.0, 4.6, 5.0, 5.6, 6.6, 6.3, 5.6, 5.3, 5.6, 6.4, 6.8,
    6.4, 5.4, 4.3, 3.2, 2.1,
];
const ATTACK_HOURS: [f64; 24] = [
    4.5, 4.8, 5.0, 5.0, 4.6, 3.8, 3.0, 3.0, 3.2, 3.5, 3.8, 4.0, 4.2, 4.2, 4.0, 4.0, 4.1, 4.3, 4.5,
    4.6, 4.6, 4.6, 4.5, 4.5,
];
/// Relative volume by day of the week, 0 = Monday.
const DAYS: [f64; 7] = [13.0, 13.0, 14.0, 14.0, 16.0, 16.0, 14.0];

/// Share of transactions that are part of an attack on the card.
const ATTACK_RATE: f64 = 0.012;
/// Share of amounts multiplied by a Pareto(1, TAIL_ALPHA) factor.
const TAIL_SHARE: f64 = 0.02;
const TAIL_ALPHA: f64 = 1.6;
/// Median 30-day mean amount (USD) at cardholder level 1.
const AVG_MEDIAN: f64 = 55.0;

/// The weighted choices, built once per factory.
struct World {
    mcc: WeightedIndex<f64>,
    attack_mcc: WeightedIndex<f64>,
    hour: WeightedIndex<f64>,
    attack_hour: WeightedIndex<f64>,
    day: WeightedIndex<f64>,
}

impl World {
    fn new() -> Self {
        let weights = |w: &[f64]| WeightedIndex::new(w).expect("the weights are positive");
        let ordinary: Vec<f64> = MCCS.iter().map(|m| m.weight).collect();
        // Attacks go where the money is easy to move: quasi-cash, transfers, gambling.
        let attacked: Vec<f64> = MCCS
            .iter()
            .map(|m| m.weight * (1.0 + 12.0 * m.risk))
            .collect();
        Self {
            mcc: weights(&ordinary),
            attack_mcc: weights(&attacked),
            hour: weights(&HOURS),
            attack_hour: weights(&ATTACK_HOURS),
            day: weights(&DAYS),
        }
    }
}

/// One synthetic transaction: ordinary, or (rarely) part of an attack that
/// shifts many signals, each only sometimes, so no one field gives it away.
struct Txn {
    purchase: Purchase,
    place: Place,
    history: History,
}

impl Txn {
    fn draw(r: &mut StdRng, world: &World) -> Self {
        let attack = r.random_bool(ATTACK_RATE);
        let purchase = Purchase::draw(r, world, attack);
        let place = Place::draw(r, attack, purchase.online);
        let history = History::draw(r, attack, purchase.amount, purchase.avg);
        Self {
            purchase,
            place,
            history,
        }
    }

    /// The 24 feature fields, in schema order.
    fn fields(&self) -> Vec<(String, AvroValue)> {
        let (p, l, h) = (&self.purchase, &self.place, &self.history);
        let double = |name: &str, v: f64| (name.to_owned(), AvroValue::Double(v));
        let int = |name: &str, v: i32| (name.to_owned(), AvroValue::Int(v));
        let boolean = |name: &str, v: bool| (name.to_owned(), AvroValue::Boolean(v));
        vec![
            double("amount", p.amount),
            double("amount_avg_30d", p.avg),
            double("amount_to_avg_ratio", p.amount / p.avg),
            int("merchant_category", p.mcc),
            double("merchant_risk", p.merchant_risk),
            int("hour_of_day", p.hour),
            int("day_of_week", p.day),
            boolean("is_online", p.online),
            boolean("card_present", p.card_present),
            double("distance_from_home_km", l.home_km),
            double("distance_from_last_txn_km", l.last_km),
            (
                "seconds_since_last_txn".into(),
                AvroValue::Long(h.seconds_since_last),
            ),
            int("txn_count_1h", h.count_1h),
            int("txn_count_24h", h.count_24h),
            double("amount_sum_24h", h.sum_24h),
            int("distinct_merchants_24h", h.distinct_merchants),
            int("failed_attempts_24h", h.failed_attempts),
            int("account_age_days", h.account_age),
            int("card_age_days", h.card_age),
            boolean("is_foreign", l.foreign),
            boolean("currency_mismatch", l.currency_mismatch),
            double("device_risk", h.device_risk),
            double("ip_risk", h.ip_risk),
            int("chargebacks_1y", h.chargebacks),
        ]
    }
}

/// What was bought, where and when (world.py's draw_merchant).
struct Purchase {
    mcc: i32,
    merchant_risk: f64,
    amount: f64,
    /// The cardholder's 30-day mean amount.
    avg: f64,
    hour: i32,
    day: i32,
    online: bool,
    card_present: bool,
}

impl Purchase {
    fn draw(r: &mut StdRng, world: &World, attack: bool) -> Self {
        let m = &MCCS[if attack {
            &world.attack_mcc
        } else {
            &world.mcc
        }
        .sample(r)];
        let level = lognormal(r, 0.0, 0.35); // the cardholder's spending level
        let sigma = (m.hi / m.lo).ln() / (2.0 * 1.645);
        let mut amount = lognormal(r, (m.lo * m.hi).sqrt().ln(), sigma) * level;
        if r.random_bool(TAIL_SHARE) {
            amount *= Pareto::new(1.0, TAIL_ALPHA).map_or(1.0, |d| d.sample(r));
        }
        if attack {
            amount = if r.random_bool(0.25) {
                r.random_range(0.5..5.0) // card testing
            } else {
                amount * lognormal(r, 0.7, 0.5)
            };
        }
        let avg = (AVG_MEDIAN * level * lognormal(r, 0.0, 0.4)).max(1.0);
        let hour = if attack {
            &world.attack_hour
        } else {
            &world.hour
        }
        .sample(r);
        let online_share = if attack && m.online > 0.0 {
            (m.online + 0.5).min(1.0)
        } else {
            m.online
        };
        let online = r.random_bool(online_share);
        let card_present = !online && !r.random_bool(0.02);
        let risk_mean = 0.03 + 0.6 * m.risk + if attack { 0.1 } else { 0.0 };
        Self {
            mcc: m.code,
            merchant_risk: round(beta_mean(r, risk_mean, 14.0), 4),
            amount: round(amount.clamp(0.5, 50_000.0), 2),
            avg: round(avg, 2),
            hour: hour as i32,
            day: world.day.sample(r) as i32,
            online,
            card_present,
        }
    }
}

/// Where, relative to the cardholder's home (world.py's draw_place).
struct Place {
    foreign: bool,
    currency_mismatch: bool,
    home_km: f64,
    last_km: f64,
}

impl Place {
    fn draw(r: &mut StdRng, attack: bool, online: bool) -> Self {
        let foreign = r.random_bool(match (attack, online) {
            (true, _) => 0.35,
            (false, true) => 0.10,
            (false, false) => 0.03,
        });
        let currency_mismatch = r.random_bool(if foreign { 0.70 } else { 0.004 });
        let mut home_km = if foreign {
            lognormal(r, 3000f64.ln(), 0.6)
        } else {
            lognormal(r, 8f64.ln(), 1.1)
        };
        if attack && !foreign && r.random_bool(0.5) {
            home_km = lognormal(r, 600f64.ln(), 1.0);
        }
        let last_km = if attack && r.random_bool(0.5) {
            lognormal(r, 900f64.ln(), 0.9) // impossible travel
        } else {
            lognormal(r, 5f64.ln(), 1.2)
        };
        Self {
            foreign,
            currency_mismatch,
            home_km: round(home_km, 2),
            last_km: round(last_km, 2),
        }
    }
}

/// The card's recent use, its age and the risk signals an upstream system
/// attaches (world.py's draw_history). The 1 h and 24 h windows end with
/// this transaction and count it.
struct History {
    seconds_since_last: i64,
    count_1h: i32,
    count_24h: i32,
    sum_24h: f64,
    distinct_merchants: i32,
    failed_attempts: i32,
    account_age: i32,
    card_age: i32,
    device_risk: f64,
    ip_risk: f64,
    chargebacks: i32,
}

impl History {
    fn draw(r: &mut StdRng, attack: bool, amount: f64, avg: f64) -> Self {
        let pick = |attacked: f64, ordinary: f64| if attack { attacked } else { ordinary };
        let seconds = if attack {
            lognormal(r, 240f64.ln(), 1.1)
        } else {
            lognormal(r, 15_000f64.ln(), 1.3)
        };
        let count_1h = 1 + poisson(r, pick(3.0, 0.35));
        let count_24h = count_1h + poisson(r, pick(4.0, 3.2));
        let earlier = count_24h - 1;
        let prior = if earlier > 0 {
            Gamma::new(f64::from(earlier), 1.0).map_or(0.0, |d| d.sample(r))
        } else {
            0.0
        };
        let distinct = Binomial::new(earlier as u64, pick(0.85, 0.65)).map_or(0, |d| d.sample(r));
        let failed_attempts = poisson(r, pick(1.6, 0.06));
        let mut account_age = lognormal(r, 1500f64.ln(), 0.8).clamp(1.0, 12_000.0) as i32;
        if attack && r.random_bool(0.30) {
            account_age = r.random_range(1..=90); // a new account
        }
        let mut card_age = account_age.min(r.random_range(1..=1460));
        if attack && r.random_bool(0.40) {
            card_age = account_age.min(r.random_range(1..=45)); // a new card
        }
        let device_risk = if attack && r.random_bool(0.65) {
            beta(r, 5.0, 2.5)
        } else {
            beta(r, 1.3, 14.0)
        };
        let ip_risk = if attack && r.random_bool(0.55) {
            beta(r, 4.0, 2.5)
        } else {
            beta(r, 1.2, 16.0)
        };
        Self {
            seconds_since_last: seconds.max(5.0) as i64,
            count_1h,
            count_24h,
            sum_24h: round(amount + avg * prior, 2),
            distinct_merchants: 1 + distinct as i32,
            failed_attempts,
            account_age,
            card_age,
            device_risk: round(device_risk, 4),
            ip_risk: round(ip_risk, 4),
            chargebacks: poisson(r, pick(0.25, 0.03)),
        }
    }
}

// The distributions' parameters are constants; the fallbacks only keep a
// typo in one from stopping the generator.
fn beta(r: &mut StdRng, a: f64, b: f64) -> f64 {
    Beta::new(a, b).map_or(0.1, |d| d.sample(r))
}

/// A beta with this mean (clamped to 0.01..0.95) and concentration k.
fn beta_mean(r: &mut StdRng, mean: f64, k: f64) -> f64 {
    let mean = mean.clamp(0.01, 0.95);
    beta(r, mean * k, (1.0 - mean) * k)
}

fn lognormal(r: &mut StdRng, mu: f64, sigma: f64) -> f64 {
    LogNormal::new(mu, sigma).map_or(mu.exp(), |d| d.sample(r))
}

fn poisson(r: &mut StdRng, l: f64) -> i32 {
    Poisson::new(l).map_or(0, |d| d.sample(r) as i32)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORLD_PY: &str = include_str!("../../../models/world.py");

    /// The numbers of world.py's `NAME = [...]` list.
    fn python_list(name: &str) -> Vec<f64> {
        let start = WORLD_PY
            .find(&format!("\n{name} = ["))
            .unwrap_or_else(|| panic!("world.py has no {name}"));
        let body = &WORLD_PY[start..];
        let body = &body[body.find('[').unwrap() + 1..body.find(']').unwrap()];
        body.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn the_tables_are_world_py_s() {
        for m in &MCCS {
            let row = format!(
                "({}, \"{}\", {}, {}, {}, {}, {}),",
                m.code, m.name, m.weight, m.lo, m.hi, m.online, m.risk
            );
            assert!(WORLD_PY.contains(&row), "world.py's MCCS lacks {row}");
        }
        let start = WORLD_PY.find("\nMCCS = [").expect("world.py has MCCS");
        let block = &WORLD_PY[start..start + WORLD_PY[start..].find("\n]").unwrap()];
        assert_eq!(block.matches("\n    (").count(), MCCS.len(), "MCCS rows");
        assert_eq!(python_list("HOURS"), HOURS);
        assert_eq!(python_list("ATTACK_HOURS"), ATTACK_HOURS);
        assert_eq!(python_list("DAYS"), DAYS);
        for line in [
            format!("\nATTACK_RATE = {ATTACK_RATE}\n"),
            format!("\nTAIL_SHARE, TAIL_ALPHA = {TAIL_SHARE}, {TAIL_ALPHA} "),
            format!("\nAVG_MEDIAN = {AVG_MEDIAN} "),
        ] {
            assert!(WORLD_PY.contains(&line), "world.py lacks {line:?}");
        }
    }

    fn factory(seed: u64) -> EventFactory {
        let (keyring, _) = Keyring::generate("k").unwrap();
        EventFactory::new(std::sync::Arc::new(keyring), Format::Avro, "t", seed)
    }

    fn without_time(fields: Vec<(String, AvroValue)>) -> Vec<(String, AvroValue)> {
        fields
            .into_iter()
            .filter(|(k, _)| k != "event_time")
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_events_in_schema_v1_order() {
        let (mut a, mut b) = (factory(5), factory(5));
        let schema = Schema::parse_str(SCHEMA_V1).unwrap();
        let apache_avro::Schema::Record(record) = &schema else {
            panic!("v1 is a record")
        };
        let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        for i in 0..200 {
            let id = format!("e-{i}");
            let fields = a.fields(&id, "c");
            let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, names);
            encode_avro(&schema, fields.clone(), INPUT_SCHEMA_ID).unwrap();
            assert_eq!(without_time(fields), without_time(b.fields(&id, "c")));
        }
    }

    #[test]
    fn the_world_has_real_world_values() {
        let world = World::new();
        let mut r = StdRng::seed_from_u64(3);
        let txns: Vec<Txn> = (0..20_000).map(|_| Txn::draw(&mut r, &world)).collect();
        let share = |f: &dyn Fn(&Txn) -> bool| {
            txns.iter().filter(|t| f(t)).count() as f64 / txns.len() as f64
        };
        assert!(
            txns.iter()
                .all(|t| MCCS.iter().any(|m| m.code == t.purchase.mcc))
        );
        assert!(txns.iter().all(|t| {
            let h = &t.history;
            h.count_1h >= 1 && h.count_24h >= h.count_1h && h.distinct_merchants <= h.count_24h
        }));
        assert!(
            txns.iter()
                .all(|t| t.history.card_age <= t.history.account_age)
        );
        let mut amounts: Vec<f64> = txns.iter().map(|t| t.purchase.amount).collect();
        amounts.sort_by(f64::total_cmp);
        let median = amounts[amounts.len() / 2];
        assert!((25.0..60.0).contains(&median), "median amount {median}");
        assert!(amounts[amounts.len() * 999 / 1000] > 10.0 * median);
        let foreign = share(&|t| t.place.foreign);
        assert!((0.03..0.09).contains(&foreign), "foreign {foreign}");
        let night = share(&|t| t.purchase.hour <= 5);
        assert!((0.03..0.07).contains(&night), "night {night}");
        let risky = share(&|t| t.history.device_risk > 0.5);
        assert!((0.003..0.02).contains(&risky), "device risk > 0.5: {risky}");
    }
}
