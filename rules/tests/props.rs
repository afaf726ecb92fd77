//! Property tests: overlap detection against a brute-force model, print/parse
//! round-trips, and arbitrary input thrown at the parser and importers.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use rules::{
    import::{HostView, Input, Options, Source},
    listeners_overlap, load_str,
    print::forward_to_toml,
    to_toml, Af, AttachMode, Family, FlowRate, Forward, Global, Host, IfaceSettings, Listen,
    LogFormat, LogLevel, MssClamp, PathMode, PortRange, Proto, Reject, RuleSet, RulesWatch, Snat,
    Target, Timeouts, L4,
};

/// Ports up to `max`, ranges up to `max_len` ports long.
fn port_range(max: u16, max_len: u16) -> impl Strategy<Value = PortRange> {
    (1..=max, 0..max_len)
        .prop_map(move |(a, len)| PortRange::new(a, a.saturating_add(len).min(max)).unwrap())
}

fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Both)]
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6), Just(Family::Both)]
}

/// Small forwards on few interfaces/addresses/ports, both families, so
/// overlaps are common.
fn small_forward() -> impl Strategy<Value = Forward> {
    (0..2u8, 0..5u8, family(), proto(), port_range(40, 40)).prop_map(
        |(iface, addr, family, proto, ports)| {
            let mut f = Forward::new(
                "x",
                format!("eth{iface}"),
                ports,
                Target::ip(Ipv4Addr::new(10, 9, 9, 9), None),
            );
            (f.listen, f.family) = match addr {
                0 => (Listen::Interface, family),
                1 | 2 => (
                    Listen::Addr(Ipv4Addr::new(192, 168, 1, addr).into()),
                    Family::Ipv4,
                ),
                _ => (
                    Listen::Addr(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(addr)).into()),
                    Family::Ipv6,
                ),
            };
            f.proto = proto;
            f
        },
    )
}

/// Where a listener may match: one fixed address, or any address of a
/// family (the interface form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Fixed(IpAddr),
    Any(Af),
}

/// Every (interface, address slot, protocol, port) a forward listens on.
fn expand(f: &Forward) -> BTreeSet<(String, Slot, L4, u16)> {
    let slots: Vec<Slot> = match f.listen {
        Listen::Interface => f.family.afs().iter().map(|af| Slot::Any(*af)).collect(),
        Listen::Addr(a) => vec![Slot::Fixed(a)],
    };
    let mut out = BTreeSet::new();
    for slot in slots {
        for p in f.proto.l4() {
            for port in f.ports.iter() {
                out.insert((f.iface.clone(), slot, *p, port));
            }
        }
    }
    out
}

fn slots_meet(a: Slot, b: Slot) -> bool {
    match (a, b) {
        (Slot::Fixed(x), Slot::Fixed(y)) => x == y,
        (Slot::Any(af), Slot::Fixed(y)) | (Slot::Fixed(y), Slot::Any(af)) => Af::of(y) == af,
        (Slot::Any(x), Slot::Any(y)) => x == y,
    }
}

fn brute_overlap(a: &Forward, b: &Forward) -> BTreeSet<(L4, u16)> {
    let (ea, eb) = (expand(a), expand(b));
    let mut out = BTreeSet::new();
    for (ia, aa, pa, porta) in &ea {
        for (ib, ab, pb, portb) in &eb {
            let addrs_may_meet = slots_meet(*aa, *ab);
            if ia == ib && pa == pb && porta == portb && addrs_may_meet {
                out.insert((*pa, *porta));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn overlap_matches_brute_force(a in small_forward(), b in small_forward()) {
        let want = brute_overlap(&a, &b);
        let got: BTreeSet<(L4, u16)> = listeners_overlap(&a, &b)
            .map(|(protos, range)| protos.iter().flat_map(|p| range.iter().map(move |port| (*p, port))).collect())
            .unwrap_or_default();
        prop_assert_eq!(&got, &want);

        // And the loader agrees: two such forwards load iff they do not overlap.
        let mut b2 = b.clone();
        b2.name = "y".into();
        let text = format!("{}\n{}", forward_to_toml(&a), forward_to_toml(&b2));
        let loaded = load_str("p.toml", &text);
        prop_assert_eq!(loaded.is_ok(), want.is_empty(), "{}", text);
    }
}

fn addr_in(a: u8) -> impl Strategy<Value = Ipv4Addr> {
    (any::<u8>(), any::<u8>(), 1..=254u8).prop_map(move |(b, c, d)| Ipv4Addr::new(a, b, c, d))
}

/// A unique-local IPv6 address under `fd00:<a>::/32`.
fn addr6_in(a: u16) -> impl Strategy<Value = Ipv6Addr> {
    (any::<u16>(), 1..=0xfffeu16).prop_map(move |(b, h)| Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, h))
}

/// An address of `af` in the region `a` (10, 172, 192...).
fn addr_of(af: Af, a: u8) -> BoxedStrategy<IpAddr> {
    match af {
        Af::V4 => addr_in(a).prop_map(IpAddr::V4).boxed(),
        Af::V6 => addr6_in(u16::from(a)).prop_map(IpAddr::V6).boxed(),
    }
}

fn af() -> impl Strategy<Value = Af> {
    prop_oneof![Just(Af::V4), Just(Af::V6)]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 1..=32u8)
            .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())),
        (any::<u128>(), 1..=128u8)
            .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc())),
    ]
}

/// The listen side: the interface form with a family, or a fixed address
/// of either family (whose family is its own).
fn listen() -> impl Strategy<Value = (Listen, Family)> {
    prop_oneof![
        family().prop_map(|f| (Listen::Interface, f)),
        af().prop_flat_map(
            |af| addr_of(af, 192).prop_map(move |a| (Listen::Addr(a), Family::from(af)))
        ),
    ]
}

/// A target host of family `taf`: an address, or for IPv4 also a DNS name
/// of the shapes people write (a short hostname, a Kubernetes Service name,
/// a trailing dot, `_`); names are resolved for A records only.
fn host(taf: Af) -> BoxedStrategy<Host> {
    if taf == Af::V6 {
        return addr_of(taf, 10).prop_map(Host::Addr).boxed();
    }
    prop_oneof![
        addr_of(taf, 10).prop_map(Host::Addr),
        "[a-z0-9]([a-z0-9_-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,4}(\\.[a-z][a-z0-9-]{0,5}[a-z0-9])?\\.?"
            .prop_filter("not a loopback name", |n| !rules::target::loopback_name(n))
            .prop_filter("not all digits", |n| !n.trim_end_matches('.').split('.').next_back().unwrap_or("").bytes().all(|b| b.is_ascii_digit()))
            .prop_map(Host::Name),
    ]
    .boxed()
}

/// A valid forward of either family, translating between families or not.
fn forward(i: usize) -> impl Strategy<Value = Forward> {
    af().prop_flat_map(move |taf| forward_to(i, taf))
}

/// A valid forward whose target is of family `taf`.
fn forward_to(i: usize, taf: Af) -> impl Strategy<Value = Forward> {
    (
        proptest::option::of("(?s).{0,20}"),
        listen(),
        proto(),
        // Short enough that six forwards stay within MAX_LISTENERS.
        port_range(65535, 2000),
        host(taf),
        0..3u8,
        1..=65535u16,
        prop_oneof![
            Just(Snat::Off),
            Just(Snat::Auto),
            Just(Snat::Masquerade),
            // An SNAT address is of the target's family.
            addr_of(taf, 172).prop_map(Snat::Fixed)
        ],
        prop::collection::vec(net(), 0..5),
        prop_oneof![
            Just(MssClamp::Auto),
            Just(MssClamp::Off),
            (MssClamp::MIN..=MssClamp::MAX).prop_map(MssClamp::Fixed)
        ],
        prop_oneof![Just(Reject::Rst), Just(Reject::Drop)],
        prop_oneof![
            Just(PathMode::Auto),
            Just(PathMode::Redirect),
            Just(PathMode::Stack)
        ],
    )
        .prop_map(
            move |(
                description,
                (listen, family),
                proto,
                ports,
                taddr,
                tkind,
                tport,
                snat,
                allow,
                mss_clamp,
                reject,
                path,
            )| {
                let tports = match tkind {
                    0 => None,
                    1 => PortRange::single(tport),
                    // A same-size range that fits below 65536.
                    _ => {
                        let start = tport.min(u16::MAX - (ports.end() - ports.start()));
                        PortRange::new(start, start + (ports.end() - ports.start()))
                    }
                };
                let mut f = Forward {
                    name: format!("f{i}"),
                    description,
                    // One interface per forward: overlaps are tested above.
                    iface: format!("eth{i}"),
                    listen,
                    family,
                    proto,
                    ports,
                    target: Target {
                        host: taddr,
                        ports: tports,
                    },
                    snat,
                    // Entries of families the forward takes.
                    allow: Vec::new(),
                    mss_clamp,
                    reject,
                    path,
                    nodes: Vec::new(),
                };
                f.allow = allow
                    .into_iter()
                    .filter(|n| f.listen_afs().contains(&Af::of(n.addr())))
                    .collect();
                let translated = f.listen_afs().iter().any(|af| f.translates(*af));
                // Translated clients cannot keep their address.
                if translated && f.snat == Snat::Off {
                    f.snat = Snat::Auto;
                }
                // A stack path cannot carry SNAT (validation refuses it),
                // and translated flows are always SNATed.
                if f.path == PathMode::Stack
                    && (matches!(f.snat, Snat::Fixed(_) | Snat::Masquerade) || translated)
                {
                    f.path = PathMode::Auto;
                }
                f
            },
        )
        .prop_flat_map(|f| {
            // Distinct names (a duplicate only warns, but printing keeps it).
            prop::collection::btree_set("[a-z][a-z0-9-]{0,8}[a-z0-9](\\.lan)?", 0..3).prop_map(
                move |nodes| Forward {
                    nodes: nodes.into_iter().collect(),
                    ..f.clone()
                },
            )
        })
}

fn global() -> impl Strategy<Value = Global> {
    (
        1..=(1u32 << 24),
        port_range(65535, 65535),
        prop_oneof![
            Just(LogLevel::Error),
            Just(LogLevel::Warn),
            Just(LogLevel::Info),
            Just(LogLevel::Debug),
            Just(LogLevel::Trace)
        ],
        prop_oneof![Just(LogFormat::Text), Just(LogFormat::Json)],
        proptest::option::of(
            (any::<[u8; 4]>(), 1..=65535u16).prop_map(|(a, p)| SocketAddr::from((a, p))),
        ),
        prop::collection::vec(1..=100_000_000u64, Timeouts::KEYS.len()),
        (
            prop_oneof![
                Just(RulesWatch::Auto),
                Just(RulesWatch::Inotify),
                Just(RulesWatch::Poll)
            ],
            100..=3_600_000u64,
            proptest::option::of((1..=100_000u32, 0..3usize, 1..=1000u32)),
            prop::collection::vec(
                (addr_in(10), prop_oneof![Just(53u16), 1..=65535u16])
                    .prop_map(|(a, p)| SocketAddr::from((a, p))),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(
                conntrack_max,
                snat_ports,
                log_level,
                log_format,
                metrics,
                secs,
                (rules_watch, poll_ms, rate, dns_servers),
            )| {
                let mut timeouts = Timeouts::default();
                for (k, s) in Timeouts::KEYS.iter().zip(secs) {
                    timeouts.set(k, Duration::from_secs(s));
                }
                Global {
                    conntrack_max,
                    snat_ports,
                    log_level,
                    log_format,
                    metrics,
                    timeouts,
                    new_flows_per_source: rate.map(|(count, unit, burst)| FlowRate {
                        count,
                        per: Duration::from_secs([1, 60, 3600][unit]),
                        burst,
                    }),
                    rules_watch,
                    rules_poll_interval: Duration::from_millis(poll_ms),
                    dns_servers,
                }
            },
        )
}

fn interfaces() -> impl Strategy<Value = std::collections::BTreeMap<String, IfaceSettings>> {
    prop::collection::btree_map(
        prop_oneof![
            Just("eth0".to_string()),
            Just("eth0.100".to_string()),
            Just("tailscale0".to_string()),
            Just("vmbr1".to_string())
        ],
        prop_oneof![
            Just(AttachMode::Auto),
            Just(AttachMode::Tc),
            Just(AttachMode::Xdp),
            Just(AttachMode::TcLegacy)
        ]
        .prop_map(|attach| IfaceSettings { attach }),
        0..3,
    )
}

fn rule_set() -> impl Strategy<Value = RuleSet> {
    (global(), 0..6usize, interfaces()).prop_flat_map(|(g, n, interfaces)| {
        let forwards: Vec<_> = (0..n).map(forward).collect();
        forwards.prop_map(move |forwards| RuleSet {
            global: g.clone(),
            forwards,
            interfaces: interfaces.clone(),
        })
    })
}

/// The whole import pipeline on one input.
fn import_text(name: &str, text: &str, source: Source) -> rules::import::Imported {
    let opts = Options {
        source,
        host: HostView::default(),
        from_running: false,
    };
    rules::import::import(
        &[Input {
            name: name.into(),
            text: text.into(),
        }],
        &opts,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn print_then_parse_is_identity(rs in rule_set()) {
        let text = to_toml(&rs);
        let loaded = load_str("p.toml", &text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&loaded.rules, &rs);
        // And printing is stable.
        prop_assert_eq!(to_toml(&loaded.rules), text);
    }
}

const EXAMPLE: &str = include_str!("../examples/tailnet-k3s.toml");

/// Text edits: delete a span, insert a snippet, duplicate a line.
fn mutated_example() -> impl Strategy<Value = String> {
    let snippets = prop_oneof![
        Just("="),
        Just("\""),
        Just("["),
        Just("]]"),
        Just("\n"),
        Just("0"),
        Just("-"),
        Just(":"),
        Just("[[forward]]\n"),
        Just("port = 0\n"),
        Just("é"),
        Just("'''"),
        Just("{"),
        Just("::"),
        Just("/33"),
    ];
    prop::collection::vec(
        (0..3u8, any::<prop::sample::Index>(), 0..40usize, snippets),
        1..6,
    )
    .prop_map(|edits| {
        let mut s = EXAMPLE.to_owned();
        for (kind, at, len, snippet) in edits {
            let mut pos = at.index(s.len() + 1);
            while !s.is_char_boundary(pos) {
                pos -= 1;
            }
            match kind {
                0 => {
                    let mut end = (pos + len).min(s.len());
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.replace_range(pos..end, "");
                }
                1 => s.insert_str(pos, snippet),
                _ => {
                    let line_start = s[..pos].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = s[pos..].find('\n').map_or(s.len(), |i| pos + i);
                    let line = s[line_start..line_end].to_owned();
                    s.insert_str(line_end, &format!("\n{line}"));
                }
            }
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let _ = load_str("f.toml", &text);
        for (name, source) in [("f", Source::Iptables), ("f.service", Source::Socat), ("f", Source::Ufw)] {
            let _ = import_text(name, &text, source);
        }
    }

    #[test]
    fn mutated_files_never_panic(text in mutated_example()) {
        if let Ok(loaded) = load_str("f.toml", &text) {
            // Whatever loads also prints and reloads to the same model.
            prop_assert_eq!(load_str("g.toml", &to_toml(&loaded.rules)).unwrap().rules, loaded.rules);
        }
    }

    #[test]
    fn iptables_like_lines_never_panic(words in prop::collection::vec(prop_oneof![
        Just("-A"), Just("PREROUTING"), Just("POSTROUTING"), Just("-i"), Just("eth0"), Just("-p"), Just("tcp"), Just("udp"),
        Just("--dport"), Just("80"), Just("1:65535"), Just("-j"), Just("DNAT"), Just("SNAT"), Just("MASQUERADE"),
        Just("--to-destination"), Just("10.0.0.1:80"), Just("10.0.0.1:1-3"), Just("--to-source"), Just("10.0.0.2"),
        Just("-d"), Just("10.0.0.0/8"), Just("-s"), Just("!"), Just("-m"), Just("multiport"), Just("--dports"), Just("1,2:3"),
        Just("*nat"), Just("*filter"), Just(":X"), Just("-t"), Just("nat"), Just("\\\n"),
    ], 0..20)) {
        let imported = import_text("", &words.join(" "), Source::Iptables);
        // Whatever is generated either loads or says why; it never panics.
        let _ = imported.validate("gen.toml");
    }
}
