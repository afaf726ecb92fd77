//! Checks between values and between forwards: what parses but cannot work.

use std::collections::{BTreeMap, HashMap, HashSet};

use forwarder_common::{MAX_ALLOW_PREFIXES, MAX_LISTENERS, MAX_RULES};

use crate::{diagnostics::Sink, model::*, parse::Parsed};

/// Addresses an interface-form listener is assumed to expand to when
/// checking capacity offline (an interface rarely has more IPv4 addresses).
pub const ASSUMED_IFACE_ADDRS: u64 = 8;

pub(crate) fn validate(parsed: &Parsed, sink: &mut Sink) {
    let forwards = &parsed.rules.forwards;
    let spans = &parsed.spans;
    let g = &parsed.rules.global;
    if g.snat_ports.start() < 1024 {
        let span = parsed.global_spans.get("snat_ports").cloned().flatten();
        sink.warning(
            &span,
            Some("global"),
            format!("snat_ports {} includes privileged ports (below 1024)", g.snat_ports),
            Some("backends may treat connections from privileged ports specially (a client's own port below 1024 is kept below 1024 anyway); the default is \"1024-32767\"".into()),
        );
    }
    let all_ok = crate::partial::Failed::default();
    for (f, sp) in forwards.iter().zip(spans) {
        check_forward(f, sp, &all_ok, sink);
    }
    for p in &parsed.partial {
        check_forward(&p.forward, &p.spans, &p.failed, sink);
    }
    crate::advice::check_global(parsed, sink);
    check_names(parsed, sink);
    let node_spans: Vec<&crate::nodes::NodeSpans> = spans.iter().map(|s| &s.nodes).collect();
    crate::nodes::check(forwards, &node_spans, sink);
    check_limits(parsed, sink);
    if forwards.len() <= MAX_RULES as usize {
        check_overlaps(parsed, sink);
    }
}

fn ctx(f: &Forward) -> String {
    format!("forward \"{}\"", f.name)
}

use crate::target::unusable_addr as unusable;

/// The checks within one forward; each runs only when the keys it reads
/// parsed (`ok`), so a partial forward gets them too (see `partial`).
fn check_forward(
    f: &Forward,
    sp: &crate::parse::ForwardSpans,
    ok: &crate::partial::Failed,
    sink: &mut Sink,
) {
    let named;
    let c = if ok.all_ok(&["name"]) {
        named = ctx(f);
        named.as_str()
    } else {
        // The parse messages said `forward #N`; without a name the checks
        // below would only repeat what is broken.
        return;
    };
    let ctx = Some(c);
    let to = sp.field("to");
    let t = &f.target.host;
    let target_ok = ok.all_ok(&["to"]);
    const LOOPBACK_HELP: &str = "translated packets leave through an interface and never reach local sockets; point at the backend's own address";
    if let (Host::Name(n), true) = (t, target_ok) {
        // Whether the answer can be a target is known at run time only
        // (the daemon checks each answer); a loopback name never can.
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
    if let Some(tp) = f.target.ports.filter(|_| target_ok && ok.all_ok(&["port"])) {
        if !tp.is_single() && tp.len() != f.ports.len() {
            sink.error(
                &to,
                ctx,
                format!(
                    "port range size mismatch: port {} ({} ports) cannot map onto {} ({} ports)",
                    f.ports,
                    f.ports.len(),
                    f.target,
                    tp.len()
                ),
                Some("map a range 1:1 onto a range of the same size, onto a single port, or leave the target port out to keep the ports".into()),
            );
        }
    }
    if let (Listen::Addr(a), true) = (f.listen, ok.all_ok(&["listen"])) {
        if let Some(why) = unusable(a) {
            let help = if a.is_unspecified() {
                "to listen on all of the interface's addresses, write listen = \"interface\""
            } else {
                "listen on a unicast address of the interface, or \"interface\""
            };
            sink.error(
                &sp.field("listen"),
                ctx,
                format!("listen address {a} is {why}"),
                Some(help.into()),
            );
        }
    }
    match f.snat {
        _ if !(target_ok && ok.all_ok(&["snat"])) => {}
        Snat::Fixed(a) => {
            if let Some(why) = unusable(a) {
                sink.error(&sp.field("snat"), ctx, format!("SNAT address {a} is {why}"), Some("use an address of this host on the path to the target, or \"masquerade\"".into()));
            } else if f.target.fixed_addr() == Some(a) {
                sink.error(&sp.field("snat"), ctx, format!("SNAT address {a} is the target itself"), Some("use an address of this host on the path to the target".into()));
            }
        }
        Snat::Off => sink.warning(
            &sp.field("snat"),
            ctx,
            format!("snat = \"off\" keeps the client's address: replies from {t} must route back through this host, or connections will hang"),
            Some("use snat = \"auto\" to rewrite the source only when the reply would not come back this way".into()),
        ),
        Snat::Auto | Snat::Masquerade => {}
    }
    if ok.all_ok(&["path", "snat"])
        && f.path == PathMode::Stack
        && matches!(f.snat, Snat::Fixed(_) | Snat::Masquerade)
    {
        sink.error(
            &sp.field("path"),
            ctx,
            format!(
                "path = \"stack\" cannot be combined with snat = \"{}\": the stack drops packets whose source is one of its own addresses",
                f.snat
            ),
            Some("use path = \"auto\" (SNATed flows are redirected), or snat = \"off\" / \"auto\"".into()),
        );
    }
    let mut seen = HashSet::new();
    for (net, span) in f.allow.iter().zip(&sp.allow) {
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
    if let (MssClamp::Fixed(_), true) = (f.mss_clamp, ok.all_ok(&["mss_clamp", "proto"])) {
        if f.proto == Proto::Udp {
            sink.warning(
                &sp.field("mss_clamp"),
                ctx,
                "mss_clamp has no effect on UDP",
                Some("remove it, or use proto = \"tcp\" or \"both\"".into()),
            );
        }
    }
}

fn check_names(parsed: &Parsed, sink: &mut Sink) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, f) in parsed.rules.forwards.iter().enumerate() {
        if let Some(&j) = first.get(f.name.as_str()) {
            let line = sink
                .place(&parsed.spans[j].field("name"))
                .map_or(String::new(), |p| format!(" (first defined on {p})"));
            sink.error(
                &parsed.spans[i].field("name"),
                Some(&ctx(f)),
                format!("duplicate forward name \"{}\"{line}", f.name),
                Some(
                    "names identify forwards in the CLI and metrics: give each a unique one".into(),
                ),
            );
        } else {
            first.insert(&f.name, i);
        }
    }
}

fn check_limits(parsed: &Parsed, sink: &mut Sink) {
    let forwards = &parsed.rules.forwards;
    if forwards.len() > MAX_RULES as usize {
        let span = parsed.spans[MAX_RULES as usize].table.clone();
        sink.error(
            &span,
            None,
            format!(
                "too many forwards: {} (the limit is {MAX_RULES})",
                forwards.len()
            ),
            Some("merge forwards that differ only in ports into port ranges".into()),
        );
    }
    let mut listeners = 0u64;
    let mut reported_listeners = false;
    let mut prefixes = 0u64;
    let mut reported_prefixes = false;
    for (f, sp) in forwards.iter().zip(&parsed.spans) {
        let addrs = match f.listen {
            Listen::Addr(_) => 1,
            Listen::Interface => ASSUMED_IFACE_ADDRS,
        };
        listeners += f.listener_entries(addrs);
        if listeners > u64::from(MAX_LISTENERS) && !reported_listeners {
            reported_listeners = true;
            sink.error(
                &sp.field("port"),
                Some(&ctx(f)),
                format!("too many listener entries: the forwards up to this one need {listeners} (the limit is {MAX_LISTENERS})"),
                Some(format!(
                    "each port x protocol x listen address is one entry, and listen = \"interface\" counts as {ASSUMED_IFACE_ADDRS} addresses; use a fixed listen address or smaller port ranges"
                )),
            );
        }
        prefixes += f.allow.len() as u64;
        if prefixes > u64::from(MAX_ALLOW_PREFIXES) && !reported_prefixes {
            reported_prefixes = true;
            sink.error(
                &sp.field("allow"),
                Some(&ctx(f)),
                format!("too many allow-list entries: the forwards up to this one list {prefixes} (the limit is {MAX_ALLOW_PREFIXES} over all forwards)"),
                Some("summarise addresses into wider CIDRs".into()),
            );
        }
    }
}

/// Two listeners overlap when one packet could match both: same interface,
/// a common protocol, intersecting ports, addresses that may coincide, and
/// a node both apply on (`nodes`).
/// The interface form overlaps any address on its interface, because the
/// fixed address may well be one of the interface's own.
pub fn listeners_overlap(a: &Forward, b: &Forward) -> Option<(Vec<L4>, PortRange)> {
    if a.iface != b.iface || !a.shares_a_node_with(b) {
        return None;
    }
    let addrs = match (a.listen, b.listen) {
        (Listen::Addr(x), Listen::Addr(y)) => x == y,
        _ => true,
    };
    if !addrs {
        return None;
    }
    let protos: Vec<L4> = a
        .proto
        .l4()
        .iter()
        .copied()
        .filter(|p| b.proto.includes(*p))
        .collect();
    if protos.is_empty() {
        return None;
    }
    a.ports.intersect(b.ports).map(|r| (protos, r))
}

fn describe_listener(f: &Forward) -> String {
    let addr = match f.listen {
        Listen::Interface => "the interface's addresses".to_owned(),
        Listen::Addr(a) => a.to_string(),
    };
    let ports = if f.ports.is_single() { "port" } else { "ports" };
    format!(
        "{} {ports} {} on {} ({addr})",
        f.proto.as_str(),
        f.ports,
        f.iface
    )
}

fn check_overlaps(parsed: &Parsed, sink: &mut Sink) {
    let forwards = &parsed.rules.forwards;
    let mut by_iface: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, f) in forwards.iter().enumerate() {
        by_iface.entry(&f.iface).or_default().push(i);
    }
    for group in by_iface.values() {
        for (n, &j) in group.iter().enumerate() {
            for &i in &group[..n] {
                let (a, b) = (&forwards[i], &forwards[j]);
                if let Some((protos, common)) = listeners_overlap(a, b) {
                    let line = sink
                        .place(&parsed.spans[i].table)
                        .map_or(String::new(), |p| format!(" on {p}"));
                    let protos: Vec<&str> = protos.iter().map(|p| p.as_str()).collect();
                    sink.error(
                        &parsed.spans[j].field("port"),
                        Some(&ctx(b)),
                        format!(
                            "{} overlaps forward \"{}\"{line} ({}): both take {} port {common}",
                            describe_listener(b),
                            a.name,
                            describe_listener(a),
                            protos.join("/"),
                        ),
                        Some("a packet must match exactly one forward: change `port`, `proto` or `listen` of one of them".into()),
                    );
                }
            }
        }
    }
}
