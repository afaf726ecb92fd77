//! The netlink requests legacy TC attachment needs that aya 0.14 does not
//! offer: list the filters on a clsact hook with their priority, handle and
//! program name, delete one filter by priority and handle on an ifindex,
//! and find, add and delete the clsact qdisc itself. (Attaching and
//! replacing the program go through aya.)
//!
//! Synchronous on purpose: the daemon's apply stage, `forwarder down` and
//! the doctor are all synchronous code, and each call is one request on a
//! socket of its own in the calling thread's network namespace. The one fact
//! a reader gets wrong: a dump is answered for the namespace the socket was
//! opened in, not the one an interface name was resolved in; callers pass
//! ifindexes of their own namespace.
use std::io;

use netlink_packet_route::{
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::{
    packet_core::{
        NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR,
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

/// ETH_P_ALL in network byte order, the protocol of every filter aya adds.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

/// The two clsact hooks a filter can sit on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    /// `ffff:fff2` / `ffff:fff3`: the clsact qdisc's ingress and egress.
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// One filter on a hook, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    /// The classifier ("bpf", "u32", "flower", ...).
    pub kind: String,
    /// cls_bpf: the program name the loader gave (aya: the function name).
    pub name: Option<String>,
    /// cls_bpf: the id of the program running there now.
    pub prog_id: Option<u32>,
}

/// The qdisc at the ingress/clsact slot of an interface, by kind
/// ("clsact", or "ingress" when someone set up the older ingress-only one).
pub fn ingress_slot_qdisc(ifindex: u32) -> io::Result<Option<String>> {
    let mut msg = TcMessage::default();
    msg.header.family = AddressFamily::Unspec;
    let replies = request(
        RouteNetlinkMessage::GetQueueDiscipline(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == ifindex as i32 && q.header.parent == TcHandle::CLSACT =>
        {
            Some(kind(&q.attributes).unwrap_or_default())
        }
        _ => None,
    }))
}

/// Adds a clsact qdisc; `Ok(false)` when the slot is already taken (by a
/// clsact or ingress qdisc: the caller tells which).
pub fn add_clsact(ifindex: u32) -> io::Result<bool> {
    let msg = clsact_message(ifindex);
    match request(
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the clsact qdisc (and with it any filter still on it: callers
/// check that it is empty first).
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    request(
        RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex)),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

fn clsact_message(ifindex: u32) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: TcHandle {
            major: 0xffff,
            minor: 0,
        },
        parent: TcHandle::CLSACT,
        info: 0,
    };
    msg.attributes.push(TcAttribute::Kind("clsact".into()));
    msg
}

/// Every filter on one hook of an interface (none when it has no clsact).
pub fn filters(ifindex: u32, hook: Hook) -> io::Result<Vec<Filter>> {
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.parent = hook.parent();
    let replies = match request(
        RouteNetlinkMessage::GetTrafficFilter(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    ) {
        Ok(r) => r,
        // No qdisc there (or no device): nothing is attached.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) if f.header.index == ifindex as i32 => Some(f),
            _ => None,
        })
        // A dump opens each priority with a message for the chain itself
        // (handle 0), which is no filter.
        .filter(|f| u32::from(f.header.handle) != 0)
        .map(|f| {
            let bpf: Vec<&TcFilterBpfOption> = f
                .attributes
                .iter()
                .filter_map(|a| match a {
                    TcAttribute::Options(opts) => Some(opts),
                    _ => None,
                })
                .flatten()
                .filter_map(|o| match o {
                    TcOption::Bpf(b) => Some(b),
                    _ => None,
                })
                .collect();
            Filter {
                priority: (f.header.info >> 16) as u16,
                handle: f.header.handle.into(),
                kind: kind(&f.attributes).unwrap_or_default(),
                name: bpf.iter().find_map(|b| match b {
                    TcFilterBpfOption::ProgName(n) => Some(n.clone()),
                    _ => None,
                }),
                prog_id: bpf.iter().find_map(|b| match b {
                    TcFilterBpfOption::ProgId(i) => Some(*i),
                    _ => None,
                }),
            }
        })
        .collect())
}

/// Deletes the filter at `priority`/`handle` on one hook of an interface.
pub fn delete_filter(ifindex: u32, hook: Hook, priority: u16, handle: u32) -> io::Result<()> {
    let mut msg = TcMessage::default();
    msg.header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: handle.into(),
        parent: hook.parent(),
        info: (u32::from(priority) << 16) | u32::from(ETH_P_ALL_BE),
    };
    msg.attributes.push(TcAttribute::Kind("bpf".into()));
    request(
        RouteNetlinkMessage::DelTrafficFilter(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

fn kind(attrs: &[TcAttribute]) -> Option<String> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })
}

/// Sends one request and collects the replies up to its end: the ACK (an
/// error message with code 0), NLMSG_DONE of a dump, or an error.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let frame = NetlinkBuffer::new_checked(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = (frame.length() as usize).min(rest.len());
            let (this, next) = rest.split_at(len);
            // Messages are 4-byte aligned in the datagram.
            rest = next
                .get(len.next_multiple_of(4) - len..)
                .unwrap_or_default();
            if frame.sequence_number() != 1 {
                continue;
            }
            let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                Ok(r) => r,
                // An attribute this crate cannot parse in somebody else's
                // qdisc or filter: not one of ours, skip it.
                Err(_) if !matches!(frame.message_type(), NLMSG_ERROR | NLMSG_DONE) => continue,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            };
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                    None if !dump => return Ok(out),
                    None => {}
                },
                NetlinkPayload::Done(_) => return Ok(out),
                _ => {}
            }
        }
    }
}
