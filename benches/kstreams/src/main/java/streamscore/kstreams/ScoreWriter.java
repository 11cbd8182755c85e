package streamscore.kstreams;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;

/**
 * The score record streamscore writes (docs/wire-format.md §3):
 * streamscore.v1.ScoreResult in Avro, Confluent-framed with the configured
 * schema id. One instance per processor.
 */
final class ScoreWriter {
    private final Schema schema;
    private final GenericDatumWriter<GenericRecord> writer;
    private final byte[] frame;
    private final GenericData.EnumSymbol pass;
    private final GenericData.EnumSymbol flag;
    private final Model model;
    private BinaryEncoder encoder;

    ScoreWriter(Schema schema, int schemaId, Model model) {
        this.schema = schema;
        this.writer = new GenericDatumWriter<>(schema);
        this.frame = new byte[] {0, (byte) (schemaId >>> 24), (byte) (schemaId >>> 16), (byte) (schemaId >>> 8), (byte) schemaId};
        Schema decision = schema.getField("decision").schema();
        this.pass = new GenericData.EnumSymbol(decision, "PASS");
        this.flag = new GenericData.EnumSymbol(decision, "FLAG");
        this.model = model;
    }

    byte[] encode(EventCodec.Event event, byte[] recordKey, double score, String topic, int partition,
                  long offset, long scoredAt) {
        GenericRecord r = new GenericData.Record(schema);
        r.put("event_id", event.eventId);
        r.put("record_key", recordKey == null ? null : new String(recordKey, StandardCharsets.UTF_8));
        r.put("score", score);
        r.put("decision", score >= model.threshold ? flag : pass);
        r.put("threshold", model.threshold);
        r.put("model_name", model.name);
        r.put("model_version", model.version);
        r.put("model_sha256", model.sha256);
        r.put("source_topic", topic);
        r.put("source_partition", partition);
        r.put("source_offset", offset);
        r.put("event_time", event.eventTime);
        r.put("scored_at", scoredAt);
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        out.write(frame, 0, frame.length);
        try {
            encoder = EncoderFactory.get().binaryEncoder(out, encoder);
            writer.write(r, encoder);
            encoder.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
