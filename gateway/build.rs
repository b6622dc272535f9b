//! Builds the profile library in `profiles/` into the binary, so that a gateway on a
//! board without the files still knows every shipped device model.

include!("embed_profiles.rs");

fn main() {
    println!("cargo:rerun-if-changed=embed_profiles.rs");
    embed_profiles(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"));
}
