//! Interface facts the dataplane needs: index and whether frames carry a
//! link-layer header.
use std::{ffi::CString, path::Path};

use anyhow::{Context, Result};

/// ARPHRD_ETHER from include/uapi/linux/if_arp.h. Anything else we attach to
/// (ARPHRD_NONE for tun/wireguard) carries the IP header at offset 0.
const ARPHRD_ETHER: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    /// No Ethernet header (tun, wireguard).
    pub l3: bool,
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated name.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as the call requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname NUL-terminates on success.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    Some(s.to_string_lossy().into_owned())
}

/// Looks an interface up in the current network namespace.
pub fn lookup(name: &str) -> Result<Iface> {
    let ifindex = ifindex(name).with_context(|| format!("interface {name} does not exist"))?;
    let ty_path = Path::new("/sys/class/net").join(name).join("type");
    let ty: u32 = std::fs::read_to_string(&ty_path)
        .with_context(|| format!("reading {}", ty_path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", ty_path.display()))?;
    Ok(Iface {
        name: name.to_string(),
        ifindex,
        l3: ty != ARPHRD_ETHER,
    })
}
