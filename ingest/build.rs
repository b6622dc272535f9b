//! Builds the gateway's shipped profile library (`gateway/profiles/`) into ingest, so that
//! ingest knows each device model's writable points and refuses a command to any other
//! point before it signs it (`ingest::command::profiles`). Ingest reads only the model
//! names and writable names; the gateway stays the authority on ranges and registers. The
//! embedding is the gateway's own build step, included, so both carry the same library.

include!("../gateway/embed_profiles.rs");

fn main() {
    println!("cargo:rerun-if-changed=../gateway/embed_profiles.rs");
    embed_profiles(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/profiles"));
}
