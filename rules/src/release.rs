//! What the rules format takes but this release's dataplane does not
//! forward: NAT46, an IPv4 client of an IPv6 target. IPv4, NAT66 (IPv6 to
//! IPv6) and NAT64 (IPv6 clients of an IPv4 target, translated per flow
//! and SNATed to an IPv4 address of the host) forwards run.
//!
//! The fact a reader gets wrong: such a file is *valid*. `check`,
//! `explain` and `import` handle it fully, so validation only warns; the
//! refusal is `forwarder run`'s (and a running daemon's reload, which keeps
//! the configuration it has). Both print the same diagnostic, found here,
//! so the two can never disagree about which forwards are meant.

use crate::{
    diagnostics::{Diagnostic, Severity, Sink},
    model::{Forward, Listen},
    parse::ForwardSpans,
    Af, Loaded,
};

/// The message of the warning (and of `run`'s error): how a diagnostic is
/// recognised as this one.
pub const TRANSLATION_NOT_FORWARDED: &str = "NAT46 is not in this release: the dataplane \
     translates IPv6 clients to an IPv4 target (NAT64) but not IPv4 clients to an IPv6 target, \
     so `forwarder run` refuses a rules file with a forward that takes IPv4 clients to an IPv6 \
     target (check, explain and import take it)";

const HELP: &str = "keep this traffic in socat for now and leave the forward out, or give \
     the forward IPv6 clients only (`family = \"ipv6\"`, an IPv6 listen address)";

/// Whether `f` has IPv6 clients or an IPv6 target: the daemon loads the
/// IPv6 path (`fwd_ingress6`) only for such a file.
pub fn needs_ipv6(f: &Forward) -> bool {
    f.target.af() == Af::V6 || f.listen_afs().contains(&Af::V6)
}

/// Whether `f` takes clients of a family other than its target's (NAT64
/// or NAT46).
pub fn needs_translation(f: &Forward) -> bool {
    let target = f.target.af();
    f.listen_afs().iter().any(|af| *af != target)
}

/// Whether `f` takes IPv4 clients to an IPv6 target (NAT46): what this
/// release does not forward.
pub fn needs_nat46(f: &Forward) -> bool {
    f.target.af() == Af::V6 && f.listen_afs().contains(&Af::V4)
}

/// Warns about a forward that [`needs_nat46`], at the value that makes it
/// so: a fixed IPv4 listen address, else the IPv6 target (of an interface
/// listener's IPv4 clients). Runs when the values it reads parsed (a
/// placeholder target is IPv4).
pub(crate) fn check(
    f: &Forward,
    sp: &ForwardSpans,
    ok: &crate::partial::Failed,
    ctx: Option<&str>,
    sink: &mut Sink,
) {
    if !ok.all_ok(&["to", "listen", "family"]) || !needs_nat46(f) {
        return;
    }
    let span = if matches!(f.listen, Listen::Addr(a) if a.is_ipv4()) {
        sp.field("listen")
    } else {
        sp.field("to")
    };
    sink.warning(&span, ctx, TRANSLATION_NOT_FORWARDED, Some(HELP.into()));
}

impl Loaded {
    /// The warnings about forwards this release cannot forward, turned
    /// into the errors `forwarder run` refuses the file with.
    pub fn not_forwarded(&self) -> Vec<Diagnostic> {
        self.warnings
            .warnings()
            .filter(|d| d.message == TRANSLATION_NOT_FORWARDED)
            .map(|d| Diagnostic {
                severity: Severity::Error,
                ..d.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_str, Location};

    const FILE: &str = r#"[[forward]]
name = "v4"
in = "vmbr0"
port = 80
to = "192.168.100.80:80"

[[forward]]
name = "nat64"
in = "tailscale0"
family = "both"
port = 8080
to = "10.43.126.136:80"

[[forward]]
name = "nat66"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:80"

[[forward]]
name = "nat46"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "[fd00:100::80]:80"

[[forward]]
name = "v6-listen"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 82
to = "192.168.100.80:80"
"#;

    #[test]
    fn only_nat46_is_refused_at_the_value_that_makes_it_so() {
        let loaded = load_str("r.toml", FILE).expect("the file is valid");
        let got: Vec<(String, Location)> = loaded
            .not_forwarded()
            .into_iter()
            .map(|d| {
                assert!(d.is_error());
                (d.context.unwrap(), d.location.unwrap())
            })
            .collect();
        let at = |line, column| Location { line, column };
        // The IPv4, NAT66 and NAT64 forwards ("nat64", "v6-listen") are
        // not named; check shows the same text as a warning.
        assert_eq!(got, [("forward \"nat46\"".to_string(), at(24, 10))]);
        assert_eq!(loaded.warnings.len(), 1);
        let shown = loaded.warnings.to_string();
        assert!(
            shown
                .contains("r.toml:24:10: warning: forward \"nat46\": NAT46 is not in this release"),
            "{shown}"
        );
        assert!(!shown.contains("NAT64 is not"), "{shown}");
    }

    #[test]
    fn ipv4_nat66_and_nat64_files_have_nothing_to_refuse() {
        let parts: Vec<&str> = FILE.split("\n\n").collect();
        for file in [
            parts[0].to_string(),
            format!("{}\n\n{}", parts[0], parts[2]),
            format!("{}\n\n{}\n\n{}", parts[1], parts[2], parts[4]),
        ] {
            let loaded = load_str("r.toml", &file).unwrap();
            assert!(loaded.not_forwarded().is_empty(), "{file}");
            assert!(loaded.warnings.is_empty(), "{file}");
        }
    }
}
