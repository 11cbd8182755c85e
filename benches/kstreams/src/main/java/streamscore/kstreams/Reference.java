package streamscore.kstreams;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Schema;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

/**
 * The Kafka Streams reference: reads streamscore's encrypted input topic and
 * writes streamscore's score records, exactly once (exactly_once_v2).
 *
 * <pre>
 * java -jar streamscore-kstreams-reference.jar --bootstrap HOST:PORT --input TOPIC --output TOPIC
 *      --keyring FILE --model models/fraud_mlp.card.json --schemas schemas
 *      [--dead-letters TOPIC] [--expect N] [--application-id ID] [--threads 2]
 *      [--commit-interval-ms 100] [--writer-schema ID=FILE]... [--reader-schema FILE]
 *      [--score-schema FILE] [--score-schema-id 101] [--threshold X] [--property KEY=VALUE]...
 * </pre>
 *
 * Prints {@code kstreams-reference: RUNNING ...} once the streams state is
 * RUNNING; stops cleanly (last transaction committed) on SIGTERM/SIGINT, or by
 * itself once {@code --expect N} records have been processed.
 */
public final class Reference {
    static final String PREFIX = "kstreams-reference: ";

    private Reference() {}

    public static void main(String[] args) throws Exception {
        Options o;
        try {
            o = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println(PREFIX + e.getMessage());
            System.err.println(PREFIX + "usage: see scripts/kstreams-reference --help");
            System.exit(2);
            return;
        }
        System.exit(run(o));
    }

    static int run(Options o) throws Exception {
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean(false);
        Model model = new Model(o.card, o.threshold);
        Job job = new Job(Envelope.loadKeyring(o.keyring), o.writers, o.reader, o.scoreSchema, o.scoreSchemaId,
            model, o.deadLetters, o.expect, done);

        Topology topology = new Topology();
        topology.addSource("input", new ByteArrayDeserializer(), new ByteArrayDeserializer(), o.input);
        topology.addProcessor("score", () -> new ScoringProcessor(job), "input");
        topology.addSink(ScoringProcessor.SCORES, o.output, new ByteArraySerializer(), new ByteArraySerializer(),
            "score");
        if (o.deadLetters != null) {
            topology.addSink(ScoringProcessor.DEAD_LETTERS, o.deadLetters, new ByteArraySerializer(),
                new ByteArraySerializer(), "score");
        }

        KafkaStreams streams = new KafkaStreams(topology, config(o));
        long started = java.lang.management.ManagementFactory.getRuntimeMXBean().getStartTime();
        AtomicBoolean ready = new AtomicBoolean(false);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && ready.compareAndSet(false, true)) {
                System.out.printf("%sRUNNING after %.2f s (application.id %s, %d stream threads, input %s)%n",
                    PREFIX, (System.currentTimeMillis() - started) / 1000.0, o.applicationId, o.threads, o.input);
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.PENDING_ERROR) {
                failed.set(true);
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println(PREFIX + "stream thread failed: " + e);
            failed.set(true);
            done.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM/SIGINT: close (committing the open transaction) and exit 0,
        // rather than the JVM's 143 after shutdown hooks.
        for (String signal : new String[] {"TERM", "INT"}) {
            sun.misc.Signal.handle(new sun.misc.Signal(signal), s -> done.countDown());
        }
        streams.start();
        done.await();
        boolean closed = streams.close(Duration.ofSeconds(60));
        streams.cleanUp();
        model.close();
        System.out.printf("%sstopped%s: %d scored, %d dead-lettered (as processed; the topics hold what was committed)%n",
            PREFIX, closed ? "" : " (close timed out)", job.scored.sum(), job.deadLettered.sum());
        return failed.get() || !closed ? 1 : 0;
    }

    static Properties config(Options o) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.applicationId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.toString(o.commitIntervalMs));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.toString(o.threads));
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class.getName());
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class.getName());
        p.put(StreamsConfig.STATE_DIR_CONFIG,
            Path.of(System.getProperty("java.io.tmpdir"), "kstreams-reference").toString());
        // A backlog waiting before the start is read from its beginning.
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        p.putAll(o.properties);
        return p;
    }

    /** The command line. */
    static final class Options {
        String bootstrap;
        String input;
        String output;
        String deadLetters;
        Path keyring;
        Path card;
        Path schemasDir;
        Map<Integer, Schema> writers = new TreeMap<>();
        Schema reader;
        Schema scoreSchema;
        int scoreSchemaId = 101;
        Double threshold;
        String applicationId = "kstreams-reference-" + System.currentTimeMillis();
        int threads = 2;
        long commitIntervalMs = 100;
        long expect;
        Map<String, String> properties = new TreeMap<>();

        private static final Pattern VERSIONED = Pattern.compile("card_transaction\\.v(\\d+)\\.avsc");

        static Options parse(String[] args) throws IOException {
            Options o = new Options();
            Map<Integer, Path> writerFiles = new TreeMap<>();
            Path readerFile = null;
            Path scoreFile = null;
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException(flag + " needs a value");
                }
                String v = args[++i];
                switch (flag) {
                    case "--bootstrap" -> o.bootstrap = v;
                    case "--input" -> o.input = v;
                    case "--output" -> o.output = v;
                    case "--dead-letters" -> o.deadLetters = v.isEmpty() ? null : v;
                    case "--keyring" -> o.keyring = Path.of(v);
                    case "--model" -> o.card = Path.of(v);
                    case "--schemas" -> o.schemasDir = Path.of(v);
                    case "--writer-schema" -> {
                        String[] kv = split(flag, v);
                        writerFiles.put(Integer.parseUnsignedInt(kv[0]), Path.of(kv[1]));
                    }
                    case "--reader-schema" -> readerFile = Path.of(v);
                    case "--score-schema" -> scoreFile = Path.of(v);
                    case "--score-schema-id" -> o.scoreSchemaId = Integer.parseUnsignedInt(v);
                    case "--threshold" -> o.threshold = Double.valueOf(v);
                    case "--application-id" -> o.applicationId = v;
                    case "--threads" -> o.threads = Integer.parseInt(v);
                    case "--commit-interval-ms" -> o.commitIntervalMs = Long.parseLong(v);
                    case "--expect" -> o.expect = Long.parseLong(v);
                    case "--property" -> {
                        String[] kv = split(flag, v);
                        o.properties.put(kv[0], kv[1]);
                    }
                    default -> throw new IllegalArgumentException("unknown option " + flag);
                }
            }
            for (String[] required : new String[][] {{"--bootstrap", o.bootstrap}, {"--input", o.input},
                    {"--output", o.output}, {"--keyring", str(o.keyring)}, {"--model", str(o.card)}}) {
                if (required[1] == null) {
                    throw new IllegalArgumentException(required[0] + " is required");
                }
            }
            // --schemas DIR: the ids of config/default.toml (card_transaction.vN.avsc is
            // id N), the newest version as the reader, score_result.v1.avsc for scores.
            if (o.schemasDir != null) {
                Map<Integer, Path> found = versioned(o.schemasDir);
                if (writerFiles.isEmpty()) {
                    writerFiles.putAll(found);
                }
                if (readerFile == null && !found.isEmpty()) {
                    readerFile = found.get(((TreeMap<Integer, Path>) found).lastKey());
                }
                if (scoreFile == null) {
                    scoreFile = o.schemasDir.resolve("score_result.v1.avsc");
                }
            }
            if (writerFiles.isEmpty() || readerFile == null || scoreFile == null) {
                throw new IllegalArgumentException(
                    "schemas: give --schemas DIR, or --writer-schema ID=FILE, --reader-schema and --score-schema");
            }
            for (Map.Entry<Integer, Path> w : writerFiles.entrySet()) {
                o.writers.put(w.getKey(), new Schema.Parser().parse(Files.readString(w.getValue())));
            }
            o.reader = new Schema.Parser().parse(Files.readString(readerFile));
            o.scoreSchema = new Schema.Parser().parse(Files.readString(scoreFile));
            if (o.threads < 1) {
                throw new IllegalArgumentException("--threads must be at least 1");
            }
            return o;
        }

        private static String str(Path p) {
            return p == null ? null : p.toString();
        }

        private static String[] split(String flag, String v) {
            int eq = v.indexOf('=');
            if (eq < 1) {
                throw new IllegalArgumentException(flag + " takes KEY=VALUE, got " + v);
            }
            return new String[] {v.substring(0, eq), v.substring(eq + 1)};
        }

        static Map<Integer, Path> versioned(Path dir) throws IOException {
            Map<Integer, Path> out = new TreeMap<>();
            try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "card_transaction.v*.avsc")) {
                for (Path f : files) {
                    Matcher m = VERSIONED.matcher(f.getFileName().toString());
                    if (m.matches()) {
                        out.put(Integer.parseInt(m.group(1)), f);
                    }
                }
            }
            return out;
        }
    }
}
