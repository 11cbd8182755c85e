//! The encrypted envelope that upstream producers put in each Kafka record
//! value (docs/wire-format.md), and the keyring that opens it.
//!
//! ```text
//! 0x01 | n (1..=64) | key id (n bytes, UTF-8) | nonce (12) | AES-256-GCM ciphertext + tag (16)
//! ```
//! The associated data is the header (version, n, key id) followed by the
//! record key, so a payload cannot be moved to another record key and a key
//! id cannot be swapped without the tag failing.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

pub(crate) const VERSION: u8 = 0x01;
pub(crate) const MAX_KEY_ID_LEN: usize = 64;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const KEY_LEN: usize = 32;

/// Why an envelope could not be opened. Messages never contain key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope is {len} bytes, shorter than its header and tag")]
    Truncated { len: usize },
    #[error("unsupported envelope version 0x{0:02x} (expected 0x01)")]
    UnsupportedVersion(u8),
    #[error("key id length {0} is outside 1..=64")]
    BadKeyIdLength(usize),
    #[error("key id is not UTF-8")]
    KeyIdNotUtf8,
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("authentication failed (tampered payload, wrong key or wrong record key)")]
    AuthenticationFailed,
}

/// Why a keyring could not be loaded. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The OS error is in the message, not a `source`: with both, a
    /// printed chain says it twice.
    #[error("cannot read keyring file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "keyring is not valid JSON of the form {{\"active\": ID, \"keys\": {{ID: BASE64}}}}: {0}"
    )]
    Format(String),
    #[error("keyring key {id:?} is not base64 of exactly 32 bytes")]
    BadKey { id: String },
    #[error("keyring key id {id:?} must be 1..=64 bytes of UTF-8")]
    BadKeyId { id: String },
    #[error("keyring active key {0:?} is not among its keys")]
    NoActiveKey(String),
    #[error("keyring has no keys")]
    Empty,
    #[error("keyring already has a key with id {0:?}")]
    DuplicateId(String),
    #[error(
        "keyring has no key with id {0:?}: add it first (streamscore keys add), and activate it once every processor reports it loaded"
    )]
    NotInRing(String),
    #[error("key {0:?} is the active key, which producers seal with: activate another key first")]
    RemoveActive(String),
    #[error("environment variable {0} holding the keyring is not set")]
    EnvMissing(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    active: String,
    keys: HashMap<String, String>,
}

/// The keyring as the pipeline holds it: swapped whole on reload, read
/// lock-free per record.
pub type SharedKeyring = Arc<ArcSwap<Keyring>>;

pub fn share(keyring: Arc<Keyring>) -> SharedKeyring {
    Arc::new(ArcSwap::new(keyring))
}

/// Keys by id. Several keys may be live at once so producers can rotate
/// without downtime; `active` is the one this process encrypts with.
pub struct Keyring {
    keys: HashMap<String, LessSafeKey>,
    active: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from raw 32-byte keys.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = (&'a str, [u8; KEY_LEN])>,
        active: &str,
    ) -> Result<Self, KeyringError> {
        let mut map = HashMap::new();
        for (id, bytes) in keys {
            if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
                return Err(KeyringError::BadKeyId { id: id.to_owned() });
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| KeyringError::BadKey { id: id.to_owned() })?;
            map.insert(id.to_owned(), LessSafeKey::new(unbound));
        }
        if map.is_empty() {
            return Err(KeyringError::Empty);
        }
        if !map.contains_key(active) {
            return Err(KeyringError::NoActiveKey(active.to_owned()));
        }
        Ok(Self {
            keys: map,
            active: active.to_owned(),
        })
    }

    /// Parses the keyring JSON: `{"active": "k1", "keys": {"k1": "<base64>"}}`.
    pub fn from_json(text: &str) -> Result<Self, KeyringError> {
        // serde_json's message names the position, never the content, so it is safe to show.
        let file: KeyringFile =
            serde_json::from_str(text).map_err(|e| KeyringError::Format(e.to_string()))?;
        let mut decoded = Vec::with_capacity(file.keys.len());
        for (id, b64) in &file.keys {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
                .ok_or_else(|| KeyringError::BadKey { id: id.clone() })?;
            decoded.push((id.as_str(), bytes));
        }
        Self::from_keys(decoded, &file.active)
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyringError::Read {
            path: path.display().to_string(),
            error,
        })?;
        warn_if_shared(path, "keyring file");
        Self::from_json(&text)
    }

    pub fn from_env(var: &str) -> Result<Self, KeyringError> {
        let text = std::env::var(var).map_err(|_| KeyringError::EnvMissing(var.to_owned()))?;
        Self::from_json(&text)
    }

    /// A fresh random keyring with one key, for the demo and tests.
    pub fn generate(id: &str) -> Result<(Self, String), KeyringError> {
        let key = random_key();
        let json = serde_json::json!({
            "active": id,
            "keys": { id: base64::engine::general_purpose::STANDARD.encode(key) },
        })
        .to_string();
        Ok((Self::from_keys([(id, key)], id)?, json))
    }

    /// Rotation step one: returns the keyring JSON `text` with a fresh key
    /// `id` added, NOT active. Processors open records sealed with any key
    /// they hold, so the key must reach every processor before any producer
    /// seals with it; [`Keyring::activate_json`] is the separate step two.
    pub fn add_json(text: &str, id: &str) -> Result<String, KeyringError> {
        edit_json(text, |file| {
            if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
                return Err(KeyringError::BadKeyId { id: id.to_owned() });
            }
            if file.keys.contains_key(id) {
                return Err(KeyringError::DuplicateId(id.to_owned()));
            }
            file.keys.insert(
                id.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(random_key()),
            );
            Ok(())
        })
    }

    /// Rotation step two: makes `id`, already in the ring, the key producers
    /// seal with. Refuses an id not in the ring: activating a key no
    /// processor holds is exactly what dead-letters records as `unknown_key`.
    pub fn activate_json(text: &str, id: &str) -> Result<String, KeyringError> {
        edit_json(text, |file| {
            if !file.keys.contains_key(id) {
                return Err(KeyringError::NotInRing(id.to_owned()));
            }
            id.clone_into(&mut file.active);
            Ok(())
        })
    }

    /// Retires `id`. Refuses the active key (producers seal with it) and an
    /// id not in the ring (a typo would otherwise look like success).
    pub fn remove_json(text: &str, id: &str) -> Result<String, KeyringError> {
        edit_json(text, |file| {
            if file.active == id {
                return Err(KeyringError::RemoveActive(id.to_owned()));
            }
            if file.keys.remove(id).is_none() {
                return Err(KeyringError::NotInRing(id.to_owned()));
            }
            Ok(())
        })
    }

    /// The ids of the loaded keys, sorted.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Seals `plaintext` with the active key into a version-1 envelope.
    pub fn seal(&self, plaintext: &[u8], record_key: Option<&[u8]>) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom only fails if the OS RNG is unusable, which would make any key material unsafe too.
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the operating system's random number generator failed");
        self.seal_with_nonce(plaintext, record_key, nonce)
    }

    /// Seals with a caller-chosen nonce: only for test vectors. A nonce must never repeat under one key.
    pub fn seal_with_nonce(
        &self,
        plaintext: &[u8],
        record_key: Option<&[u8]>,
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        let id = self.active.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        let header_len = out.len();
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        let aad = associated_data(&out[..header_len], record_key);
        let key = &self.keys[&self.active];
        // Sealing only fails for plaintexts beyond AES-GCM's 64 GiB limit.
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .expect("plaintext exceeds the AES-GCM size limit");
        out.extend_from_slice(&body);
        out
    }

    /// Opens an envelope, checking its tag against the header and `record_key`.
    pub fn open(&self, value: &[u8], record_key: Option<&[u8]>) -> Result<Vec<u8>, EnvelopeError> {
        let header = parse_header(value)?;
        let key = self
            .keys
            .get(header.key_id)
            .ok_or_else(|| EnvelopeError::UnknownKey(header.key_id.to_owned()))?;
        let nonce_end = header.len + NONCE_LEN;
        let nonce = Nonce::try_assume_unique_for_key(&value[header.len..nonce_end])
            .map_err(|_| EnvelopeError::Truncated { len: value.len() })?;
        let mut body = value[nonce_end..].to_vec();
        let aad = associated_data(&value[..header.len], record_key);
        let plain_len = key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| EnvelopeError::AuthenticationFailed)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// Applies `change` to the keyring JSON `text` and returns the new JSON,
/// keys sorted by id. The result is parsed again first: a keyring the
/// processor could not load is never written.
fn edit_json(
    text: &str,
    change: impl FnOnce(&mut KeyringFile) -> Result<(), KeyringError>,
) -> Result<String, KeyringError> {
    let mut file: KeyringFile =
        serde_json::from_str(text).map_err(|e| KeyringError::Format(e.to_string()))?;
    change(&mut file)?;
    let mut keys: Vec<(&String, &String)> = file.keys.iter().collect();
    keys.sort();
    let keys: serde_json::Map<String, serde_json::Value> = keys
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let json = serde_json::json!({ "active": file.active, "keys": keys });
    let text =
        serde_json::to_string_pretty(&json).map_err(|e| KeyringError::Format(e.to_string()))?;
    Keyring::from_json(&text)?;
    Ok(text + "\n")
}

/// Keys readable by every user of the machine are as good as leaked. Group
/// read is left alone: it is how Kubernetes hands a Secret to a non-root
/// container (fsGroup), with the group owned by that pod alone.
pub(crate) fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "{what} is readable by every user; chmod 600 (or 640) it"
            );
        }
    }
}

struct Header<'a> {
    key_id: &'a str,
    /// Length of version + length byte + key id.
    len: usize,
}

fn parse_header(value: &[u8]) -> Result<Header<'_>, EnvelopeError> {
    let truncated = || EnvelopeError::Truncated { len: value.len() };
    let (&version, rest) = value.split_first().ok_or_else(truncated)?;
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let (&n, rest) = rest.split_first().ok_or_else(truncated)?;
    let n = usize::from(n);
    if n == 0 || n > MAX_KEY_ID_LEN {
        return Err(EnvelopeError::BadKeyIdLength(n));
    }
    if rest.len() < n + NONCE_LEN + TAG_LEN {
        return Err(truncated());
    }
    let key_id = std::str::from_utf8(&rest[..n]).map_err(|_| EnvelopeError::KeyIdNotUtf8)?;
    Ok(Header { key_id, len: 2 + n })
}

fn associated_data(header: &[u8], record_key: Option<&[u8]>) -> Vec<u8> {
    let key = record_key.unwrap_or_default();
    let mut aad = Vec::with_capacity(header.len() + key.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(key);
    aad
}

/// A new random 32-byte key.
pub fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .expect("the operating system's random number generator failed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(id: &str, byte: u8) -> Keyring {
        Keyring::from_keys([(id, [byte; KEY_LEN])], id).unwrap()
    }

    #[test]
    fn round_trip_binds_record_key() {
        let ring = ring_with("k1", 7);
        let sealed = ring.seal(b"hello", Some(b"card-1"));
        assert_eq!(ring.open(&sealed, Some(b"card-1")).unwrap(), b"hello");
        assert_eq!(
            ring.open(&sealed, Some(b"card-2")),
            Err(EnvelopeError::AuthenticationFailed)
        );
        assert_eq!(
            ring.open(&sealed, None),
            Err(EnvelopeError::AuthenticationFailed)
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let ring = ring_with("k1", 7);
        assert_ne!(ring.seal(b"x", None), ring.seal(b"x", None));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let ring = ring_with("k1", 7);
        let sealed = ring.seal(b"payload", Some(b"k"));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                ring.open(&bad, Some(b"k")).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn header_errors_are_named() {
        let ring = ring_with("k1", 7);
        assert_eq!(
            ring.open(&[], None),
            Err(EnvelopeError::Truncated { len: 0 })
        );
        assert_eq!(
            ring.open(&[2, 1, b'a'], None),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        assert_eq!(
            ring.open(&[1, 0], None),
            Err(EnvelopeError::BadKeyIdLength(0))
        );
        assert_eq!(
            ring.open(&[1, 65], None),
            Err(EnvelopeError::BadKeyIdLength(65))
        );
        assert_eq!(
            ring.open(&[1, 10, b'a', b'b'], None),
            Err(EnvelopeError::Truncated { len: 4 })
        );
        let other = ring_with("k2", 9).seal(b"x", None);
        assert_eq!(
            ring.open(&other, None),
            Err(EnvelopeError::UnknownKey("k2".into()))
        );
    }

    #[test]
    fn wrong_key_with_same_id_fails_authentication() {
        let sealed = ring_with("k1", 1).seal(b"x", None);
        assert_eq!(
            ring_with("k1", 2).open(&sealed, None),
            Err(EnvelopeError::AuthenticationFailed)
        );
    }

    /// The vector of docs/wire-format.md, computed with Python's `cryptography`
    /// (an implementation independent of ring).
    #[test]
    fn wire_format_test_vector() {
        let key: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8);
        let ring = Keyring::from_keys([("2026-11", key)], "2026-11").unwrap();
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let plaintext = br#"{"event_id":"vector-1","amount":12.5}"#;
        let expected = hex::decode(
            "0107323032362d3131a0a1a2a3a4a5a6a7a8a9aaab9d3a195b20a576e00b01a5e9250ca5bd04c32b3da3956e4efd6349\
             f311df573be34469cad2b5766862e8d1f3395b862e98bca16534",
        )
        .unwrap();
        let sealed = ring.seal_with_nonce(plaintext, Some(b"card-00042"), nonce);
        assert_eq!(hex::encode(&sealed), hex::encode(&expected));
        assert_eq!(
            ring.open(&expected, Some(b"card-00042")).unwrap(),
            plaintext
        );
    }

    fn sample() -> (Keyring, Vec<u8>) {
        let ring = ring_with("k1", 7);
        let sealed = ring.seal(b"payload", Some(b"key"));
        (ring, sealed)
    }

    #[test]
    fn truncated_envelope_is_malformed() {
        let (ring, sealed) = sample();
        for len in [1, 2, 4, 2 + 2 + NONCE_LEN, 2 + 2 + NONCE_LEN + TAG_LEN - 1] {
            let err = ring.open(&sealed[..len], Some(b"key")).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Truncated { .. }),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn wrong_version_byte_is_named() {
        let (ring, mut sealed) = sample();
        sealed[0] = 0x02;
        assert_eq!(
            ring.open(&sealed, Some(b"key")),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn key_id_length_past_the_end_is_truncated_not_a_panic() {
        let (ring, mut sealed) = sample();
        sealed[1] = 64;
        sealed.truncate(40);
        assert!(matches!(
            ring.open(&sealed, Some(b"key")),
            Err(EnvelopeError::Truncated { .. })
        ));
    }

    #[test]
    fn flipped_ciphertext_and_tag_bits_fail_authentication() {
        let (ring, sealed) = sample();
        let body_start = 2 + 2 + NONCE_LEN;
        let mut ciphertext_flip = sealed.clone();
        ciphertext_flip[body_start] ^= 0x80;
        let mut tag_flip = sealed.clone();
        let last = tag_flip.len() - 1;
        tag_flip[last] ^= 0x01;
        for bad in [ciphertext_flip, tag_flip] {
            assert_eq!(
                ring.open(&bad, Some(b"key")),
                Err(EnvelopeError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn record_key_swapped_fails_authentication() {
        let (ring, sealed) = sample();
        assert_eq!(
            ring.open(&sealed, Some(b"other")),
            Err(EnvelopeError::AuthenticationFailed)
        );
    }

    #[test]
    fn empty_value_is_truncated() {
        let (ring, _) = sample();
        assert_eq!(
            ring.open(&[], Some(b"key")),
            Err(EnvelopeError::Truncated { len: 0 })
        );
    }

    #[test]
    fn keyring_json_and_debug_hide_key_bytes() {
        let (ring, json) = Keyring::generate("2026-11").unwrap();
        let parsed = Keyring::from_json(&json).unwrap();
        let sealed = ring.seal(b"x", None);
        assert_eq!(parsed.open(&sealed, None).unwrap(), b"x");
        let parsed_json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let b64 = parsed_json["keys"]["2026-11"].as_str().unwrap().to_owned();
        assert_eq!(b64.len(), 44, "expected the base64 key in {json:?}");
        assert!(!format!("{parsed:?}").contains(&b64));
    }

    #[test]
    fn add_keeps_the_active_key_and_activate_switches_it() {
        let (old, json) = Keyring::generate("2026-10").unwrap();
        let sealed_before = old.seal(b"x", None);
        let added = Keyring::add_json(&json, "2026-11").unwrap();
        let ring = Keyring::from_json(&added).unwrap();
        assert_eq!(ring.active_id(), "2026-10");
        assert_eq!(ring.key_ids(), ["2026-10", "2026-11"]);
        assert!(matches!(
            Keyring::add_json(&added, "2026-11"),
            Err(KeyringError::DuplicateId(_))
        ));
        let activated = Keyring::activate_json(&added, "2026-11").unwrap();
        let ring = Keyring::from_json(&activated).unwrap();
        assert_eq!(ring.active_id(), "2026-11");
        assert_eq!(ring.open(&sealed_before, None).unwrap(), b"x");
        assert!(matches!(
            Keyring::activate_json(&added, "2026-12"),
            Err(KeyringError::NotInRing(_))
        ));
        assert!(matches!(
            Keyring::remove_json(&activated, "2026-11"),
            Err(KeyringError::RemoveActive(_))
        ));
        let removed = Keyring::remove_json(&activated, "2026-10").unwrap();
        assert_eq!(Keyring::from_json(&removed).unwrap().key_ids(), ["2026-11"]);
    }

    /// Between `add` and `activate` a producer may already seal with the new
    /// key (its own copy of the ring activated early, or an upstream team
    /// ahead of the processors' switch): the processor opens any key it
    /// holds, active or not.
    #[test]
    fn a_record_sealed_with_an_added_but_inactive_key_opens() {
        let (_, json) = Keyring::generate("2026-10").unwrap();
        let added = Keyring::add_json(&json, "2026-11").unwrap();
        let processor = Keyring::from_json(&added).unwrap();
        assert_eq!(processor.active_id(), "2026-10");
        let producer =
            Keyring::from_json(&Keyring::activate_json(&added, "2026-11").unwrap()).unwrap();
        let sealed = producer.seal(b"early", Some(b"card-7"));
        assert_eq!(&sealed[2..9], b"2026-11");
        assert_eq!(processor.open(&sealed, Some(b"card-7")).unwrap(), b"early");
    }

    #[test]
    fn keyring_errors_do_not_echo_keys() {
        let err = Keyring::from_json(r#"{"active":"a","keys":{"a":"c2VjcmV0"}}"#).unwrap_err();
        assert!(matches!(err, KeyringError::BadKey { .. }));
        assert!(!err.to_string().contains("c2VjcmV0"));
        let err = Keyring::from_json(
            r#"{"active":"b","keys":{"a":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, KeyringError::NoActiveKey(_)));
    }
}
