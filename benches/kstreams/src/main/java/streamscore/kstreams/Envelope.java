package streamscore.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.util.Base64;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Opens the encrypted envelope of docs/wire-format.md §1.1 with javax.crypto:
 *
 * <pre>0x01 | n (1..=64) | key id (n bytes, UTF-8) | nonce (12) | AES-256-GCM ciphertext + tag (16)</pre>
 *
 * The associated data is the first 2+n bytes followed by the record key. One
 * instance per processor (a {@link Cipher} is not thread-safe); the keys are
 * shared.
 */
final class Envelope {
    static final int VERSION = 0x01;
    static final int MAX_KEY_ID_LEN = 64;
    static final int NONCE_LEN = 12;
    static final int TAG_LEN = 16;

    private final Map<String, SecretKey> keys;
    private final Cipher cipher;

    Envelope(Map<String, SecretKey> keys) {
        this.keys = keys;
        try {
            this.cipher = Cipher.getInstance("AES/GCM/NoPadding");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES/GCM is not available in this JVM", e);
        }
    }

    /** The keyring JSON {"active": ID, "keys": {ID: BASE64 of 32 bytes}} (§2). */
    static Map<String, SecretKey> loadKeyring(Path file) throws IOException {
        return parseKeyring(Files.readString(file));
    }

    static Map<String, SecretKey> parseKeyring(String json) throws IOException {
        JsonNode root = new ObjectMapper().readTree(json);
        JsonNode keys = root == null ? null : root.get("keys");
        if (keys == null || !keys.isObject() || keys.size() == 0) {
            throw new IOException("keyring has no \"keys\" object");
        }
        Map<String, SecretKey> out = new HashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = keys.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            byte[] bytes;
            try {
                bytes = Base64.getDecoder().decode(e.getValue().asText().trim());
            } catch (IllegalArgumentException bad) {
                bytes = new byte[0];
            }
            if (bytes.length != 32) {
                throw new IOException("keyring key " + e.getKey() + " is not base64 of 32 bytes");
            }
            out.put(e.getKey(), new SecretKeySpec(bytes, "AES"));
        }
        return Map.copyOf(out);
    }

    /** The plaintext, or the reason streamscore would dead-letter the record. */
    byte[] open(byte[] recordKey, byte[] value) throws Rejected {
        if (value == null || value.length == 0) {
            throw new Rejected("empty_value", "record has no value");
        }
        if ((value[0] & 0xff) != VERSION) {
            throw new Rejected("malformed_envelope",
                String.format("unsupported envelope version 0x%02x (expected 0x01)", value[0] & 0xff));
        }
        if (value.length < 2) {
            throw new Rejected("malformed_envelope", "envelope is 1 bytes, shorter than its header and tag");
        }
        int n = value[1] & 0xff;
        if (n < 1 || n > MAX_KEY_ID_LEN) {
            throw new Rejected("malformed_envelope", "key id length " + n + " is outside 1..=64");
        }
        int header = 2 + n;
        if (value.length < header + NONCE_LEN + TAG_LEN) {
            throw new Rejected("malformed_envelope",
                "envelope is " + value.length + " bytes, shorter than its header and tag");
        }
        String keyId;
        try {
            keyId = StandardCharsets.UTF_8.newDecoder()
                .decode(java.nio.ByteBuffer.wrap(value, 2, n)).toString();
        } catch (CharacterCodingException e) {
            throw new Rejected("malformed_envelope", "key id is not UTF-8");
        }
        SecretKey key = keys.get(keyId);
        if (key == null) {
            throw new Rejected("unknown_key", "unknown key id \"" + keyId + "\"");
        }
        try {
            cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_LEN * 8, value, header, NONCE_LEN));
            cipher.updateAAD(value, 0, header);
            if (recordKey != null) {
                cipher.updateAAD(recordKey);
            }
            int start = header + NONCE_LEN;
            return cipher.doFinal(value, start, value.length - start);
        } catch (AEADBadTagException e) {
            throw new Rejected("decrypt_failed",
                "authentication failed (tampered payload, wrong key or wrong record key)");
        } catch (GeneralSecurityException e) {
            throw new Rejected("decrypt_failed", e.getClass().getSimpleName());
        }
    }
}
