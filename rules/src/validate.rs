//! Checks between values and between forwards: what parses but cannot work.

use std::collections::{BTreeMap, HashMap};

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
    let target_ok = ok.all_ok(&["to"]);
    crate::validate_addrs::check(f, sp, ok, ctx, sink);
    crate::release::check(f, sp, ok, ctx, sink);
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
            Listen::Interface => ASSUMED_IFACE_ADDRS * f.listen_afs().len() as u64,
        };
        listeners += f.listener_entries(addrs);
        if listeners > u64::from(MAX_LISTENERS) && !reported_listeners {
            reported_listeners = true;
            sink.error(
                &sp.field("port"),
                Some(&ctx(f)),
                format!("too many listener entries: the forwards up to this one need {listeners} (the limit is {MAX_LISTENERS})"),
                Some(format!(
                    "each port x protocol x listen address is one entry, and listen = \"interface\" counts as {ASSUMED_IFACE_ADDRS} addresses per family; use a fixed listen address or smaller port ranges"
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
        // An address of one family never equals one of the other.
        _ => a.listen_afs().iter().any(|af| b.listen_afs().contains(af)),
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
        Listen::Interface if f.family == Family::Ipv4 => "the interface's addresses".to_owned(),
        Listen::Interface => format!("the interface's {} addresses", f.family.label()),
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
