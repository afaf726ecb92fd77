//! `explain`'s text for the terminal (the JSON form is the CLI's).
use super::{Explanation, Query};
use crate::model::*;

/// Text for the terminal.
pub fn render(rules: &RuleSet, q: &Query, e: &Explanation) -> String {
    let mut out = format!("{} {} -> {} on {}\n", q.proto, q.from, q.to, q.iface);
    match e {
        Explanation::Translated {
            rule,
            original,
            reply,
            notes,
        } => {
            let f = rules.forward(rule);
            let summary = f.map_or(String::new(), |f| {
                format!(
                    " ({} {} port {} -> {}, snat {})",
                    f.iface,
                    f.listen_label(),
                    f.ports,
                    f.target,
                    f.snat
                )
            });
            out.push_str(&format!("matches forward \"{rule}\"{summary}\n"));
            let width = original
                .before
                .to_string()
                .len()
                .max(reply.before.to_string().len());
            out.push_str(&format!(
                "  original: {:width$}  becomes  {}\n",
                original.before.to_string(),
                original.after
            ));
            out.push_str(&format!(
                "  reply:    {:width$}  becomes  {}\n",
                reply.before.to_string(),
                reply.after
            ));
            for n in notes {
                out.push_str(&format!("  note: {n}\n"));
            }
            out.push_str(&not_forwarded_note(rules, rule));
        }
        Explanation::Refused { rule, reason } => {
            out.push_str(&format!("refused by forward \"{rule}\": {reason}\n"));
            out.push_str(&not_forwarded_note(rules, rule));
        }
        Explanation::NoMatch { reasons } => {
            out.push_str("no forward matches: the packet is passed to the host untouched\n");
            for r in reasons {
                out.push_str(&format!("  - {r}\n"));
            }
        }
    }
    out
}

/// What `explain` adds for a forward this release does not forward
/// (NAT46): the explanation is what the rule means, not what a running
/// daemon does.
fn not_forwarded_note(rules: &RuleSet, rule: &str) -> String {
    match rules.forward(rule) {
        Some(f) if crate::needs_nat46(f) => "  note: NAT46 is not in this release: `forwarder run` refuses a rules file with this forward\n".into(),
        _ => String::new(),
    }
}
