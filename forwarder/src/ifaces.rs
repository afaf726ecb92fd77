//! Interface facts the dataplane needs: index, whether frames carry a
//! link-layer header, MTU, kind. Read over rtnetlink (`netlink::links`).
use std::ffi::CString;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    /// No Ethernet header (tun, wireguard: anything but ARPHRD_ETHER);
    /// the IP header starts at offset 0.
    pub l3: bool,
    pub mtu: u32,
    /// rtnetlink's IFLA_INFO_KIND ("bridge", "veth", "tun", "wireguard"...),
    /// `None` for plain hardware NICs.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP).
    pub up: bool,
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
