package streamscore.kstreams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import javax.crypto.spec.SecretKeySpec;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.junit.jupiter.api.Test;

class ReferenceTest {
    private static final Path ROOT = Path.of("../..");
    private static final HexFormat HEX = HexFormat.of();

    /** docs/wire-format.md §1.3. */
    private static final String VECTOR = "0107323032362d3131a0a1a2a3a4a5a6a7a8a9aaab9d3a195b20a576e00b01a5e9250ca5bd04"
        + "c32b3da3956e4efd6349f311df573be34469cad2b5766862e8d1f3395b862e98bca16534";

    private static Envelope vectorEnvelope() {
        byte[] key = HEX.parseHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        return new Envelope(Map.of("2026-11", new SecretKeySpec(key, "AES")));
    }

    @Test
    void opensTheWireFormatTestVector() throws Exception {
        byte[] plaintext = vectorEnvelope().open("card-00042".getBytes(StandardCharsets.US_ASCII), HEX.parseHex(VECTOR));
        assertEquals("{\"event_id\":\"vector-1\",\"amount\":12.5}", new String(plaintext, StandardCharsets.US_ASCII));
    }

    @Test
    void refusesWhatStreamscoreRefuses() {
        Envelope e = vectorEnvelope();
        byte[] good = HEX.parseHex(VECTOR);
        byte[] key = "card-00042".getBytes(StandardCharsets.US_ASCII);
        assertEquals("decrypt_failed", assertThrows(Rejected.class, () -> e.open("card-00043".getBytes(), good)).reason);
        byte[] tampered = good.clone();
        tampered[tampered.length - 1] ^= 1;
        assertEquals("decrypt_failed", assertThrows(Rejected.class, () -> e.open(key, tampered)).reason);
        byte[] version = good.clone();
        version[0] = 2;
        assertEquals("malformed_envelope", assertThrows(Rejected.class, () -> e.open(key, version)).reason);
        byte[] otherId = good.clone();
        otherId[8] = '2';
        assertEquals("unknown_key", assertThrows(Rejected.class, () -> e.open(key, otherId)).reason);
        byte[] shortOne = java.util.Arrays.copyOf(good, 2 + 7 + 12 + 15);
        assertEquals("malformed_envelope", assertThrows(Rejected.class, () -> e.open(key, shortOne)).reason);
        assertEquals("empty_value", assertThrows(Rejected.class, () -> e.open(key, null)).reason);
    }

    @Test
    void readsTheKeyringJson() throws Exception {
        String json = "{\"active\": \"k1\", \"keys\": {\"k1\": \"" + "A".repeat(43) + "=\"}}";
        assertEquals(32, Envelope.parseKeyring(json).get("k1").getEncoded().length);
        assertThrows(java.io.IOException.class, () -> Envelope.parseKeyring("{\"active\":\"k\",\"keys\":{\"k\":\"AAAA\"}}"));
    }

    @Test
    void aV1EventResolvesAgainstTheV2ReaderIntoTheCardsOrder() throws Exception {
        Map<Integer, Path> versions = Reference.Options.versioned(ROOT.resolve("schemas"));
        Schema v1 = new Schema.Parser().parse(Files.readString(versions.get(1)));
        Schema v2 = new Schema.Parser().parse(Files.readString(versions.get(2)));
        List<String> fields = new ArrayList<>();
        JsonNode card = new ObjectMapper().readTree(Files.readString(ROOT.resolve("models/fraud_mlp.card.json")));
        card.get("features").forEach(f -> fields.add(f.get("field").asText()));

        GenericRecord r = new GenericData.Record(v1);
        float[] expected = new float[fields.size()];
        for (Schema.Field f : v1.getFields()) {
            switch (f.schema().getType()) {
                case STRING -> r.put(f.name(), f.name().equals("event_id") ? "e-1" : "card-1");
                case LONG -> r.put(f.name(), f.name().equals("event_time") ? 1_790_000_000_000L : 3L + f.pos());
                case INT -> r.put(f.name(), f.pos());
                case DOUBLE -> r.put(f.name(), f.pos() + 0.1);
                case BOOLEAN -> r.put(f.name(), f.pos() % 2 == 0);
                default -> throw new AssertionError(f);
            }
            int i = fields.indexOf(f.name());
            if (i >= 0) {
                Object v = r.get(f.name());
                expected[i] = v instanceof Boolean b ? (b ? 1f : 0f) : (float) ((Number) v).doubleValue();
            }
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(new byte[] {0, 0, 0, 0, 1});
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(v1).write(r, enc);
        enc.flush();

        EventCodec codec = new EventCodec(Map.of(1, v1, 2, v2), v2, fields);
        float[] row = new float[fields.size()];
        EventCodec.Event event = codec.decode(out.toByteArray(), row);
        assertEquals("e-1", event.eventId);
        assertEquals(1_790_000_000_000L, event.eventTime);
        assertArrayEquals(expected, row);

        byte[] unknown = out.toByteArray();
        unknown[4] = 9;
        assertEquals("unknown_schema", assertThrows(Rejected.class, () -> codec.decode(unknown, row)).reason);
        byte[] trailing = java.util.Arrays.copyOf(out.toByteArray(), out.size() + 1);
        assertEquals("decode_failed", assertThrows(Rejected.class, () -> codec.decode(trailing, row)).reason);
    }
}
