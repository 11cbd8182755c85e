//! Key rotation without a restart: the keyring file is reloaded when it
//! changes (checked every `interval`, following symlinks, so a Kubernetes
//! Secret update is seen) or on SIGHUP. A keyring that fails to load leaves
//! the current one in place, is counted, and says why, never with key
//! material. What is loaded is exported for Prometheus, so an operator can
//! see every replica hold a new key before producers switch to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::envelope::{Keyring, SharedKeyring};

pub const KEYRING_KEYS: &str = "streamscore_keyring_keys";
pub const KEYRING_RELOADS: &str = "streamscore_keyring_reloads_total";
pub const KEYRING_RELOAD_FAILURES: &str = "streamscore_keyring_reload_failures_total";

/// The keyring the pipeline reads, with the reload counts behind its metrics.
pub struct KeyringStatus {
    keyring: SharedKeyring,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl KeyringStatus {
    pub fn new(keyring: SharedKeyring) -> Self {
        Self {
            keyring,
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    fn keyring(&self) -> &SharedKeyring {
        &self.keyring
    }

    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Loads the file into the shared keyring now; on failure keeps the
    /// current keys. Returns whether the file was loaded.
    pub fn reload(&self, path: &Path) -> bool {
        match Keyring::from_file(path) {
            Ok(keyring) => {
                tracing::info!(
                    path = %path.display(),
                    key_ids = %keyring.key_ids().join(","),
                    active = %keyring.active_id(),
                    "keyring reloaded"
                );
                self.keyring.store(Arc::new(keyring));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let current = self.keyring.load();
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    key_ids = %current.key_ids().join(","),
                    active = %current.active_id(),
                    "keyring reload failed; keeping the current keys"
                );
                false
            }
        }
    }

    /// The keyring metrics in the Prometheus text format, rendered at scrape
    /// time so a removed key's series disappears with the key (a recorder's
    /// gauge could only be set to 0, and stale series would mislead the
    /// "every replica holds it" check). Key ids are not secret: every
    /// envelope carries its key id in clear.
    pub fn render_prometheus(&self) -> String {
        let keyring = self.keyring.load();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {KEYRING_KEYS} Keys in the loaded keyring, 1 per key; active=\"true\" marks the key this ring's producers seal with.\n# TYPE {KEYRING_KEYS} gauge"
        );
        for id in keyring.key_ids() {
            let _ = writeln!(
                out,
                "{KEYRING_KEYS}{{key_id=\"{}\",active=\"{}\"}} 1",
                label_value(id),
                id == keyring.active_id()
            );
        }
        let _ = writeln!(
            out,
            "# HELP {KEYRING_RELOADS} Keyring file reloads that replaced the keys.\n# TYPE {KEYRING_RELOADS} counter\n{KEYRING_RELOADS} {}",
            self.reloads()
        );
        let _ = writeln!(
            out,
            "# HELP {KEYRING_RELOAD_FAILURES} Keyring file reloads that failed (unreadable or invalid); the previous keys stayed.\n# TYPE {KEYRING_RELOAD_FAILURES} counter\n{KEYRING_RELOAD_FAILURES} {}",
            self.failures()
        );
        out
    }
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// When to read the watched file. A change is read once the file's
/// modification time has held for one whole interval: a writer that is not
/// atomic (an operator's `cp`, an editor saving in place) is then not caught
/// half-way, which would count a failed reload and page someone for nothing.
/// A Secret update (an atomic symlink swap) waits one interval more. SIGHUP
/// reads at once: the operator says the file is ready.
/// Generic over what is compared: the keyring's modification time, or the
/// model card's and its model's (`pipeline::model_swap::CardWatch`).
pub(crate) struct ChangeGate<T = Option<SystemTime>> {
    seen: T,
    /// The changed version waiting to hold for an interval.
    pending: Option<T>,
}

impl<T: PartialEq + Clone> ChangeGate<T> {
    pub(crate) fn new(seen: T) -> Self {
        Self {
            seen,
            pending: None,
        }
    }

    /// Whether to load the file now, given its modification time at this
    /// poll and whether SIGHUP asked.
    pub(crate) fn should_load(&mut self, now: T, asked: bool) -> bool {
        if asked {
            self.seen = now;
            self.pending = None;
            return true;
        }
        if now == self.seen {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.seen = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }

    /// Forgets a change waiting to hold (the file is gone for a moment).
    pub(crate) fn reset(&mut self) {
        self.pending = None;
    }
}

/// The file's version as the watcher compares it: its modification time.
/// Take it *before* the first load and hand it to [`watch`]: a change made
/// between the load and the watch then still differs from it and is loaded.
pub fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `path` on a thread until `stop` is set; `hup` is set by a SIGHUP
/// handler; `loaded` is [`modified`] as it was before the keys in `status`
/// were read from the file.
pub fn watch(
    path: PathBuf,
    status: Arc<KeyringStatus>,
    loaded: Option<SystemTime>,
    interval: Duration,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut gate = ChangeGate::new(loaded);
    std::thread::Builder::new()
        .name("keyring-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let asked = hup.swap(false, Ordering::Relaxed);
                if gate.should_load(modified(&path), asked) {
                    status.reload(&path);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::share;

    /// A file caught half-written by a non-atomic writer is not read until
    /// its modification time holds; SIGHUP reads at once.
    #[test]
    fn a_change_is_read_once_it_has_held_for_an_interval() {
        let t = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let mut gate = ChangeGate::new(t(0));
        assert!(!gate.should_load(t(0), false), "unchanged");
        assert!(!gate.should_load(t(1), false), "half written: wait");
        assert!(!gate.should_load(t(2), false), "still being written: wait");
        assert!(gate.should_load(t(2), false), "held for an interval: read");
        assert!(!gate.should_load(t(2), false), "read already");
        assert!(gate.should_load(t(2), true), "SIGHUP reads at once");
        assert!(!gate.should_load(None, false), "removed: wait");
        assert!(
            gate.should_load(None, false),
            "still removed: read, and fail"
        );
    }

    #[test]
    fn reload_logs_key_ids_and_active_as_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (first, json) = Keyring::generate("2026-10").unwrap();
        let two = Keyring::add_json(&json, "2026-11").unwrap();
        std::fs::write(&path, &two).unwrap();
        let status = KeyringStatus::new(share(Arc::new(first)));
        let log = crate::telemetry::logging::json_log_of(|| {
            status.reload(&path);
        });
        let line: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|l: &serde_json::Value| l["fields"]["message"] == "keyring reloaded")
            .unwrap_or_else(|| panic!("no reload line in {log}"));
        assert_eq!(line["fields"]["message"], "keyring reloaded", "{log}");
        assert_eq!(line["fields"]["key_ids"], "2026-10,2026-11", "{log}");
        assert_eq!(line["fields"]["active"], "2026-10", "{log}");
        assert!(!log.contains("Keyring"), "Debug text in {log}");
    }

    /// The `streamscore_keyring_keys` series: (key id, active) pairs.
    fn loaded(status: &KeyringStatus) -> Vec<(String, bool)> {
        status
            .render_prometheus()
            .lines()
            .filter_map(|l| l.strip_prefix("streamscore_keyring_keys{key_id=\""))
            .map(|rest| {
                let (id, rest) = rest.split_once('"').unwrap();
                (id.to_owned(), rest.starts_with(",active=\"true\"} 1"))
            })
            .collect()
    }

    fn counter(status: &KeyringStatus, name: &str) -> u64 {
        let text = status.render_prometheus();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    struct Watched {
        path: PathBuf,
        status: Arc<KeyringStatus>,
        hup: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        handle: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Watched {
        fn start(json: &str) -> Self {
            Self::start_after(json, |_| {})
        }

        /// Loads `json` from the file, runs `meanwhile` on the file, then
        /// starts watching: as `run` loads, then watches.
        fn start_after(json: &str, meanwhile: impl FnOnce(&Path)) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keyring.json");
            std::fs::write(&path, json).unwrap();
            let loaded = modified(&path);
            let status = Arc::new(KeyringStatus::new(share(Arc::new(
                Keyring::from_file(&path).unwrap(),
            ))));
            meanwhile(&path);
            let (hup, stop) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let handle = watch(
                path.clone(),
                status.clone(),
                loaded,
                Duration::from_millis(10),
                hup.clone(),
                stop.clone(),
            )
            .unwrap();
            Self {
                path,
                status,
                hup,
                stop,
                handle: Some(handle),
                _dir: dir,
            }
        }

        /// Writes the file as the `keys` commands and a Secret update do
        /// (a temporary file in the same folder, renamed over it: the
        /// watcher never sees half a file), with a modification time of its
        /// own (mtimes can be coarse: two writes in one tick would look
        /// alike), so the watcher tries it exactly once; no SIGHUP flag, which
        /// would be a second try of the same file.
        fn replace(&self, text: &str) {
            replace_file(&self.path, text);
        }

        /// Replaces the file with a valid keyring and waits until the
        /// watcher has loaded it.
        fn write(&self, text: &str) {
            let reloads = self.status.reloads();
            self.replace(text);
            self.wait_for("a reload", || self.status.reloads() > reloads);
        }

        /// Replaces the file with one that cannot load and waits until the
        /// watcher has counted the failure.
        fn write_bad(&self, text: &str) {
            let failures = self.status.failures();
            self.replace(text);
            self.wait_for("a failure", || self.status.failures() > failures);
        }

        fn wait_for(&self, what: &str, done: impl Fn() -> bool) {
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(
                    std::time::Instant::now() < give_up,
                    "the watcher never counted {what}: {} reloads, {} failures",
                    self.status.reloads(),
                    self.status.failures()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    /// The rotation procedure as the processor sees it: add (both keys
    /// loaded, the old one still active), activate, remove the old key.
    #[test]
    fn rotation_steps_are_reported_by_the_keyring_metrics() {
        let (_, v1) = Keyring::generate("2026-10").unwrap();
        let w = Watched::start(&v1);
        assert_eq!(loaded(&w.status), [("2026-10".into(), true)]);
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 0);
        assert_eq!(counter(&w.status, KEYRING_RELOAD_FAILURES), 0);

        let v2 = Keyring::add_json(&v1, "2026-11").unwrap();
        w.write(&v2);
        assert_eq!(
            loaded(&w.status),
            [("2026-10".into(), true), ("2026-11".into(), false)]
        );
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 1);
        // A producer that switched early is already readable.
        let early = Keyring::from_json(&Keyring::activate_json(&v2, "2026-11").unwrap())
            .unwrap()
            .seal(b"early", None);
        assert_eq!(
            w.status.keyring().load().open(&early, None).unwrap(),
            b"early"
        );

        let v3 = Keyring::activate_json(&v2, "2026-11").unwrap();
        w.write(&v3);
        assert_eq!(
            loaded(&w.status),
            [("2026-10".into(), false), ("2026-11".into(), true)]
        );

        let v4 = Keyring::remove_json(&v3, "2026-10").unwrap();
        w.write(&v4);
        assert_eq!(loaded(&w.status), [("2026-11".into(), true)]);
        assert!(
            !w.status.render_prometheus().contains("2026-10"),
            "a removed key's series must disappear"
        );
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 3);
        assert_eq!(counter(&w.status, KEYRING_RELOAD_FAILURES), 0);
    }

    /// A broken or vanished file keeps the keys, counts a failure, and
    /// warns without key material.
    #[test]
    fn a_failed_reload_keeps_the_keys_and_is_counted() {
        let (_, v1) = Keyring::generate("a").unwrap();
        let v2 = Keyring::add_json(&v1, "b").unwrap();
        let w = Watched::start(&v2);
        w.write_bad("{ not a keyring");
        w.write_bad(
            r#"{"active":"c","keys":{"b":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}"#,
        );
        assert_eq!(counter(&w.status, KEYRING_RELOAD_FAILURES), 2);
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 0);
        assert_eq!(loaded(&w.status), [("a".into(), true), ("b".into(), false)]);

        // The warning, taken on this thread (the log capture is per thread).
        let (dir, status) = (
            tempfile::tempdir().unwrap(),
            KeyringStatus::new(w.status.keyring().clone()),
        );
        let broken = dir.path().join("keyring.json");
        std::fs::write(
            &broken,
            v2.replace("\"active\": \"a\"", "\"active\": \"zz\""),
        )
        .unwrap();
        let log = crate::telemetry::logging::json_log_of(|| assert!(!status.reload(&broken)));
        assert!(
            log.contains("keyring reload failed; keeping the current keys"),
            "{log}"
        );
        assert!(log.contains("not among its keys"), "{log}");
        assert!(log.contains("\"level\":\"WARN\""), "{log}");
        for key in serde_json::from_str::<serde_json::Value>(&v2).unwrap()["keys"]
            .as_object()
            .unwrap()
            .values()
        {
            assert!(
                !log.contains(key.as_str().unwrap()),
                "key material in {log}"
            );
        }

        // Unreadable (gone) counts too; the file coming back is loaded.
        let failures = w.status.failures();
        std::fs::remove_file(&w.path).unwrap();
        w.wait_for("a failure", || w.status.failures() > failures);
        assert_eq!(w.status.keyring().load().key_ids(), ["a", "b"]);
        w.write(&v2);
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 1);
        assert_eq!(counter(&w.status, KEYRING_RELOAD_FAILURES), 3);
    }

    /// See `Watched::replace`.
    fn replace_file(path: &Path, text: &str) {
        static TICK: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        let tick = TICK.fetch_add(1, Ordering::Relaxed) + 1;
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + tick))
            .unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// A rotation that lands between the first load and the watcher's start
    /// is loaded, not taken as the version already held.
    #[test]
    fn a_change_between_the_first_load_and_the_watch_is_loaded() {
        let (_, v1) = Keyring::generate("a").unwrap();
        let v2 = Keyring::add_json(&v1, "b").unwrap();
        let w = Watched::start_after(&v1, |path| replace_file(path, &v2));
        w.wait_for("a reload", || w.status.reloads() > 0);
        assert_eq!(loaded(&w.status), [("a".into(), true), ("b".into(), false)]);
    }

    /// SIGHUP reloads a file whose modification time did not change.
    #[test]
    fn sighup_reloads_without_a_changed_mtime() {
        let (_, v1) = Keyring::generate("a").unwrap();
        let w = Watched::start(&v1);
        let mtime = modified(&w.path).unwrap();
        let v2 = Keyring::add_json(&v1, "b").unwrap();
        let file = std::fs::File::options().write(true).open(&w.path).unwrap();
        // In place, and the time put back: only the flag can tell.
        std::fs::write(&w.path, &v2).unwrap();
        file.set_modified(mtime).unwrap();
        w.hup.store(true, Ordering::Relaxed);
        w.wait_for("a reload", || w.status.reloads() > 0);
        assert_eq!(loaded(&w.status), [("a".into(), true), ("b".into(), false)]);
        assert_eq!(counter(&w.status, KEYRING_RELOADS), 1);
        assert_eq!(counter(&w.status, KEYRING_RELOAD_FAILURES), 0);
    }

    #[test]
    fn key_ids_are_escaped_as_label_values() {
        let ring = Keyring::from_keys([("a\"b\\c", [1; 32])], "a\"b\\c").unwrap();
        let status = KeyringStatus::new(share(Arc::new(ring)));
        assert!(
            status
                .render_prometheus()
                .contains(r#"streamscore_keyring_keys{key_id="a\"b\\c",active="true"} 1"#),
            "{}",
            status.render_prometheus()
        );
    }
}
