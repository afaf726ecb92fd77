//! The relay's kernel calls: errno to io::Error, interface names for
//! ifreq, and the address list of a device read with SIOCGIFCONF. Written
//! out with libc because the relay must act on other namespaces' devices
//! through sockets created inside them, which no netlink crate's API takes.
use std::{io, net::Ipv4Addr, os::fd::RawFd};

/// A libc return value as io::Result (negative: the errno).
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `name` as an ifreq interface name.
pub fn ifname(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad name"));
    }
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

/// IPv4 addresses of `dev` (and `dev:label`) via SIOCGIFCONF on a socket
/// of the namespace: no process spawned, cheap enough for every 100 ms.
pub fn addrs_of(sock: RawFd, dev: &str) -> io::Result<Vec<Ipv4Addr>> {
    const N: usize = 128;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut reqs: Vec<libc::ifreq> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut conf = libc::ifconf {
        ifc_len: (N * std::mem::size_of::<libc::ifreq>()) as libc::c_int,
        ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
            ifcu_req: reqs.as_mut_ptr(),
        },
    };
    // SAFETY: the kernel writes at most ifc_len bytes of ifreqs to reqs.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCGIFCONF, &mut conf) })?;
    let n = conf.ifc_len as usize / std::mem::size_of::<libc::ifreq>();
    let mut out = Vec::new();
    for r in &reqs[..n] {
        let name: Vec<u8> = r
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let name = String::from_utf8_lossy(&name);
        if name != dev && !name.starts_with(&format!("{dev}:")) {
            continue;
        }
        // SAFETY: SIOCGIFCONF fills ifru_addr with a sockaddr_in.
        let sa: libc::sockaddr_in = unsafe {
            std::ptr::read_unaligned(&r.ifr_ifru.ifru_addr as *const _ as *const libc::sockaddr_in)
        };
        out.push(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)));
    }
    Ok(out)
}
