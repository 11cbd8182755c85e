//! `streamscore keys`: rotation in two steps that cannot dead-letter records.
//! A key is added inactive, reaches every processor, and only then becomes
//! the one producers seal with. No broker needed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use streamscore::envelope::Keyring;

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
