//! BPF_PROG_TEST_RUN harness: crafted packet in -> verdict + counters out.
//! Later dataplane tests extend the table.
use aya::programs::TestRun;
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRunOptions},
};
use etherparse::PacketBuilder;
use forwarder::{
    counters::sum_cpus,
    dataplane::{Dataplane, LoadOptions},
};
use forwarder_common::{iface_counter_index, Counter, Hook, IfaceConfig, Reason};
use forwarder_tests::require_root;

/// TCX_NEXT as the u32 the kernel reports.
const TCX_NEXT: u32 = -1i32 as u32;
/// BPF_PROG_TEST_RUN gives skbs the loopback device unless told otherwise.
const TEST_IFINDEX: u32 = 1;
const SLOT: u32 = 3;

struct Harness {
    dp: Dataplane,
}

impl Harness {
    fn new() -> Self {
        let mut dp = Dataplane::load(&LoadOptions::default()).expect("load");
        let mut ifaces: HashMap<&mut MapData, u32, IfaceConfig> =
            HashMap::try_from(dp.ebpf.map_mut("FWD_IFACES").unwrap()).unwrap();
        ifaces
            .insert(
                TEST_IFINDEX,
                IfaceConfig {
                    slot: SLOT,
                    flags: 0,
                },
                0,
            )
            .unwrap();
        Harness { dp }
    }

    fn run(&mut self, frame: &[u8]) -> u32 {
        let prog: &mut SchedClassifier = self.dp.ingress_program().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        prog.test_run(opts).expect("test_run").return_value
    }

    fn counter(&self, reason: Reason) -> Counter {
        let m: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.dp.ebpf.map("FWD_IFACE_CNT").unwrap()).unwrap();
        sum_cpus(
            m.get(&iface_counter_index(SLOT, Hook::TcIngress, reason), 0)
                .unwrap()
                .iter()
                .copied(),
        )
    }

    fn all(&self) -> Vec<Counter> {
        Reason::ALL.iter().map(|r| self.counter(*r)).collect()
    }
}

fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 168, 1, 10], [192, 168, 1, 55], 64)
        .tcp(40000, 80, 1, 65535)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Sets bytes of the IPv4 header (offset from its start) and nothing else.
fn with_ip_bytes(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[14 + at..14 + at + bytes.len()].copy_from_slice(bytes);
    frame
}

#[test]
fn counts_each_packet_under_its_reason() {
    if !require_root("counts_each_packet_under_its_reason") {
        return;
    }
    let mut h = Harness::new();
    let tcp = tcp_frame(b"hello");
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    // BPF_PROG_TEST_RUN itself refuses frames whose IPv4 header is cut
    // short, so header inconsistencies stand in for truncation here.
    let ihl_beyond_total = with_ip_bytes(tcp.clone(), 0, &[0x4f]); // IHL 60 > tot_len
    let total_below_ihl = with_ip_bytes(tcp.clone(), 2, &[0x00, 0x10]); // tot_len 16
    let bad_version = with_ip_bytes(tcp.clone(), 0, &[0x65]);
    let fragment = with_ip_bytes(tcp.clone(), 6, &[0x20, 0x00]); // MF set
    let later_fragment = with_ip_bytes(tcp.clone(), 6, &[0x00, 0x10]); // offset 16
    let tot_len_too_big = with_ip_bytes(tcp.clone(), 2, &[0x05, 0xdc]);
    let mut options = tcp.clone();
    options[14] = 0x46; // IHL 6: one word of options (a NOP x4)
    options.splice(14 + 20..14 + 20, [1u8, 1, 1, 1]);
    let tl = (options.len() - 14) as u16;
    options[16..18].copy_from_slice(&tl.to_be_bytes());

    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("tcp syn", tcp.clone(), Reason::PassNoMatch),
        ("arp", arp, Reason::PassNotIpv4),
        (
            "ihl beyond total length",
            ihl_beyond_total,
            Reason::PassMalformed,
        ),
        (
            "total length below header",
            total_below_ihl,
            Reason::PassMalformed,
        ),
        (
            "ip version 6 in ipv4 ethertype",
            bad_version,
            Reason::PassMalformed,
        ),
        // A first fragment has its ports: parsed, and here no listener.
        ("first fragment", fragment, Reason::PassNoMatch),
        ("later fragment", later_fragment, Reason::PassFragment),
        (
            "total length beyond frame",
            tot_len_too_big,
            Reason::PassMalformed,
        ),
        // Options are skipped to the L4 header: parsed, no listener.
        ("ip options", options, Reason::PassNoMatch),
    ];
    for (name, frame, reason) in cases {
        let before = h.all();
        let verdict = h.run(&frame);
        assert_eq!(verdict, TCX_NEXT, "{name}: verdict");
        let after = h.all();
        for r in Reason::ALL {
            let (b, a) = (before[r as usize], after[r as usize]);
            if r == reason {
                assert_eq!(a.packets - b.packets, 1, "{name}: {} packets", r.name());
                assert_eq!(
                    a.bytes - b.bytes,
                    frame.len() as u64,
                    "{name}: {} bytes",
                    r.name()
                );
            } else {
                assert_eq!(a, b, "{name}: {} must not change", r.name());
            }
        }
    }
}

#[test]
fn unknown_interface_is_not_counted() {
    if !require_root("unknown_interface_is_not_counted") {
        return;
    }
    let mut h = Harness::new();
    {
        let mut ifaces: HashMap<&mut MapData, u32, IfaceConfig> =
            HashMap::try_from(h.dp.ebpf.map_mut("FWD_IFACES").unwrap()).unwrap();
        ifaces.remove(&TEST_IFINDEX).unwrap();
    }
    let before = h.all();
    assert_eq!(h.run(&tcp_frame(b"x")), TCX_NEXT);
    assert_eq!(h.all(), before);
}
