//! Unit tests of the plan's TC attach mode: TCX or the legacy clsact +
//! cls_bpf way, per interface, and what a change of mode plans.
use forwarder_common::{IfaceConfig, IfaceFlags};

use super::tests::{forward, host, iface, iface_plan, plan_of};
use super::*;
use crate::daemon::facts::Attached;

const WEB: &str = "port = 80\nto = \"192.168.100.80\"";

#[test]
fn tcx_unless_the_kernel_the_operator_or_the_rules_say_legacy() {
    let mut f = host();
    let text = format!(
        "{}[interface.vmbr1]\nattach = \"tc-legacy\"\n",
        forward("web", WEB)
    );
    // vmbr0 listens, vmbr1 leads to the target.
    let p = plan_of(&text, &f);
    assert_eq!(iface_plan(&p, "vmbr0").tc, (TcMode::Tcx, "TCX links"));
    assert_eq!(
        iface_plan(&p, "vmbr1").tc,
        (TcMode::Legacy, "configured attach = \"tc-legacy\"")
    );
    assert!(iface_plan(&p, "vmbr1").xdp.is_err(), "tc-legacy is TC only");

    f.tc_legacy = Some("the kernel has no TCX (Linux 6.6)");
    let p = plan_of(&text, &f);
    assert_eq!(
        iface_plan(&p, "vmbr0").tc,
        (TcMode::Legacy, "the kernel has no TCX (Linux 6.6)")
    );
    assert_eq!(
        iface_plan(&p, "vmbr1").tc.1,
        "configured attach = \"tc-legacy\"",
        "the rules' own word is the better reason"
    );
}

#[test]
fn an_interface_attached_in_the_other_mode_is_attached_again_in_its_slot() {
    let mut f = host();
    let vmbr0 = iface("vmbr0", 2, Some("bridge"), false, 1500);
    let vmbr1 = iface("vmbr1", 3, Some("bridge"), false, 1500);
    for (i, tc) in [(&vmbr0, TcMode::Tcx), (&vmbr1, TcMode::Legacy)] {
        f.attached.push(Attached {
            iface: i.clone(),
            tc,
            egress: false,
            xdp: false,
        });
    }
    f.registered.insert(
        2,
        IfaceConfig {
            slot: 4,
            flags: IfaceFlags::empty(),
        },
    );
    f.registered.insert(
        3,
        IfaceConfig {
            slot: 5,
            flags: IfaceFlags::empty(),
        },
    );
    let p = plan_of(&forward("web", WEB), &f);
    assert!(p.detach.is_empty(), "a mode change detaches nothing first");
    assert_eq!(iface_plan(&p, "vmbr0").attach, None, "already as wanted");
    assert_eq!(
        iface_plan(&p, "vmbr1").attach,
        Some(Slot {
            slot: 5,
            fresh: false
        }),
        "legacy -> TCX in its own slot, counters kept"
    );

    f.tc_legacy = Some("FORWARDER_FORCE_ATTACH=tc-legacy");
    let p = plan_of(&forward("web", WEB), &f);
    assert_eq!(
        iface_plan(&p, "vmbr0").attach,
        Some(Slot {
            slot: 4,
            fresh: false
        })
    );
    assert_eq!(iface_plan(&p, "vmbr1").attach, None);
}
