//! POSTROUTING rules onto the candidate forwards they apply to.
//!
//! After DNAT, a forwarded packet has the target's address and port, the
//! client's source, and leaves by the interface the target is routed
//! through. A SNAT or MASQUERADE rule applies to a forward when its
//! matches (`-p`, `-d`, `--dport`, `-o`, `-s`) hold for all of that
//! traffic; the first such rule wins. `-o vmbr1 -j MASQUERADE` therefore
//! means `snat = "masquerade"` for every forward whose target is reached
//! through vmbr1, which needs to know the routes: from an interfaces file
//! in the input, `--iface-net`, or the live system (`--from-running`).
//! When that cannot be known the forward is still written, and the SNAT
//! question is reported, never guessed.

use ipnet::IpNet;

use super::{
    flatten::Flat,
    ir::{Action, Candidate, SnatChoice, Tri},
    Entry, HostView,
};

pub fn snat(flats: &[Flat], cands: &mut [Candidate], view: &HostView, entries: &mut Vec<Entry>) {
    let mut applied: Vec<Vec<String>> = vec![Vec::new(); flats.len()];
    let mut unsure_rules: Vec<usize> = Vec::new();
    for c in cands.iter_mut() {
        let egress = view.egress(c.target);
        let target_ports = c.map.apply(c.ports);
        let mut stopped: Vec<usize> = Vec::new();
        let mut unsure: Option<(usize, String)> = None;
        let mut decided = None;
        for (i, f) in flats.iter().enumerate() {
            if f.rule.family != c.family || stopped.iter().any(|s| flats[*s].stops(f)) {
                continue;
            }
            let r = &f.rule;
            let mut why = String::new();
            let proto = Tri::from(r.proto.is_none_or(|p| p == c.l4));
            let dst = r
                .dst
                .as_ref()
                .map_or(Tri::Yes, |d| d.covers(&[IpNet::from(c.target)]));
            let dports = match (&r.dports, target_ports) {
                (None, _) => Tri::Yes,
                (Some(ps), Some(tp)) => {
                    if ps
                        .iter()
                        .any(|p| p.start() <= tp.start() && tp.end() <= p.end())
                    {
                        Tri::Yes
                    } else if ps.iter().all(|p| p.intersect(tp).is_none()) {
                        Tri::No
                    } else {
                        why = format!("it matches only some of the target ports {tp}");
                        Tri::Maybe
                    }
                }
                (Some(_), None) => Tri::Maybe,
            };
            let out = match (&r.out_iface, &egress) {
                (None, _) => Tri::Yes,
                (Some(m), Some(e)) => Tri::from(m.matches(e)),
                (Some(m), None) => {
                    why = format!(
                        "whether {} is reached through {} is not known offline; import the interfaces file too, pass --iface-net {}=NETWORK, or import with --from-running",
                        c.target, m.name, m.name
                    );
                    Tri::Maybe
                }
            };
            let inn = r
                .in_iface
                .as_ref()
                .map_or(Tri::Yes, |m| Tri::from(m.matches(&c.iface)));
            let src = match &r.src {
                None => Tri::Yes,
                Some(s) if !c.allow.is_empty() => s.covers(&c.allow),
                Some(s) => {
                    // Clients arrive on the forward's interface; a network
                    // that lives behind another interface is not among them
                    // (the VMs' own masquerade, `-s 10.10.10.0/24`).
                    // So is the target's own network, unless clients come
                    // in through the target's interface (a hairpin).
                    let elsewhere = s.nets.iter().all(|n| {
                        view.iface_nets
                            .iter()
                            .any(|(i, net)| *i != c.iface && net.trunc().contains(n))
                    }) || (s.nets.iter().any(|n| n.contains(&c.target))
                        && egress.as_deref() != Some(c.iface.as_str()));
                    match (elsewhere, s.negated) {
                        (true, false) => Tri::No,
                        (true, true) => Tri::Yes,
                        _ => {
                            let t = s.covers(&[]);
                            if t == Tri::Maybe {
                                why = format!("it applies to clients from {} only, and a forward SNATs all of its clients or none", nets_list(&s.nets));
                            }
                            t
                        }
                    }
                }
            };
            let unknown = if r.unknown.is_empty() {
                Tri::Yes
            } else {
                why = format!(
                    "its match {} is not evaluated offline",
                    r.unknown.join(", ")
                );
                Tri::Maybe
            };
            match proto
                .and(dst)
                .and(dports)
                .and(out)
                .and(inn)
                .and(src)
                .and(unknown)
            {
                Tri::No => continue,
                Tri::Maybe => {
                    if matches!(
                        r.action,
                        Action::Snat { .. } | Action::Masquerade | Action::Stop(_)
                    ) && unsure.is_none()
                    {
                        unsure = Some((i, why));
                    }
                    continue;
                }
                Tri::Yes => {}
            }
            match &r.action {
                Action::Snat { addr } => {
                    decided = Some((i, SnatChoice::Addr(*addr)));
                    break;
                }
                Action::Masquerade => {
                    decided = Some((i, SnatChoice::Masquerade));
                    break;
                }
                Action::Stop(_) => stopped.push(i),
                _ => {}
            }
        }
        let name = format!("{} {} {}", c.iface, c.l4, c.ports);
        if let Some((u, why)) = unsure {
            unsure_rules.push(u);
            entries.push(Entry::left(
                flats[u].rule.origin.clone(),
                format!("may or may not apply to the forward of {} ({name} -> {}): {why}; its snat is left at \"auto\", set it by hand", c.origins[0].at(), c.target),
            ));
            c.comments.push(format!(
                "snat: undetermined, see {} in the list at the end",
                flats[u].rule.origin.at()
            ));
            continue;
        }
        match decided {
            Some((i, choice)) => {
                c.snat = choice;
                applied[i].push(name);
                c.comments.push(format!("SNAT from {}: {}", flats[i].rule.origin.at(), flats[i].rule.origin.text));
            }
            None => c.comments.push("no SNAT rule applies: netfilter kept the client's address; snat = \"auto\" keeps it too wherever replies route back through this host".into()),
        }
    }
    for (i, f) in flats.iter().enumerate() {
        let r = &f.rule;
        match &r.action {
            Action::Snat { .. } | Action::Masquerade => {}
            Action::Unsupported(reason) => {
                entries.push(Entry::left(r.origin.clone(), reason.clone()));
                continue;
            }
            Action::Dnat { .. } | Action::Redirect { .. } | Action::LocalPort { .. } => {
                entries.push(Entry::left(
                    r.origin.clone(),
                    "destination NAT in POSTROUTING is not possible; this rule never did anything"
                        .into(),
                ));
                continue;
            }
            _ => continue,
        }
        let specific = r.dst.as_ref().and_then(|d| d.single()).is_some()
            && (r.dports.is_some() || r.proto.is_some());
        if applied[i].is_empty() {
            let general = r.dst.is_none() && r.dports.is_none();
            entries.push(Entry::kept(
                r.origin.clone(),
                if unsure_rules.contains(&i) {
                    "also source NAT of other routed traffic: keep it in your firewall for that".into()
                } else if general {
                    "source NAT of routed traffic that is not a forward (such as the VMs' own internet access): keep it in your firewall; the forwarder SNATs only its own forwards".into()
                } else {
                    "matches none of the translated forwards (by -p, -d, --dport, -o, -s), or an earlier rule covers them: keep it if other traffic needs it".into()
                },
            ));
        } else if !specific {
            entries.push(Entry::kept(
                r.origin.clone(),
                format!("translated for the forwards it applies to ({}); it also applies to other traffic, so keep it in your firewall for that", applied[i].join(", ")),
            ));
        }
    }
}

fn nets_list(nets: &[IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<bool> for Tri {
    fn from(b: bool) -> Tri {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }
}
