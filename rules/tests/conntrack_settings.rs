//! The connection-tracking settings of `[global]`: netfilter's timeouts by
//! default (and the new states' keys), the per-source new-flow limit and
//! its kernel form, the SNAT port range's default; each bad value with its
//! message.

use std::time::Duration;

use forwarder_common::conntrack::{CtState, CtTimeouts};
use rules::{load_str, FlowRate, Timeouts};

const FILE: &str = "rules.toml";

fn global(text: &str) -> rules::Global {
    match load_str(FILE, text) {
        Ok(l) => l.rules.global,
        Err(d) => panic!("{d}"),
    }
}

fn one_error(text: &str) -> String {
    let e: Vec<String> = match load_str(FILE, text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(d) => d.errors().map(|e| e.render(FILE)).collect(),
    };
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn timeouts_default_to_netfilters_and_reach_the_kernel_by_state() {
    let t = Timeouts::default();
    let s = Duration::from_secs;
    assert_eq!(t.tcp_syn_sent, s(120));
    assert_eq!(t.tcp_syn_recv, s(60));
    assert_eq!(t.tcp_established, s(5 * 24 * 3600));
    assert_eq!(t.tcp_close_wait, s(60));
    assert_eq!(t.tcp_last_ack, s(30));
    assert_eq!(t.udp, s(30));
    assert_eq!(t.udp_stream, s(120));
    assert_eq!(t.to_ct(), CtTimeouts::DEFAULT);
    let g = global("[global.timeouts]\ntcp_last_ack = \"45s\"\nudp = \"10s\"\n");
    let ct = g.ct_config().timeouts;
    assert_eq!(ct.secs(6, CtState::LastAck), 45);
    // One key for both unanswered and young replied UDP flows.
    assert_eq!(ct.secs(17, CtState::UdpUnreplied), 10);
    assert_eq!(ct.secs(17, CtState::UdpReplied), 10);
    assert_eq!(ct.secs(17, CtState::UdpStream), 120);
}

#[test]
fn the_per_source_limit_and_its_kernel_form() {
    assert_eq!(global("").new_flows_per_source, None);
    assert_eq!(global("").ct_config().new_flow_interval_ns, 0, "off");
    let g = global("[global]\nnew_flows_per_source = \"20/s\"\n");
    let r = g.new_flows_per_source.unwrap();
    assert_eq!(
        r,
        FlowRate {
            count: 20,
            per: Duration::from_secs(1),
            burst: 20
        }
    );
    // 50 ms apart, a burst of 20 allowed at once.
    assert_eq!(r.gcra_ns(), (50_000_000, 19 * 50_000_000));
    let g = global("[global]\nnew_flows_per_source = \"600/m\"\nnew_flows_burst = 3\n");
    assert_eq!(
        g.new_flows_per_source.unwrap().gcra_ns(),
        (100_000_000, 200_000_000)
    );
    // Per hour: one second's worth of burst is at least one flow.
    let g = global("[global]\nnew_flows_per_source = \"10/h\"\n");
    assert_eq!(g.new_flows_per_source.unwrap().burst, 1);
}

#[test]
fn bad_limits_are_refused_with_a_fix() {
    assert_eq!(
        one_error("[global]\nnew_flows_per_source = \"20 per second\"\n"),
        "rules.toml:2:24: error: global: `20 per second` is not a rate of new flows\n  help: e.g. new_flows_per_source = \"20/s\" (or \"/m\", \"/h\")"
    );
    assert!(one_error("[global]\nnew_flows_per_source = \"0/s\"\n")
        .contains("a limit of 0 refuses every flow"));
    assert!(one_error("[global]\nnew_flows_per_source = \"5/d\"\n")
        .contains("is not a rate of new flows"));
    assert!(one_error("[global]\nnew_flows_burst = 5\n")
        .contains("new_flows_burst without new_flows_per_source"));
    assert!(
        one_error("[global]\nnew_flows_per_source = \"5/s\"\nnew_flows_burst = 0\n")
            .contains("new_flows_burst 0 is out of range")
    );
    assert!(one_error("[global.timeouts]\ntcp_last_acks = \"3s\"\n")
        .contains("did you mean `tcp_last_ack`?"));
}

#[test]
fn the_default_snat_range_lies_below_linuxs_ephemeral_ports() {
    let g = global("");
    assert_eq!((g.snat_ports.start(), g.snat_ports.end()), (1024, 32767));
}
