//! Key rotation without a restart: the keyring file is reloaded when it
//! changes (checked every `interval`, following symlinks, so a Kubernetes
//! Secret update is seen) or on SIGHUP. A keyring that fails to load leaves
//! the current one in place and says why, never with key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::envelope::{Keyring, SharedKeyring};

/// Loads the file into `shared` now.
pub fn reload(path: &Path, shared: &SharedKeyring) -> bool {
    match Keyring::from_file(path) {
        Ok(keyring) => {
            tracing::info!(path = %path.display(), keys = ?keyring, "keyring reloaded");
            shared.store(Arc::new(keyring));
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "keyring reload failed; keeping the current keys");
            false
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `path` on a thread until `stop` is set; `hup` is set by a SIGHUP handler.
pub fn watch(
    path: PathBuf,
    shared: SharedKeyring,
    interval: Duration,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keyring-watch".into())
        .spawn(move || {
            let mut seen = modified(&path);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let now = modified(&path);
                let asked = hup.swap(false, Ordering::Relaxed);
                if asked || now != seen {
                    seen = now;
                    reload(&path, &shared);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::share;

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (first, json) = Keyring::generate("a").unwrap();
        std::fs::write(&path, &json).unwrap();
        let shared = share(Arc::new(first));
        let (hup, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let handle = watch(
            path.clone(),
            shared.clone(),
            Duration::from_millis(20),
            hup.clone(),
            stop.clone(),
        )
        .unwrap();

        let rotated = Keyring::rotate_json(&json, "b").unwrap();
        std::thread::sleep(Duration::from_millis(1100)); // a distinct mtime on coarse filesystems
        std::fs::write(&path, &rotated).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared.load().active_id() != "b" {
            assert!(
                std::time::Instant::now() < deadline,
                "rotation not picked up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        std::fs::write(&path, "{ not a keyring").unwrap();
        hup.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            shared.load().active_id(),
            "b",
            "a broken file must not replace good keys"
        );
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
