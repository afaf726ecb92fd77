//! Root gating: privileged tests skip loudly for normal users, but where
//! FORWARDER_REQUIRE_ROOT_TESTS is set (CI, via `cargo xtask test`) a skip
//! is a failure, so CI can never pass without running them.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns true when the calling test may proceed.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("FORWARDER_REQUIRE_ROOT_TESTS").is_some() {
        panic!("{test}: needs root (BPF, network namespaces) and FORWARDER_REQUIRE_ROOT_TESTS is set: refusing to skip");
    }
    eprintln!();
    eprintln!("!!!! SKIPPED {test}: needs root for BPF and network namespaces !!!!");
    eprintln!();
    false
}
