//! Finding the real peers: tools on PATH (Debian packages), the Python of `.venv` (PyPI
//! packages), and this workspace's own binaries. `.ci/setup` installs the first two.
//!
//! A missing peer fails the test with what to run: a skipped test against a real peer
//! proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives in `<root>/testkit`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ has a parent").to_path_buf()
}

/// `name` on PATH (or in /usr/sbin, /sbin), or a failure naming the Debian `package` that
/// `.ci/setup` installs for it.
pub fn tool(name: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is missing: run .ci/setup (it installs the Debian package {package})");
}

/// The Python that can import `module`: `$VT_PYTHON` or `.venv/bin/python` (made by
/// `.ci/setup` with every pinned Python peer); fails with what to run otherwise.
pub fn python_with(module: &str) -> PathBuf {
    let p = std::env::var_os("VT_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    let ok = Command::new(&p).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "no Python with {module} at {} (set VT_PYTHON or run .ci/setup, which makes .venv)", p.display());
    p
}

/// A binary of this workspace in the calling test binary's target directory
/// (`target/<profile>/<name>`; test binaries live in `target/<profile>/deps`). Whether it
/// is built is the caller's business.
pub fn target_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(Path::parent).map(|d| d.join(name)).expect("a target/<profile> directory")
}

/// The binary `name` of package `name`, built for the host on first use in this test
/// process: `cargo test --workspace` builds the programs only of packages that have
/// integration tests, so a test that runs another package's program (the gateway) builds
/// it itself, and never runs a stale one left in the target directory.
pub fn built_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "-q", "-p", name, "--bin", name])
            .status()
            .unwrap_or_else(|e| panic!("cargo build -p {name}: {e}"));
        assert!(status.success(), "cargo build -p {name} --bin {name} failed");
        built.push(name.to_string());
    }
    target_binary(name)
}
