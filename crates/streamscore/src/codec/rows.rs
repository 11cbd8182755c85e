//! Plaintext to feature row: the compiled plan of the record's writer schema
//! where there is one, else decoded fields (`InputDecoder`) through the
//! feature plan, as JSON always goes.

use std::collections::{BTreeMap, HashMap};

use super::plan::{RecordPlan, Unsupported};
use super::{DecodeError, Format, InputDecoder, confluent_unframe};
use crate::features::{FeatureError, FeaturePlan, FeatureRows};
use crate::item::EventMeta;

/// Why a plaintext gives no row.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum RowError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Features(#[from] FeatureError),
}

pub(crate) struct RowDecoder {
    decoder: InputDecoder,
    features: FeaturePlan,
    plans: HashMap<u32, RecordPlan>,
}

impl RowDecoder {
    pub(crate) fn new(decoder: InputDecoder, features: FeaturePlan) -> Self {
        let (plans, _) = compile(&decoder, &features);
        Self {
            decoder,
            features,
            plans,
        }
    }

    pub(crate) fn width(&self) -> usize {
        self.features.width()
    }

    /// Appends the record's features to `row` (left unchanged on error) and returns its identity.
    pub(crate) fn decode(
        &self,
        plaintext: &[u8],
        rows: &mut FeatureRows,
    ) -> Result<EventMeta, RowError> {
        if self.decoder.format() == Format::Avro
            && let Some((id, datum)) = confluent_unframe(plaintext)
        {
            if let Some(plan) = self.plans.get(&id) {
                return plan.run(datum, self.features.fields(), &mut rows.numbers);
            }
            if let Some((writers, reader)) = self.decoder.avro_schemas()
                && !writers.contains_key(&id)
                && let Some(registry) = self.decoder.registry()
            {
                // A registry's schema: its plan is compiled once, when fetched.
                let features = &self.features;
                let writer = registry
                    .get(id, &|writer| compile_one(writer, reader, features).ok())
                    .map_err(DecodeError::Registry)?;
                if let Some(plan) = &writer.plan {
                    return plan.run(datum, features.fields(), &mut rows.numbers);
                }
                let fields = self.decoder.decode_datum(&writer.schema, datum)?;
                return Ok(self.features.extract(&fields, rows)?);
            }
        }
        let fields = self.decoder.decode(plaintext)?;
        Ok(self.features.extract(&fields, rows)?)
    }
}

/// The compiled plan of one writer schema, or why it stays on apache-avro's path.
fn compile_one(
    writer: &apache_avro::Schema,
    reader: &apache_avro::Schema,
    features: &FeaturePlan,
) -> Result<RecordPlan, Unsupported> {
    // The compiled plan writes numbers only; a model with string
    // features decodes through apache-avro's values.
    if features.text_width() > 0 {
        return Err(Unsupported(
            "the model has string features, which the compiled decoder does not read".into(),
        ));
    }
    RecordPlan::compile(writer, reader, features.fields())
}

/// The writer schema ids that stay on the apache-avro path, and why.
pub(crate) fn fallbacks(
    decoder: &InputDecoder,
    features: &FeaturePlan,
) -> BTreeMap<u32, Unsupported> {
    compile(decoder, features).1
}

fn compile(
    decoder: &InputDecoder,
    features: &FeaturePlan,
) -> (HashMap<u32, RecordPlan>, BTreeMap<u32, Unsupported>) {
    let mut plans = HashMap::new();
    let mut fallbacks = BTreeMap::new();
    if let Some((writers, reader)) = decoder.avro_schemas() {
        for (&id, writer) in writers {
            match compile_one(writer, reader, features) {
                Ok(plan) => {
                    plans.insert(id, plan);
                }
                Err(why) => {
                    fallbacks.insert(id, why);
                }
            }
        }
    }
    (plans, fallbacks)
}
