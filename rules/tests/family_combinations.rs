//! Every combination of listen side, `family`, target, `snat`, `path` and
//! allow-list families, loaded and compared with an independent statement
//! of the dual-stack rules: a file loads exactly when the rules say it may.

use proptest::prelude::*;
use rules::load_str;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fam {
    V4,
    V6,
}

#[derive(Clone, Debug)]
struct Case {
    /// None: the interface form.
    listen: Option<Fam>,
    /// None: no `family` key; Some(None) would be meaningless.
    family: Option<&'static str>,
    target: Fam,
    snat: &'static str,
    path: &'static str,
    allow: Vec<Fam>,
}

fn addr(f: Fam, host: u8) -> String {
    match f {
        Fam::V4 => format!("10.0.0.{host}"),
        Fam::V6 => format!("fd00::{host}"),
    }
}

fn text(c: &Case) -> String {
    let mut s = String::from("[[forward]]\nname = \"x\"\nin = \"eth0\"\nport = 80\n");
    if let Some(l) = c.listen {
        s += &format!("listen = \"{}\"\n", addr(l, 1));
    }
    if let Some(f) = c.family {
        s += &format!("family = \"{f}\"\n");
    }
    s += &format!("to = \"{}\"\n", addr(c.target, 2));
    s += &match c.snat {
        "v4" => format!("snat = \"{}\"\n", addr(Fam::V4, 3)),
        "v6" => format!("snat = \"{}\"\n", addr(Fam::V6, 3)),
        k => format!("snat = \"{k}\"\n"),
    };
    s += &format!("path = \"{}\"\n", c.path);
    if !c.allow.is_empty() {
        let list: Vec<String> = c
            .allow
            .iter()
            .map(|f| format!("\"{}\"", addr(*f, 9)))
            .collect();
        s += &format!("allow = [{}]\n", list.join(", "));
    }
    s
}

/// The dual-stack rules of docs/rules.md, written out on their own.
fn may_load(c: &Case) -> bool {
    let fams = |k: &str| match k {
        "ipv4" => vec![Fam::V4],
        "ipv6" => vec![Fam::V6],
        _ => vec![Fam::V4, Fam::V6],
    };
    let listened: Vec<Fam> = match (c.listen, c.family) {
        // A fixed address has its own family; `family` may only repeat it.
        (Some(l), Some(f)) if fams(f) != vec![l] => return false,
        (Some(l), _) => vec![l],
        (None, Some(f)) => fams(f),
        (None, None) => vec![c.target],
    };
    let translated = listened.iter().any(|f| *f != c.target);
    let snat_ok = match c.snat {
        "v4" => c.target == Fam::V4,
        "v6" => c.target == Fam::V6,
        "off" => !translated,
        _ => true,
    };
    let path_ok = c.path != "stack" || (!translated && matches!(c.snat, "off" | "auto"));
    let allow_ok = c.allow.iter().all(|f| listened.contains(f));
    snat_ok && path_ok && allow_ok
}

fn fam() -> impl Strategy<Value = Fam> {
    prop_oneof![Just(Fam::V4), Just(Fam::V6)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::option::of(fam()),
        proptest::option::of(prop_oneof![Just("ipv4"), Just("ipv6"), Just("both")]),
        fam(),
        prop_oneof![
            Just("off"),
            Just("auto"),
            Just("masquerade"),
            Just("v4"),
            Just("v6")
        ],
        prop_oneof![Just("auto"), Just("redirect"), Just("stack")],
        prop::collection::vec(fam(), 0..3),
    )
        .prop_map(|(listen, family, target, snat, path, allow)| Case {
            listen,
            family,
            target,
            snat,
            path,
            allow,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn a_file_loads_exactly_when_the_family_rules_allow_it(c in case()) {
        let t = text(&c);
        let loaded = load_str("f.toml", &t);
        prop_assert_eq!(loaded.is_ok(), may_load(&c), "{}\n{:?}", t, loaded.err().map(|d| d.to_string()));
    }
}
