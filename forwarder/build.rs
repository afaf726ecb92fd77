//! Locates the kernel object built by `cargo xtask build-ebpf` so the binary
//! can embed it. A missing object is a clear instruction, not an include error.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = match std::env::var_os("FORWARDER_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => manifest.join("../forwarder-ebpf/target/bpfel-unknown-none/release/forwarder"),
    };
    println!("cargo:rerun-if-env-changed=FORWARDER_EBPF_OBJ");
    println!("cargo:rerun-if-changed={}", obj.display());
    if !obj.is_file() {
        eprintln!();
        eprintln!("error: the eBPF object is missing: {}", obj.display());
        eprintln!("       build it first with:  cargo xtask build-ebpf");
        eprintln!("       (or run `cargo xtask test` / `cargo xtask demo`, which build it)");
        eprintln!();
        std::process::exit(1);
    }
    println!(
        "cargo:rustc-env=FORWARDER_EBPF_OBJ={}",
        obj.canonicalize().unwrap().display()
    );
}
