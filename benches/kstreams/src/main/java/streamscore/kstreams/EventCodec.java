package streamscore.kstreams;

import java.io.IOException;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Decodes the plaintext: Confluent framing (0x00, 4-byte big-endian schema
 * id), the writer schema chosen by that id, resolved against one reader
 * schema (docs/wire-format.md §1.2), with org.apache.avro's generic reader.
 * Then builds the feature row in the model card's order. One instance per
 * processor (the readers and decoder are reused, not shared).
 */
final class EventCodec {
    private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
    private final int[] featurePositions;
    private final String[] featureNames;
    private final int eventIdPosition;
    private final int eventTimePosition;
    private BinaryDecoder decoder;

    /** What the score record needs from the event, beside its features. */
    static final class Event {
        String eventId;
        long eventTime;
    }

    EventCodec(Map<Integer, Schema> writers, Schema reader, List<String> featureFields) {
        for (Map.Entry<Integer, Schema> w : writers.entrySet()) {
            readers.put(w.getKey(), new GenericDatumReader<>(w.getValue(), reader));
        }
        featureNames = featureFields.toArray(new String[0]);
        featurePositions = new int[featureNames.length];
        for (int i = 0; i < featureNames.length; i++) {
            featurePositions[i] = position(reader, featureNames[i]);
        }
        eventIdPosition = position(reader, "event_id");
        eventTimePosition = position(reader, "event_time");
    }

    private static int position(Schema reader, String name) {
        Schema.Field f = reader.getField(name);
        return f == null ? -1 : f.pos();
    }

    /** Decodes `plaintext` and writes its features into `row` (positions 0..F-1). */
    Event decode(byte[] plaintext, float[] row) throws Rejected {
        if (plaintext.length < 5 || plaintext[0] != 0) {
            throw new Rejected("decode_failed",
                "value is not Confluent-framed Avro (expected magic byte 0 and a 4-byte schema id)");
        }
        int id = ((plaintext[1] & 0xff) << 24) | ((plaintext[2] & 0xff) << 16)
            | ((plaintext[3] & 0xff) << 8) | (plaintext[4] & 0xff);
        GenericDatumReader<GenericRecord> reader = readers.get(id);
        if (reader == null) {
            throw new Rejected("unknown_schema", "unknown Avro schema id " + Integer.toUnsignedString(id));
        }
        GenericRecord record;
        try {
            decoder = DecoderFactory.get().binaryDecoder(plaintext, 5, plaintext.length - 5, decoder);
            record = reader.read(null, decoder);
            if (!decoder.isEnd()) {
                throw new Rejected("decode_failed", "Avro datum has trailing bytes");
            }
        } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException e) {
            throw new Rejected("decode_failed", "Avro decoding failed: " + e.getMessage());
        }
        return features(record, row);
    }

    private Event features(GenericRecord record, float[] row) throws Rejected {
        Event event = new Event();
        Object id = eventIdPosition < 0 ? null : record.get(eventIdPosition);
        if (!(id instanceof CharSequence)) {
            throw new Rejected("invalid_features", id == null ? "missing field event_id" : "event_id is not a string");
        }
        event.eventId = id.toString();
        Object time = eventTimePosition < 0 ? null : record.get(eventTimePosition);
        if (!(time instanceof Long || time instanceof Integer)) {
            throw new Rejected("invalid_features", "missing or non-integer field event_time");
        }
        event.eventTime = ((Number) time).longValue();
        for (int i = 0; i < featureNames.length; i++) {
            Object v = featurePositions[i] < 0 ? null : record.get(featurePositions[i]);
            double d;
            if (v instanceof Number) {
                d = ((Number) v).doubleValue();
            } else if (v instanceof Boolean) {
                d = ((Boolean) v) ? 1.0 : 0.0;
            } else if (v == null) {
                throw new Rejected("invalid_features", "missing feature field " + featureNames[i]);
            } else {
                throw new Rejected("invalid_features", "feature field " + featureNames[i] + " is not numeric");
            }
            // As streamscore: the value as a double, rounded to the nearest float32.
            float f = (float) d;
            if (!Float.isFinite(f)) {
                throw new Rejected("invalid_features", "feature field " + featureNames[i] + " is not finite as float32");
            }
            row[i] = f;
        }
        return event;
    }
}
