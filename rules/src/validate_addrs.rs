//! The address checks of one forward, for both families: what parses but
//! cannot work (a loopback target, a listen address of the wrong family,
//! an SNAT address the target cannot answer, an allow-list entry no client
//! can match).
//!
//! The fact a reader gets wrong: a forward has two families, the clients'
//! (`family`, or a fixed listen address's) and the target's. Clients of the
//! other family are translated (NAT64/NAT46) and always get a source of the
//! target's family, so `snat` is checked against the *target*, and
//! `snat = "off"` or `path = "stack"` are refused as soon as one client
//! family is translated.

use std::{collections::HashSet, net::IpAddr};

use crate::{diagnostics::Sink, model::*, parse::ForwardSpans, partial::Failed};

/// Why an address cannot be used where a unicast address of this host or
/// of a backend is needed.
pub(crate) fn unusable(a: IpAddr) -> Option<String> {
    if a.is_unspecified() {
        return Some("the unspecified address".into());
    }
    if a.is_loopback() {
        return Some("a loopback address".into());
    }
    if a.is_multicast() {
        return Some("a multicast address".into());
    }
    match a {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address".into()),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                Some(format!("an IPv4-mapped address (write {v4})"))
            } else if v6.is_unicast_link_local() {
                Some("a link-local address (it is only meaningful on one link, with an interface scope; use a global or unique-local address)".into())
            } else {
                None
            }
        }
        IpAddr::V4(_) => None,
    }
}

fn families_word(f: &Forward) -> &'static str {
    match f.listen_afs() {
        [Af::V4] => "IPv4 clients only",
        [Af::V6] => "IPv6 clients only",
        _ => "IPv4 and IPv6 clients",
    }
}

const LOOPBACK_HELP: &str = "translated packets leave through an interface and never reach local sockets; point at the backend's own address";

/// Each check runs only when the keys it reads parsed (`ok`; see
/// `partial`). A name target's family is IPv4 (A records only); whether
/// its answers are usable is the daemon's check, at run time.
pub(crate) fn check(
    f: &Forward,
    sp: &ForwardSpans,
    ok: &Failed,
    ctx: Option<&str>,
    sink: &mut Sink,
) {
    let to = sp.field("to");
    let target_ok = ok.all_ok(&["to"]);
    let t = &f.target.host;
    let taf = f.target.af();
    if let (Host::Name(n), true) = (t, target_ok) {
        // A loopback name can never be forwarded to, whatever it answers.
        if crate::target::loopback_name(n) {
            sink.error(
                &to,
                ctx,
                format!("target {n} always resolves to this host's loopback"),
                Some(LOOPBACK_HELP.into()),
            );
        }
    }
    let fixed = f.target.fixed_addr().filter(|_| target_ok);
    if let Some((a, why)) = fixed.and_then(|a| Some((a, unusable(a)?))) {
        let help = if a.is_loopback() {
            LOOPBACK_HELP
        } else {
            "point at the backend's unicast address"
        };
        sink.error(&to, ctx, format!("target {a} is {why}"), Some(help.into()));
    }
    if let Some(a) = fixed.filter(|a| ok.all_ok(&["listen"]) && f.listen == Listen::Addr(*a)) {
        sink.error(
            &to,
            ctx,
            format!("target {a} is the listen address itself"),
            Some("packets would be sent back to this listener; point at the backend".into()),
        );
    }
    if let (Listen::Addr(a), true) = (f.listen, ok.all_ok(&["listen"])) {
        if let Some(why) = unusable(a) {
            let help = if a.is_unspecified() {
                let family = if a.is_ipv6() {
                    " with family = \"ipv6\" (or \"both\")"
                } else {
                    ""
                };
                format!("to listen on all of the interface's addresses, write listen = \"interface\"{family}")
            } else {
                "listen on a unicast address of the interface, or \"interface\"".into()
            };
            sink.error(
                &sp.field("listen"),
                ctx,
                format!("listen address {a} is {why}"),
                Some(help),
            );
        }
        let own = Family::from(Af::of(a));
        if f.family != own && ok.all_ok(&["family"]) {
            sink.error(
                &sp.field("family"),
                ctx,
                format!(
                    "family = \"{}\" does not fit the fixed listen address {a}, which is {}",
                    f.family.as_str(),
                    Af::of(a)
                ),
                Some("a fixed address has one family: remove `family`, or write listen = \"interface\" to take the interface's addresses of every family named".into()),
            );
        }
    }
    let translated: Vec<Af> = f
        .listen_afs()
        .iter()
        .copied()
        .filter(|af| f.translates(*af))
        .collect();
    let families_ok = ok.all_ok(&["listen", "family"]);
    match f.snat {
        _ if !(target_ok && ok.all_ok(&["snat"])) => {}
        Snat::Fixed(a) => {
            if let Some(why) = unusable(a) {
                sink.error(&sp.field("snat"), ctx, format!("SNAT address {a} is {why}"), Some("use an address of this host on the path to the target, or \"masquerade\"".into()));
            } else if fixed == Some(a) {
                sink.error(&sp.field("snat"), ctx, format!("SNAT address {a} is the target itself"), Some("use an address of this host on the path to the target".into()));
            } else if Af::of(a) != taf {
                sink.error(
                    &sp.field("snat"),
                    ctx,
                    format!("SNAT address family mismatch: snat {a} is {} but the target {t} is {taf}", Af::of(a)),
                    Some(format!("packets leave toward the target with a source of the target's family: use an {taf} address of this host, or \"masquerade\"")),
                );
            }
        }
        Snat::Off if !translated.is_empty() && families_ok => {
            let af = translated[0];
            sink.error(
                &sp.field("snat"),
                ctx,
                format!("snat = \"off\" cannot keep the address of {af} clients: they are translated to the {taf} target {t}, so their packets need an {taf} source of this host"),
                Some(if f.listen_afs().contains(&taf) {
                    format!("use snat = \"auto\" ({taf} clients keep their address where replies route back, {af} clients get the egress address), \"masquerade\", or an {taf} address of this host")
                } else {
                    format!("use snat = \"auto\" or \"masquerade\" (this host's {taf} address toward the target), or a fixed {taf} address of this host")
                }),
            );
        }
        Snat::Off => sink.warning(
            &sp.field("snat"),
            ctx,
            format!("snat = \"off\" keeps the client's address: replies from {t} must route back through this host, or connections will hang"),
            Some("use snat = \"auto\" to rewrite the source only when the reply would not come back this way".into()),
        ),
        Snat::Auto | Snat::Masquerade => {}
    }
    // With a fixed or masquerading snat, `validate` already refuses the stack.
    if f.path == PathMode::Stack
        && !translated.is_empty()
        && f.snat == Snat::Auto
        && target_ok
        && families_ok
        && ok.all_ok(&["path", "snat"])
    {
        sink.error(
            &sp.field("path"),
            ctx,
            format!(
                "path = \"stack\" cannot carry {} clients to the {taf} target {t}: translated flows get a source address of this host, and the stack drops packets whose source is one of its own addresses",
                translated[0]
            ),
            Some(format!("use path = \"auto\" or \"redirect\", or family = \"{}\" to leave {} clients out", Family::from(taf).as_str(), translated[0])),
        );
    }
    check_allow(f, sp, families_ok, ctx, sink);
}

fn check_allow(
    f: &Forward,
    sp: &ForwardSpans,
    families_ok: bool,
    ctx: Option<&str>,
    sink: &mut Sink,
) {
    let mut seen = HashSet::new();
    for (net, span) in f.allow.iter().zip(&sp.allow) {
        let af = Af::of(net.addr());
        if families_ok && !f.listen_afs().contains(&af) {
            let help = match f.listen {
                Listen::Interface => format!("add family = \"both\" to take {af} clients too, or remove the entry"),
                Listen::Addr(_) => format!("no {af} client reaches a fixed {} listen address: remove the entry, or write a forward for {af}", Af::of(net.addr()).other()),
            };
            sink.error(
                span,
                ctx,
                format!(
                    "allow-list entry {net} is {af}, but the forward takes {}",
                    families_word(f)
                ),
                Some(help),
            );
        }
        if net.prefix_len() == 0 {
            sink.warning(
                span,
                ctx,
                format!("allow-list entry {net} allows every source"),
                Some(
                    "remove `allow` to accept every source, or list the addresses that may connect"
                        .into(),
                ),
            );
        }
        if !seen.insert(*net) {
            sink.warning(
                span,
                ctx,
                format!("allow-list entry {net} is listed twice"),
                Some("remove the duplicate".into()),
            );
        }
    }
    if f.allow.is_empty() || f.listen_afs().len() < 2 || !families_ok {
        return;
    }
    for af in f.listen_afs() {
        if !f.allow.iter().any(|n| Af::of(n.addr()) == *af) {
            let other = Family::from(af.other()).as_str();
            sink.warning(
                &sp.field("allow"),
                ctx,
                format!("the allow-list has no {af} entries: every {af} client is refused"),
                Some(format!("list the {af} addresses that may connect, or write family = \"{other}\" to not listen for {af} at all")),
            );
        }
    }
}
