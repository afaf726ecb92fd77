//! Source allow-lists, per rule. A source outside a rule's list is
//! refused as that rule says: `reject = "rst"` answers like a closed port
//! (a RST built by the program, never the host's stack, where a service
//! may listen on the same port), `reject = "drop"` drops it; both count a denial on the rule and create nothing. A source inside
//! the list is forwarded like any other.
use forwarder_common::{Reason, RULE_DROP_DENIED};
use forwarder_tests::testrun::{
    frames::{ep, tcp, Ep, Ip, CLIENT, VM},
    tc::*,
    Host, EPHEMERAL_PORTS, HOST_LAN, HOST_VM, LAN_IF, TC_ACT_REDIRECT, TC_ACT_SHOT,
};

/// A LAN address no allow-list admits.
const STRANGER: Ip = [192, 168, 1, 200];

const ALLOW: &str = r#"
[[forward]]
name = "web-rst"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"
allow = ["192.168.1.0/28", "10.0.0.0/8"]
reject = "rst"

[[forward]]
name = "web-drop"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "192.168.100.1"
allow = "192.168.1.0/28"
reject = "drop"
"#;

#[test]
fn a_source_outside_the_list_is_answered_with_reject_rst_and_dropped_with_reject_drop() {
    let Some(mut h) = Host::for_test(64, ALLOW) else {
        return;
    };
    let stranger = ep(STRANGER, 40000);
    // A segment from `src` denied by web-rst (port 80): answered with a
    // RST built here, never handed to the stack (where a host service may
    // listen on the same port); test_run/replies.rs checks its bytes.
    let deny_rst = |name: &str, src: Ep, flags: &str| {
        ingress(name, LAN_IF, tcp(src, ep(HOST_LAN, 80), flags, &[]))
            .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
            .rule("web-rst", dropped(RULE_DROP_DENIED))
            .out(Out::Answer)
    };
    // A SYN from `src` denied by web-drop (port 81): dropped.
    let deny_drop = |name: &str, src: Ep| {
        ingress(name, LAN_IF, tcp(src, ep(HOST_LAN, 81), "S", &[]))
            .expect(TC_ACT_SHOT, Reason::DropDenied)
            .rule("web-drop", dropped(RULE_DROP_DENIED))
    };
    let denied = [
        deny_rst("denied SYN, reject rst", stranger, "S"),
        deny_rst("denied ACK, reject rst", stranger, "A"),
        deny_rst(
            "denied SYN, just outside the /28",
            ep([192, 168, 1, 16], 40000),
            "S",
        ),
        deny_drop("denied SYN, reject drop", stranger),
        // 10.0.0.0/8 is in web-rst's list, not web-drop's: lists are per rule.
        deny_drop(
            "source allowed by another rule only",
            ep([10, 1, 2, 3], 40000),
        ),
    ];
    steps_leave_flows_alone(&mut h, &denied);
}

#[test]
fn a_source_inside_the_list_creates_a_flow() {
    let Some(mut h) = Host::for_test(64, ALLOW) else {
        return;
    };
    for (rule, port) in [("web-rst", 80), ("web-drop", 81)] {
        let client = ep(CLIENT, 40000);
        let s = ingress(
            format!("allowed SYN ({rule})"),
            LAN_IF,
            tcp(client, ep(HOST_LAN, port), "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(rule, created(true, false))
        .out(Out::Snat(
            HOST_VM,
            EPHEMERAL_PORTS,
            redirect(client, ep(VM, port)),
        ));
        let o = step(&mut h, &s);
        assert_eq!(
            o.delta.flows_added.len(),
            2,
            "{}: both entries",
            s.description
        );
    }
}
