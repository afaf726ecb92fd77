//! This machine's name in a cluster, which `nodes = [...]` in the rules file
//! is matched against. The hostname by default; `--node-name` (or
//! FORWARDER_NODE_NAME) when the cluster knows the node by another name: a
//! Kubernetes node name may differ from the hostname, and namespaces in
//! tests share one UTS namespace.
use std::sync::OnceLock;

static NAME: OnceLock<String> = OnceLock::new();

/// Sets the name from the command line; the hostname when `None`. The first
/// call wins (the daemon calls it once, before the first load).
pub fn init(name: Option<String>) {
    let _ = NAME.set(name.unwrap_or_else(hostname));
}

/// The node's name (the hostname unless `init` said otherwise).
pub fn name() -> &'static str {
    NAME.get_or_init(hostname)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(super::hostname(), kernel.trim());
    }
}
