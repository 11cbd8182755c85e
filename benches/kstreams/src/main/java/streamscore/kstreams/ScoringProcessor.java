package streamscore.kstreams;

import ai.onnxruntime.OrtException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * The whole job, one record at a time: open the envelope, decode the Avro
 * event, build the feature row, one ONNX Runtime call, forward the score to
 * the score sink (or the record to the dead-letter sink). Kafka Streams
 * commits the input offsets and the outputs in one transaction
 * (exactly_once_v2) every commit.interval.ms.
 *
 * <p>No batching across records: a processor that held records back for a
 * batched ONNX call would have their input offsets committed (the commit
 * covers every record handed to process()) before their scores were written,
 * so a crash would lose them. Per-record processing is what keeps exactly-once
 * here, and it is how Kafka Streams users write this job.
 */
final class ScoringProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String SCORES = "scores";
    static final String DEAD_LETTERS = "dead-letters";

    private final Job job;
    private final Envelope envelope;
    private final EventCodec codec;
    private final ScoreWriter writer;
    private final float[] row;
    private final FloatBuffer tensor;
    private ProcessorContext<byte[], byte[]> context;

    ScoringProcessor(Job job) {
        this.job = job;
        this.envelope = new Envelope(job.keys);
        this.codec = new EventCodec(job.writers, job.reader, job.model.featureFields);
        this.writer = new ScoreWriter(job.scoreSchema, job.scoreSchemaId, job.model);
        this.row = new float[job.model.width()];
        this.tensor = ByteBuffer.allocateDirect(4 * row.length).order(ByteOrder.nativeOrder()).asFloatBuffer();
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        RecordMetadata source = context.recordMetadata().orElseThrow();
        try {
            byte[] plaintext = envelope.open(record.key(), record.value());
            EventCodec.Event event = codec.decode(plaintext, row);
            tensor.clear();
            tensor.put(row);
            float score;
            try {
                score = job.model.score(tensor);
            } catch (OrtException e) {
                // Not the record's fault: stop, as streamscore does.
                throw new IllegalStateException("ONNX Runtime failed: " + e.getMessage(), e);
            }
            long scoredAt = System.currentTimeMillis();
            byte[] value = writer.encode(event, record.key(), score, source.topic(), source.partition(),
                source.offset(), scoredAt);
            // A new Record: no input headers carried, timestamp = when it was scored.
            context.forward(new Record<>(record.key(), value, scoredAt), SCORES);
            job.scored.increment();
        } catch (Rejected rejected) {
            job.deadLettered.increment();
            if (job.deadLetterTopic != null) {
                RecordHeaders headers = new RecordHeaders();
                header(headers, "streamscore.reason", rejected.reason);
                header(headers, "streamscore.message", rejected.getMessage());
                header(headers, "streamscore.source.topic", source.topic());
                header(headers, "streamscore.source.partition", Integer.toString(source.partition()));
                header(headers, "streamscore.source.offset", Long.toString(source.offset()));
                context.forward(new Record<>(record.key(), record.value(), System.currentTimeMillis(), headers),
                    DEAD_LETTERS);
            }
        }
        job.processed();
    }

    private static void header(RecordHeaders headers, String key, String value) {
        headers.add(key, value.getBytes(StandardCharsets.UTF_8));
    }
}
