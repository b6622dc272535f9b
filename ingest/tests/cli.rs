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
