//! `streamscore-tools produce`: the upstream side in a box. JSON lines in; each one
//! encoded as the configured input format, sealed with the keyring's active
//! key (the record key bound in), and published to the input topic.

use std::io::BufRead;

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;

use crate::events::OutRecord;
use streamscore::Format;
use streamscore::Keyring;
use streamscore::confluent_frame;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("line {line}: not a JSON object: {message}")]
    NotJson { line: usize, message: String },
    #[error("line {line}: field {field:?} (the record key) is missing or not a string")]
    NoKey { line: usize, field: String },
    #[error("line {line}: does not fit the Avro schema: {message}")]
    Schema { line: usize, message: String },
    /// The OS error is in the message, not a `source` (a printed chain would say it twice).
    #[error("cannot read the input: {0}")]
    Read(std::io::Error),
}

impl From<std::io::Error> for ProduceError {
    fn from(e: std::io::Error) -> Self {
        ProduceError::Read(e)
    }
}

/// A line that cannot be encoded stops `produce` before the first record is
/// published, so none of the lines before it were sent either: said so, or
/// they would read as lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}; nothing was sent (every line is encoded before the first is published)")]
pub struct NothingSent(pub ProduceError);

/// How each line becomes an envelope.
pub struct LineEncoder<'a> {
    pub format: Format,
    /// Writer schema and its Confluent id, for Avro.
    pub avro: Option<(&'a Schema, u32)>,
    pub keyring: &'a Keyring,
    /// JSON field whose string value is the Kafka record key.
    pub key_field: &'a str,
}

impl LineEncoder<'_> {
    pub fn encode(&self, line_no: usize, line: &str) -> Result<OutRecord, ProduceError> {
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| ProduceError::NotJson {
                line: line_no,
                message: e.to_string(),
            })?;
        let object = json.as_object().ok_or_else(|| ProduceError::NotJson {
            line: line_no,
            message: "a JSON value that is not an object".into(),
        })?;
        let key = object
            .get(self.key_field)
            .and_then(|v| v.as_str())
            .ok_or_else(|| ProduceError::NoKey {
                line: line_no,
                field: self.key_field.to_owned(),
            })?
            .as_bytes()
            .to_vec();
        let event_id = object
            .get("event_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let plaintext = match (self.format, self.avro) {
            (Format::Avro, Some((schema, id))) => {
                let schema_err = |message: String| ProduceError::Schema {
                    line: line_no,
                    message,
                };
                let value = AvroValue::from(json.clone())
                    .resolve(schema)
                    .map_err(|e| schema_err(e.to_string()))?;
                let datum = apache_avro::to_avro_datum(schema, value)
                    .map_err(|e| schema_err(e.to_string()))?;
                confluent_frame(id, &datum)
            }
            _ => line.trim().as_bytes().to_vec(),
        };
        Ok(OutRecord {
            value: Some(self.keyring.seal(&plaintext, Some(&key))),
            key,
            event_id,
            bad: None,
        })
    }

    /// Encodes every non-blank line, in order, before any is published.
    pub fn encode_all(&self, input: impl BufRead) -> Result<Vec<OutRecord>, NothingSent> {
        let mut records = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line.map_err(|e| NothingSent(e.into()))?;
            if line.trim().is_empty() {
                continue;
            }
            records.push(self.encode(i + 1, &line).map_err(NothingSent)?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamscore::{Fields, InputDecoder};

    fn schema() -> Schema {
        Schema::parse_str(include_str!("../../../schemas/card_transaction.v2.avsc")).unwrap()
    }

    const LINE: &str = r#"{"event_id":"e-1","card_id":"card-7","event_time":1790000000000,"amount":12.5,"amount_avg_30d":40.0,"amount_to_avg_ratio":0.31,"merchant_category":5,"merchant_risk":0.1,"hour_of_day":13,"day_of_week":2,"is_online":true,"card_present":false,"distance_from_home_km":3.2,"distance_from_last_txn_km":1.0,"seconds_since_last_txn":3600,"txn_count_1h":0,"txn_count_24h":3,"amount_sum_24h":80.0,"distinct_merchants_24h":2,"failed_attempts_24h":0,"account_age_days":900,"card_age_days":400,"is_foreign":false,"currency_mismatch":false,"device_risk":0.05,"ip_risk":0.07,"chargebacks_1y":0}"#;

    fn encoder<'a>(schema: &'a Schema, keyring: &'a Keyring) -> LineEncoder<'a> {
        LineEncoder {
            format: Format::Avro,
            avro: Some((schema, 2)),
            keyring,
            key_field: "card_id",
        }
    }

    #[test]
    fn json_line_becomes_an_avro_envelope_the_processor_opens() {
        let (keyring, _) = Keyring::generate("k").unwrap();
        let s = schema();
        let enc = encoder(&s, &keyring);
        let rec = enc.encode(1, LINE).unwrap();
        assert_eq!(rec.key, b"card-7");
        let plain = keyring
            .open(rec.value.as_deref().unwrap(), Some(b"card-7"))
            .unwrap();
        let decoder = InputDecoder::avro([(2, s.clone())].into(), s);
        let Fields::Avro(fields) = decoder.decode(&plain).unwrap() else {
            panic!("not Avro")
        };
        assert!(
            fields
                .iter()
                .any(|(k, v)| k == "amount" && *v == AvroValue::Double(12.5))
        );
    }

    #[test]
    fn lines_that_do_not_fit_say_which_line_and_why() {
        let (keyring, _) = Keyring::generate("k").unwrap();
        let s = schema();
        let enc = encoder(&s, &keyring);
        assert!(matches!(
            enc.encode(3, "not json"),
            Err(ProduceError::NotJson { line: 3, .. })
        ));
        assert!(matches!(
            enc.encode(4, r#"{"event_id":"x"}"#),
            Err(ProduceError::NoKey { line: 4, .. })
        ));
        let err = enc
            .encode(5, r#"{"card_id":"c","event_id":"x"}"#)
            .unwrap_err();
        assert!(matches!(err, ProduceError::Schema { line: 5, .. }), "{err}");
    }

    #[test]
    fn a_bad_line_stops_everything_and_says_nothing_was_sent() {
        let (keyring, _) = Keyring::generate("k").unwrap();
        let s = schema();
        let enc = encoder(&s, &keyring);
        let input = format!("{LINE}\n\n{LINE}\nnot json\n{LINE}\n");
        let err = enc.encode_all(input.as_bytes()).unwrap_err();
        assert!(
            matches!(err.0, ProduceError::NotJson { line: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("nothing was sent"), "{err}");
        let fine = enc
            .encode_all(format!("{LINE}\n\n{LINE}\n").as_bytes())
            .unwrap();
        assert_eq!(fine.len(), 2);
    }
}
