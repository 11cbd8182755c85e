package streamscore.kstreams;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtLoggingLevel;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The model card (models/fraud_mlp.card.json) and one ONNX Runtime session on
 * the .onnx beside it, with the options streamscore uses (all graph
 * optimisations, one intra-op and one inter-op thread, no spinning). The
 * session is shared by every stream thread (OrtSession.run is thread-safe);
 * each call scores one record, shape [1, F].
 */
final class Model implements AutoCloseable {
    final String name;
    final String version;
    final String sha256;
    final double threshold;
    final List<String> featureFields;
    final String inputName;
    final String outputName;
    final int positiveColumn;
    final OrtEnvironment env;
    private final OrtSession session;
    private final Set<String> outputs;
    private final long[] shape;

    Model(Path card, Double thresholdOverride) throws IOException, OrtException {
        JsonNode c = new ObjectMapper().readTree(Files.readString(card));
        name = c.get("name").asText();
        version = c.get("version").asText();
        sha256 = c.get("sha256").asText();
        threshold = thresholdOverride != null ? thresholdOverride : c.get("threshold").asDouble();
        inputName = c.get("input").get("name").asText();
        outputName = c.get("output").get("name").asText();
        positiveColumn = c.get("output").path("positive_class_column").asInt(1);
        featureFields = new ArrayList<>();
        for (JsonNode f : c.get("features")) {
            featureFields.add(f.get("field").asText());
        }
        Path onnx = card.toAbsolutePath().getParent().resolve(c.get("file").asText());
        String actual = sha256Of(onnx);
        if (!actual.equalsIgnoreCase(sha256)) {
            throw new IOException(onnx + " has SHA-256 " + actual + ", the card says " + sha256);
        }
        env = OrtEnvironment.getEnvironment(OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING, "kstreams-reference");
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions()) {
            options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
            options.setIntraOpNumThreads(1);
            options.setInterOpNumThreads(1);
            options.addConfigEntry("session.intra_op.allow_spinning", "0");
            options.addConfigEntry("session.inter_op.allow_spinning", "0");
            session = env.createSession(onnx.toString(), options);
        }
        outputs = Set.of(outputName);
        shape = new long[] {1, featureFields.size()};
    }

    int width() {
        return featureFields.size();
    }

    /** One ONNX Runtime call for one row; `row` is a direct buffer of width() floats. */
    float score(FloatBuffer row) throws OrtException {
        row.rewind();
        try (OnnxTensor input = OnnxTensor.createTensor(env, row, shape);
             OrtSession.Result result = session.run(Map.of(inputName, input), outputs)) {
            OnnxTensor probabilities = (OnnxTensor) result.get(0);
            return probabilities.getFloatBuffer().get(positiveColumn);
        }
    }

    private static String sha256Of(Path file) throws IOException {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(file)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    public void close() throws OrtException {
        session.close();
    }
}
