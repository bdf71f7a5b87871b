//! Rebuild when the embedded SDK or the guest lock file changes (`include_dir!` does not tell
//! cargo on stable Rust).

fn main() {
    for p in [
        "../../guest/zerosdk",
        "../../guest/zerosdk-macros",
        "../../guest/Cargo.lock",
        "../../wit",
        "templates",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
}
