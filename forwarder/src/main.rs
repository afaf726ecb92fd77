//! `forwarder`: eBPF port forwarder and NAT manager (see `forwarder::cli`).
fn main() -> std::process::ExitCode {
    forwarder::cli::main()
}
