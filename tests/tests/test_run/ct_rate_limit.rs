//! The optional per-source new-flow limit (`new_flows_per_source`, a GCRA
//! in `FWD_CT_CONFIG`): a source gets its burst at once, then one flow per
//! interval; what is over is dropped and counted (`drop_rate_limited`, per
//! rule `rate_limited`); other sources and existing flows are not
//! affected.

use super::ct_support::*;
use forwarder_common::{conntrack::CtConfig, Reason, RULE_DROP_RATE_LIMITED};
use forwarder_tests::require_root;

const RULES: &str = concat!(
    r#"
[global]
snat_ports = "41000-48999"
new_flows_per_source = "1/h"
new_flows_burst = 3
"#,
    forwarder_tests::web_forward!()
);

#[test]
fn a_source_over_its_limit_is_refused_others_are_not() {
    if !require_root("a_source_over_its_limit_is_refused_others_are_not") {
        return;
    }
    let mut h = Host::with_rules(64, RULES);
    // What the daemon writes from [global]: 1 per hour, bursts of 3.
    let loaded = rules::load_str("rules.toml", RULES).expect("rules");
    let cfg: CtConfig = loaded.rules.global.ct_config();
    assert_eq!(cfg.new_flow_interval_ns, 3_600_000_000_000);
    assert_eq!(cfg.new_flow_burst_ns, 2 * 3_600_000_000_000);
    h.dp.maps.set_ct_config(cfg).unwrap();

    let mut first = None;
    for i in 0..3u16 {
        let c = Conn::open(&mut h, ep(CLIENT, 40000 + i), ep(HOST_LAN, 80), ep(VM, 80));
        first.get_or_insert(c);
    }
    let syn = seg(ep(CLIENT, 40003), ep(HOST_LAN, 80), "S", CLIENT_ISN, 0, b"");
    let (ran, _) = ingress(
        &mut h,
        "fourth flow of the source",
        LAN_IF,
        &syn,
        Out::Drop(Reason::DropRateLimited),
    );
    assert_eq!(
        ran.delta.rules[&h.id("web")].drops[RULE_DROP_RATE_LIMITED],
        1
    );
    assert!(ran.delta.flows_added.is_empty());
    // Another source is on its own allowance.
    Conn::open(&mut h, ep(LAN_PEER, 40000), ep(HOST_LAN, 80), ep(VM, 80));
    // The source's existing flows go on.
    let mut c = first.unwrap();
    let sa = c.server_sends("SA", b"");
    ingress(
        &mut h,
        "SYN-ACK of an admitted flow",
        VM_IF,
        &sa,
        Out::Fwd(c.listen, c.client),
    );
}
