//! The AFL++ harness: `village-fuzz TARGET` runs one target in AFL++'s persistent mode
//! (`fuzz/run` starts it under `cargo afl fuzz`); `village-fuzz --list` names the targets.
//!
//! Built only with `--features afl` under `cargo afl build`, which links AFL++'s runtime.

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    if name == "--list" {
        for t in village_fuzz::TARGETS {
            eprintln!("{:<14} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    let Some(target) = village_fuzz::target(&name) else {
        eprintln!("usage: village-fuzz TARGET | --list (unknown target '{name}')");
        return ExitCode::FAILURE;
    };
    afl::fuzz(true, |data| (target.run)(data));
    ExitCode::SUCCESS
}
