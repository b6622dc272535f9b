// Shared by the build scripts of `gateway` and `ingest` (each `include!`s it): writes
// `$OUT_DIR/builtin_profiles.rs`, a `&[(file name, TOML text)]` of every `*.toml` in the
// gateway's shipped profile library, in name order, so that both binaries carry the same
// library without reading files at run time.

/// Embeds every profile of `dir` (the gateway's `profiles/`).
fn embed_profiles(dir: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", f.display().to_string()));
    }
    out.push(']');
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    if let Err(e) = std::fs::write(std::path::Path::new(&out_dir).join("builtin_profiles.rs"), out) {
        panic!("cannot write the built-in profile list: {e}");
    }
}
