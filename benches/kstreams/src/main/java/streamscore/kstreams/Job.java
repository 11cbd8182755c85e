package streamscore.kstreams;

import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.LongAdder;
import javax.crypto.SecretKey;
import org.apache.avro.Schema;

/** What every processor shares: keys, schemas, the model, the counters. */
final class Job {
    final Map<String, SecretKey> keys;
    final Map<Integer, Schema> writers;
    final Schema reader;
    final Schema scoreSchema;
    final int scoreSchemaId;
    final Model model;
    /** Null: failures are counted, not written. */
    final String deadLetterTopic;
    /** Records handed to the processor before the process stops by itself; 0: never. */
    final long expect;
    final LongAdder scored = new LongAdder();
    final LongAdder deadLettered = new LongAdder();
    final CountDownLatch done;
    private final LongAdder processed = new LongAdder();

    Job(Map<String, SecretKey> keys, Map<Integer, Schema> writers, Schema reader, Schema scoreSchema,
        int scoreSchemaId, Model model, String deadLetterTopic, long expect, CountDownLatch done) {
        this.keys = keys;
        this.writers = writers;
        this.reader = reader;
        this.scoreSchema = scoreSchema;
        this.scoreSchemaId = scoreSchemaId;
        this.model = model;
        this.deadLetterTopic = deadLetterTopic;
        this.expect = expect;
        this.done = done;
    }

    void processed() {
        processed.increment();
        if (expect > 0 && processed.sum() >= expect) {
            done.countDown();
        }
    }
}
