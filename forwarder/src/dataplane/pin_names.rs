//! Names of what the daemon keeps under the pin directory for interfaces:
//! link pins (`links/<ifindex>-<hook>-<name>`) and the legacy TC markers
//! (`tc/...`, see `tc_legacy`). The one fact a reader gets wrong: the
//! ifindex in the name is what matters; a re-created interface has a new
//! one, and everything named after the old one is stale.
use std::path::{Path, PathBuf};

use forwarder_common::PIN_LINKS_DIR;

use crate::ifaces::Iface;

/// bpffs refuses names with dots (reserved for the kernel's own files,
/// `bpf_lookup` returns EPERM), and interface names may contain them
/// (`eth0.100`): escape them, and the escape character, URL-style.
pub(super) fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

pub(super) fn unescape(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

/// `links/<ifindex>-<hook>-<name>`: the ifindex tells a re-created
/// interface (new index, old links dead) from the one the link was made on.
pub(super) fn link_pin(pin_dir: &Path, iface: &Iface, hook: &str) -> PathBuf {
    pin_dir
        .join(PIN_LINKS_DIR)
        .join(format!("{}-{hook}-{}", iface.ifindex, escape(&iface.name)))
}

/// The (ifindex, interface name) a link pin file name refers to.
pub(super) fn parse_link_pin(file: &str) -> Option<(u32, String)> {
    let mut parts = file.splitn(3, '-');
    let ifindex = parts.next()?.parse().ok()?;
    let _hook = parts.next()?;
    Some((ifindex, unescape(parts.next()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_round_trip_names_with_dots_and_dashes() {
        let iface = Iface {
            name: "vlan-eth0.100%".into(),
            ifindex: 7,
            l3: false,
            mtu: 1500,
            kind: None,
            up: true,
        };
        let p = link_pin(Path::new("/x"), &iface, "egress");
        let file = p.file_name().unwrap().to_str().unwrap();
        assert!(!file.contains('.'), "{file}");
        assert_eq!(parse_link_pin(file), Some((7, iface.name.clone())));
        assert_eq!(parse_link_pin("junk"), None);
    }
}
