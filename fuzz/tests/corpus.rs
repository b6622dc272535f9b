//! Replays every committed input of every fuzz target: the seed corpora (`corpus/`) and
//! the inputs that once broke a decoder (`regressions/`), through the same functions AFL++
//! drives. A plain `cargo test` thus keeps every crash the fuzzer found fixed, and proves
//! the seeds still exercise what they were made for, without AFL.

use std::fs;
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_former_crash_runs_clean_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in village_fuzz::TARGETS {
        let seeds = inputs(&root.join("corpus").join(target.name));
        assert!(!seeds.is_empty(), "target {} has no seed corpus", target.name);
        for file in seeds.iter().chain(&inputs(&root.join("regressions").join(target.name))) {
            let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let result = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(result.is_ok(), "{} fails on {}", target.name, file.display());
        }
    }
}

#[test]
fn every_corpus_and_regression_directory_belongs_to_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus", "regressions"] {
        for entry in fs::read_dir(root.join(dir)).into_iter().flatten().filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(village_fuzz::target(&name).is_some(), "{dir}/{name} names no target");
        }
    }
    assert!(village_fuzz::target("batch").is_some() && village_fuzz::target("nothing").is_none());
}
