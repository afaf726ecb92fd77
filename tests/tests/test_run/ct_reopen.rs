//! A client reusing the tuple of a closed connection (TIME_WAIT after FINs,
//! CLOSE after an RST) opens a new connection, and the new connection gets
//! the forwards as they are now, not the old connection's translation:
//! netfilter kills the old conntrack on such a SYN and looks it up again.
//! Keeping the old translation would send the new connection to a target
//! the forward no longer has, or through a forward that was removed (a
//! reload must take effect for new connections, whatever ports clients pick).

use super::ct_support::*;
use forwarder_common::{conntrack::CtState, Reason};
use forwarder_tests::require_root;

/// `WEB_AND_DNS` with "web" moved to port 8080 of the VM.
fn web_moved() -> String {
    WEB_AND_DNS.replace("to = \"192.168.100.80:80\"", "to = \"192.168.100.80:8080\"")
}

/// `WEB_AND_DNS` without "web".
fn dns_only() -> String {
    let start = WEB_AND_DNS.find("[[forward]]\nname = \"web\"").unwrap();
    let end = WEB_AND_DNS.find("[[forward]]\nname = \"dns\"").unwrap();
    format!("{}{}", &WEB_AND_DNS[..start], &WEB_AND_DNS[end..])
}

/// An established connection of "web" from client port `port`, closed by
/// both FINs (TIME_WAIT).
fn closed_by_fins(h: &mut Host, port: u16) -> Conn {
    let mut c = Conn::established(h, ep(CLIENT, port), ep(HOST_LAN, 80), ep(VM, 80));
    let steps: [(&str, bool, &str); 4] = [
        ("client FIN", true, "FA"),
        ("server ACK and FIN", false, "FA"),
        ("client's last ACK", true, "A"),
        ("server's last ACK", false, "A"),
    ];
    for (name, from_client, flags) in steps {
        if from_client {
            let f = c.client_sends(flags, b"");
            ingress(h, name, LAN_IF, &f, Out::Fwd(c.seen_as, c.target));
        } else {
            let f = c.server_sends(flags, b"");
            ingress(h, name, VM_IF, &f, Out::Fwd(c.listen, c.client));
        }
    }
    let snap = h.snapshot().unwrap();
    assert_eq!(
        state("closed", &snap, &c.orig(), &c.reply()),
        CtState::TimeWait
    );
    c
}

#[test]
fn a_syn_on_a_time_wait_tuple_goes_to_the_forwards_new_target() {
    if !require_root("a_syn_on_a_time_wait_tuple_goes_to_the_forwards_new_target") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = closed_by_fins(&mut h, 40000);
    h.rules(&web_moved()).expect("reload moving web to :8080");

    // The client reuses its port for a new connection.
    let mut c2 = Conn {
        cseq: 0x2222_0000,
        sseq: 0x5555_0000,
        target: ep(VM, 8080),
        ..c
    };
    let syn = c2.client_sends("S", b"");
    let (ran, port) = ingress(
        &mut h,
        "SYN reusing the TIME_WAIT tuple",
        LAN_IF,
        &syn,
        Out::Snat(HOST_VM, ep(VM, 8080)),
    );
    c2.seen_as = ep(HOST_VM, port);
    assert_eq!(
        state("new connection", &ran.after, &c2.orig(), &c2.reply()),
        CtState::SynSent
    );
    // Its answer comes from the new target and goes back to the client.
    let sa = c2.server_sends("SA", b"");
    ingress(
        &mut h,
        "SYN-ACK from :8080",
        VM_IF,
        &sa,
        Out::Fwd(c2.listen, c2.client),
    );
}

#[test]
fn a_syn_on_a_closed_tuple_of_a_removed_forward_is_not_forwarded() {
    if !require_root("a_syn_on_a_closed_tuple_of_a_removed_forward_is_not_forwarded") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40001), ep(HOST_LAN, 80), ep(VM, 80));
    let rst = c.server_sends("RA", b"");
    ingress(
        &mut h,
        "server RST",
        VM_IF,
        &rst,
        Out::Fwd(c.listen, c.client),
    );
    let snap = h.snapshot().unwrap();
    assert_eq!(state("reset", &snap, &c.orig(), &c.reply()), CtState::Close);
    h.rules(&dns_only()).expect("reload removing web");

    let mut c2 = Conn {
        cseq: 0x3333_0000,
        ..c
    };
    let syn = c2.client_sends("S", b"");
    let (ran, _) = ingress(
        &mut h,
        "SYN reusing the closed tuple of the removed forward",
        LAN_IF,
        &syn,
        Out::Pass(Reason::PassNoMatch),
    );
    assert!(
        !ran.after.flows.contains_key(&c.orig()) && !ran.after.flows.contains_key(&c.reply()),
        "the old flow is forgotten, no new one is made"
    );
}

/// Unchanged forwards: the new connection on a closed tuple gets the old
/// connection's SNAT port back (the client's port, 40002, is outside the
/// default SNAT range, so the port would otherwise be drawn at random). The
/// backend holds that tuple in TIME_WAIT and takes the client's next SYN
/// there; on another tuple a random port can land on a TIME_WAIT socket of
/// a different client port, whose old sequence numbers make the backend
/// answer with an ACK of the old connection, and the client waits a second
/// to send its SYN again.
#[test]
fn a_syn_on_a_time_wait_tuple_keeps_the_old_snat_port() {
    if !require_root("a_syn_on_a_time_wait_tuple_keeps_the_old_snat_port") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = closed_by_fins(&mut h, 40002);
    let old_port = c.seen_as.port;
    let mut c2 = Conn {
        cseq: 0x4444_0000,
        ..c
    };
    let syn = c2.client_sends("S", b"");
    let (ran, port) = ingress(
        &mut h,
        "SYN reusing the TIME_WAIT tuple",
        LAN_IF,
        &syn,
        Out::Snat(HOST_VM, ep(VM, 80)),
    );
    assert_eq!(port, old_port, "the new connection's SNAT port");
    assert_eq!(
        state("new connection", &ran.after, &c2.orig(), &c2.reply()),
        CtState::SynSent
    );
}
