//! What the rules format takes but this release's dataplane does not
//! forward: translation between families (NAT64, an IPv6 client of an IPv4
//! target; NAT46, the reverse). IPv4 and NAT66 (IPv6 to IPv6) forwards run.
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
pub const TRANSLATION_NOT_FORWARDED: &str = "NAT64/NAT46 is not in this release: the \
     dataplane forwards IPv4 to IPv4 and IPv6 to IPv6 only, so `forwarder run` refuses a rules \
     file with a forward whose clients and target differ in family (check, explain and import \
     take it)";

const HELP: &str = "keep this traffic in socat for now and leave the forward out, or give \
     the forward one family (`family` set to the target's, a listen address of the target's \
     family)";

/// Whether `f` has IPv6 clients or an IPv6 target: the daemon loads the
/// IPv6 path (`fwd_ingress6`) only for such a file.
pub fn needs_ipv6(f: &Forward) -> bool {
    f.target.af() == Af::V6 || f.listen_afs().contains(&Af::V6)
}

/// Whether `f` takes clients of a family other than its target's.
pub fn needs_translation(f: &Forward) -> bool {
    let target = f.target.af();
    f.listen_afs().iter().any(|af| *af != target)
}

/// Warns about a forward [`needs_translation`], at the value that makes it
/// so: an IPv6 target (of IPv4 clients), else a fixed listen address, else
/// `family`. Runs when the values it reads parsed (a placeholder target is
/// IPv4).
pub(crate) fn check(
    f: &Forward,
    sp: &ForwardSpans,
    ok: &crate::partial::Failed,
    ctx: Option<&str>,
    sink: &mut Sink,
) {
    if !ok.all_ok(&["to", "listen", "family"]) || !needs_translation(f) {
        return;
    }
    let span = if f.target.af() == Af::V6 {
        sp.field("to")
    } else if matches!(f.listen, Listen::Addr(a) if a.is_ipv6()) {
        sp.field("listen")
    } else {
        sp.field("family")
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
    fn every_translating_forward_is_named_at_the_value_that_makes_it_so() {
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
        assert_eq!(
            got,
            [
                ("forward \"nat64\"".to_string(), at(10, 10)),
                ("forward \"nat46\"".to_string(), at(26, 6)),
                ("forward \"v6-listen\"".to_string(), at(31, 10)),
            ]
        );
        // The IPv4 and the NAT66 forwards are not named; check shows the
        // same text as a warning.
        assert_eq!(loaded.warnings.len(), 3);
        let shown = loaded.warnings.to_string();
        assert!(
            shown.contains(
                "r.toml:10:10: warning: forward \"nat64\": NAT64/NAT46 is not in this release"
            ),
            "{shown}"
        );
    }

    #[test]
    fn ipv4_and_nat66_files_have_nothing_to_refuse() {
        let parts: Vec<&str> = FILE.split("\n\n").collect();
        for file in [
            parts[0].to_string(),
            format!("{}\n\n{}", parts[0], parts[2]),
        ] {
            let loaded = load_str("r.toml", &file).unwrap();
            assert!(loaded.not_forwarded().is_empty(), "{file}");
            assert!(loaded.warnings.is_empty(), "{file}");
        }
    }
}
