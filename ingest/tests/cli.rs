//! The `ingest` binary's configuration commands. (Having an integration test also makes
//! `cargo test --workspace` build the binary, which `tests/e2e/crash_ingest.rs` kills.)

use std::process::Command;

#[test]
fn generate_config_prints_an_example_that_check_accepts() {
    let bin = env!("CARGO_BIN_EXE_ingest");
    let out = Command::new(bin).arg("generate-config").output().expect("ingest runs");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ingest.toml");
    std::fs::write(&config, &out.stdout).expect("write config");
    std::fs::write(dir.path().join("inventory.toml"), include_str!("../inventory.example.toml")).expect("inventory");
    let out = Command::new(bin).args(["check", "--config"]).arg(&config).output().expect("ingest runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}

#[test]
fn check_names_the_file_and_line_of_a_bad_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ingest.toml");
    std::fs::write(&config, "data_dir = \"d\"\ninventory = \"i.toml\"\n[store]\nfsync = \"sometimes\"\n")
        .expect("write");
    let out =
        Command::new(env!("CARGO_BIN_EXE_ingest")).args(["check", "--config"]).arg(&config).output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest.toml:3:1: store.fsync 'sometimes'"), "{err}");
}

/// A minimal valid ingest.toml, with the example inventory next to it, in `dir`.
fn minimal_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("inventory.toml"), include_str!("../inventory.example.toml")).expect("inventory");
    let config = dir.join("ingest.toml");
    std::fs::write(&config, format!("data_dir = \"data\"\ninventory = \"inventory.toml\"\n{extra}")).expect("config");
    config
}

fn check(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["check", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("ingest runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// True if `text` has `file:` followed by a line number.
fn names_a_line_of(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:"))
        .any(|(at, m)| text[at + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()))
}

#[test]
fn check_reports_a_bad_rule_pack_named_by_the_alerts_table_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = minimal_config(dir.path(), "[alerts]\nrules = \"packs\"\n");
    std::fs::create_dir(dir.path().join("packs")).expect("packs");
    let good = include_str!("../rules/gateways.toml");
    let pack = dir.path().join("packs").join("bad.toml");
    // Positive control: a pack built into ingest passes.
    std::fs::write(&pack, good).expect("pack");
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok (") && stdout.contains(" rules)"), "{stdout}");

    std::fs::write(&pack, good.replacen("severity = \"", "severity = \"catastrophic-", 1)).expect("pack");
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert!(names_a_line_of(&stderr, "bad.toml"), "{stderr}");
}

#[test]
fn check_reports_a_bad_broadcast_value_with_the_line_in_ingest_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = minimal_config(dir.path(), "[broadcast]\napproval_levels = [\"red\", \"crimson\"]\n");
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert!(stderr.contains("ingest.toml:4:") && stderr.contains("crimson"), "{stderr}");

    let config = minimal_config(dir.path(), "[broadcast]\napproval_levels = [\"red\", \"orange\"]\n");
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

#[test]
fn check_reports_problems_of_several_tables_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[store]\nfsync = \"sometimes\"\n[alerts]\n[[alerts.notifiers]]\ntype = \"mqtt\"\ntopic = \"a/#\"\n[broadcast.dispatch]\nack_timeout_ms = 0\n";
    let config = minimal_config(dir.path(), text);
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert!(stderr.contains("ingest.toml:3:1: store.fsync 'sometimes'"), "{stderr}");
    assert!(stderr.contains("ingest.toml:6:1: mqtt topic 'a/#'"), "{stderr}");
    assert!(stderr.contains("ingest.toml:9:1: dispatch:"), "{stderr}");
}

#[test]
fn the_old_alerts_file_still_works_and_warns_to_move_it_into_the_alerts_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = minimal_config(dir.path(), "");
    let old = dir.path().join("alerts.toml");
    std::fs::write(&old, "resolve_after_secs = 60\n").expect("alerts");
    let (ok, stdout, stderr) = check(&config, &["--alerts", old.to_str().expect("utf-8")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
    assert!(stderr.contains("[alerts]") && stderr.contains("old place"), "{stderr}");

    // It is read, not skipped: a mistake in it is reported at its line.
    std::fs::write(&old, "resolve_after_secs = 60\n[[notifiers]]\ntype = \"mqtt\"\ntopic = \"\"\n").expect("alerts");
    let (ok, _, stderr) = check(&config, &["--alerts", old.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("alerts.toml:2:1: mqtt topic ''"), "{stderr}");

    // Without --alerts there is no warning (positive control), and both places at once are refused.
    let (ok, _, stderr) = check(&config, &[]);
    assert!(ok && !stderr.contains("old place"), "{stderr}");
    std::fs::write(&old, "resolve_after_secs = 60\n").expect("alerts");
    let config = minimal_config(dir.path(), "[alerts]\nresolve_after_secs = 60\n");
    let (ok, _, stderr) = check(&config, &["--alerts", old.to_str().expect("utf-8")]);
    assert!(!ok && stderr.contains("configured twice"), "{stderr}");
}

#[test]
fn the_old_broadcast_file_still_works_and_warns_to_move_it_into_the_broadcast_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = minimal_config(dir.path(), "");
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    let old = dir.path().join("data").join("broadcast.toml");
    std::fs::write(&old, "approval_levels = [\"red\"]\n").expect("broadcast");
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
    assert!(stderr.contains("[broadcast]") && stderr.contains("old place"), "{stderr}");

    // It is read, not skipped: a mistake in it is reported at its line.
    std::fs::write(&old, "approval_levels = [\"red\"]\n[tenants.county]\napproval_levels = [\"pink\"]\n")
        .expect("broadcast");
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert!(stderr.contains("broadcast.toml:3:") && stderr.contains("pink"), "{stderr}");

    // The table alone: no warning; the table and the old file together: refused.
    std::fs::remove_file(&old).expect("remove");
    let config = minimal_config(dir.path(), "[broadcast]\napproval_levels = [\"red\"]\n");
    let (ok, _, stderr) = check(&config, &[]);
    assert!(ok && !stderr.contains("old place"), "{stderr}");
    std::fs::write(&old, "approval_levels = [\"red\"]\n").expect("broadcast");
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok && stderr.contains("configured twice"), "{stderr}");
}

#[test]
fn ca_makes_the_county_ca_once_and_prints_the_fingerprint_gateways_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = minimal_config(dir.path(), "[broker]\ntype = \"embedded\"\ntls_listen = \"0.0.0.0:8883\"\n");
    let run = || {
        let out =
            Command::new(env!("CARGO_BIN_EXE_ingest")).args(["ca", "--config"]).arg(&config).output().expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    let ca = dir.path().join("data/tls/ca.pem");
    assert!(first.contains(&format!("CA certificate: {}", ca.display())), "{first}");
    let print = first.lines().find_map(|l| l.strip_prefix("SHA-256 fingerprint: ")).expect("a fingerprint line");
    assert_eq!(print.len(), 95, "32 bytes as AB:CD:...: {print}");
    assert_eq!(run(), first, "made once: the second run prints the same CA");
    // The same fingerprint as the file's certificate (what openssl would print).
    let pem = std::fs::read(&ca).expect("ca.pem");
    let der = rustls_pemfile::certs(&mut &pem[..]).next().expect("a certificate").expect("PEM");
    assert_eq!(ingest::broker::ca::fingerprint(der.as_ref()), print);
}
