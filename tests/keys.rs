//! `streamscore keys`: rotation in two steps that cannot dead-letter records.
//! A key is added inactive, reaches every processor, and only then becomes
//! the one producers seal with. The command tests need no broker; the last
//! runs the whole procedure against a running processor on the real one.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Format;
use streamscore::Keyring;
use streamscore_tools::events::EventFactory;

fn keys(args: &[&str], ring: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamscore"));
    c.arg("keys").args(args);
    if let Some(path) = ring {
        c.arg("--into").arg(path);
    }
    c.env_remove("RUST_LOG").output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit status and stderr of a command that must fail.
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_ids(ring: &Path) -> (Vec<String>, String) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ring).unwrap()).unwrap();
    let mut ids: Vec<String> = json["keys"].as_object().unwrap().keys().cloned().collect();
    ids.sort();
    (ids, json["active"].as_str().unwrap().to_owned())
}

fn first_ring(dir: &Path) -> std::path::PathBuf {
    let out = keys(&["generate", "--id", "2026-10"], None);
    assert!(out.status.success());
    let path = dir.join("keyring.json");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn add_leaves_the_active_key_and_activate_switches_it() {
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    let before = Keyring::from_file(&ring).unwrap();
    let sealed_with_old = before.seal(b"old", Some(b"card-1"));

    let said = ok(&keys(&["add", "--id", "2026-11"], Some(&ring)));
    assert!(said.contains("streamscore_keyring_keys"), "{said}");
    assert_eq!(
        key_ids(&ring),
        (vec!["2026-10".into(), "2026-11".into()], "2026-10".into()),
        "add must not change the active key"
    );
    assert_eq!(
        std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let said = ok(&keys(&["activate", "--id", "2026-11"], Some(&ring)));
    assert!(said.contains("2026-11"), "{said}");
    assert_eq!(
        key_ids(&ring),
        (vec!["2026-10".into(), "2026-11".into()], "2026-11".into())
    );
    let after = Keyring::from_file(&ring).unwrap();
    assert_eq!(
        after.open(&sealed_with_old, Some(b"card-1")).unwrap(),
        b"old"
    );
}

#[test]
fn activate_refuses_an_id_not_in_the_ring_and_add_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    let text = std::fs::read_to_string(&ring).unwrap();

    let err = refused(&keys(&["activate", "--id", "2026-12"], Some(&ring)));
    assert!(
        err.contains("2026-12") && err.contains("keys add"),
        "the refusal should say to add the key first: {err}"
    );
    let err = refused(&keys(&["add", "--id", "2026-10"], Some(&ring)));
    assert!(err.contains("2026-10"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&ring).unwrap(),
        text,
        "file changed"
    );
}

/// A script written for the old one-step `generate --into` must not
/// silently get a key that producers switch to before processors have it.
#[test]
fn generate_into_no_longer_activates_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    let text = std::fs::read_to_string(&ring).unwrap();
    let err = refused(&keys(&["generate", "--id", "2026-11"], Some(&ring)));
    assert!(
        err.contains("keys add") && err.contains("keys activate"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&ring).unwrap(),
        text,
        "file changed"
    );
}

#[test]
fn remove_retires_an_old_key_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    ok(&keys(&["add", "--id", "2026-11"], Some(&ring)));
    ok(&keys(&["activate", "--id", "2026-11"], Some(&ring)));
    let err = refused(&keys(&["remove", "--id", "2026-11"], Some(&ring)));
    assert!(err.contains("active"), "{err}");
    let err = refused(&keys(&["remove", "--id", "2026-09"], Some(&ring)));
    assert!(err.contains("2026-09"), "{err}");
    ok(&keys(&["remove", "--id", "2026-10"], Some(&ring)));
    assert_eq!(key_ids(&ring), (vec!["2026-11".into()], "2026-11".into()));
}

/// No key material on the terminal except the one place it is asked for:
/// `generate` without `--into` prints a new ring on stdout.
#[test]
fn ring_editing_commands_print_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    let mut outputs = Vec::new();
    for args in [["add", "--id", "b"], ["activate", "--id", "b"]] {
        let out = keys(&args, Some(&ring));
        ok(&out);
        outputs.push(out);
    }
    let out = keys(&["remove", "--id", "2026-10"], Some(&ring));
    ok(&out);
    outputs.push(out);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ring).unwrap()).unwrap();
    let b64 = json["keys"]["b"].as_str().unwrap();
    for out in outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(b64), "key material printed");
    }
}

/// Waits until the processor's log says it loaded exactly `key_ids` with
/// `active` (the log line beside `streamscore_keyring_keys`).
/// Waits as the documented procedure does: until the replica's /metrics
/// reports exactly these keys loaded, `active` among them, with no reload
/// failure; and its log says the same in plain text.
fn wait_loaded(addr: &str, log: &Path, key_ids: &str, active: &str) {
    let expected: Vec<(String, String)> = key_ids
        .split(',')
        .map(|id| (id.to_owned(), (id == active).to_string()))
        .collect();
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let text = support::scrape::metrics_text(addr);
        let mut loaded: Vec<(String, String)> =
            support::scrape::samples(&text, "streamscore_keyring_keys")
                .into_iter()
                .filter(|s| s.value == 1.0)
                .map(|s| (s.labels["key_id"].clone(), s.labels["active"].clone()))
                .collect();
        loaded.sort();
        if loaded == expected {
            assert_eq!(
                support::scrape::value(&text, "streamscore_keyring_reload_failures_total"),
                Some(0.0),
                "{text}"
            );
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            let line = format!("key_ids={key_ids} active={active}");
            assert!(
                log_text
                    .lines()
                    .any(|l| l.contains("keyring") && l.contains("loaded") && l.contains(&line)),
                "{log_text}"
            );
            return;
        }
        assert!(
            Instant::now() < give_up,
            "/metrics never reported {expected:?} loaded (got {loaded:?}):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole procedure against a running processor: a producer that seals
/// with the new key right after `add` (before `activate`) loses nothing,
/// and after `activate` the ring's producers seal with the new key.
#[test]
fn two_step_rotation_on_a_running_processor_dead_letters_nothing() {
    let settings = support::settings("keys-rotate", Format::Avro, Format::Avro);
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let ring = first_ring(dir.path());
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = support::process::config_file(
        dir.path(),
        "rotate",
        &settings,
        &format!("[keys]\nfile = \"{}\"\n", ring.display()),
    );
    let log = dir.path().join("rotate.log");
    let processor = support::process::Processor::start(&config, "", log.clone());
    let addr = processor.wait_address(Duration::from_secs(60));
    wait_loaded(&addr, &log, "2026-10", "2026-10");

    ok(&keys(&["add", "--id", "2026-11"], Some(&ring)));
    wait_loaded(&addr, &log, "2026-10,2026-11", "2026-10");
    // An upstream team that switched as soon as the key was added.
    let early =
        Keyring::activate_json(&std::fs::read_to_string(&ring).unwrap(), "2026-11").unwrap();
    let mut factory = EventFactory::new(
        Arc::new(Keyring::from_json(&early).unwrap()),
        Format::Avro,
        "early",
        3,
    );
    let records: Vec<_> = (0..20).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);

    ok(&keys(&["activate", "--id", "2026-11"], Some(&ring)));
    wait_loaded(&addr, &log, "2026-10,2026-11", "2026-11");
    let producer = Keyring::from_file(&ring).unwrap();
    assert_eq!(producer.active_id(), "2026-11");
    let mut factory = EventFactory::new(Arc::new(producer), Format::Avro, "after", 4);
    let records: Vec<_> = (0..30).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);

    let (done, end) = support::wait_committed(&settings, Duration::from_secs(60));
    assert_eq!((done, end), (50, 50));
    let status = processor.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 50, "{:?}", report.dead_letter_reasons);
    assert!(
        report.dead_letter_reasons.is_empty(),
        "{:?}",
        report.dead_letter_reasons
    );
}
