//! One program run: BPF_PROG_TEST_RUN of `fwd_ingress`, `fwd_egress` or
//! `fwd_xdp` on a frame, with the context that makes the kernel build the
//! packet on one of the fixture's interfaces, and the verdict it returned.
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{ensure, Context, Result};
use forwarder_common::{Hook, PROG_XDP};

use super::{
    host::Host,
    syscall::{prog_test_run, TestRun, BPF_F_TEST_SKB_CHECKSUM_COMPLETE},
};

/// The TC verdicts as test_run reports them (the return value as i32).
pub use forwarder_common::{TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};

/// XDP actions as test_run reports them (as i32, like the TC verdicts).
pub const XDP_ABORTED: i32 = forwarder_common::XDP_ABORTED as i32;
pub const XDP_DROP: i32 = forwarder_common::XDP_DROP as i32;
pub const XDP_PASS: i32 = forwarder_common::XDP_PASS as i32;
pub const XDP_TX: i32 = forwarder_common::XDP_TX as i32;
pub const XDP_REDIRECT: i32 = forwarder_common::XDP_REDIRECT as i32;

/// `struct __sk_buff` as BPF_PROG_TEST_RUN takes it in `ctx_in`: 192 bytes
/// on this ABI. `ifindex` (offset 40) makes the kernel build the skb on
/// that device; `ingress_ifindex` (36) goes to skb_iif; `gso_segs` (164)
/// and `gso_size` (176) to the skb's shared info.
const SKB_CTX_LEN: usize = 192;
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_IFINDEX: usize = 40;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it in `ctx_in` (6 x u32:
/// data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex). What the kernel requires (net/bpf/test_run.c,
/// `bpf_prog_test_run_xdp` and `xdp_convert_md_to_buff`; ctx_in for XDP
/// since Linux 5.14, ingress_ifindex and rx_queue_index since 5.15):
/// data_meta 0 (no user data before the metadata); data = the metadata
/// length in front of the packet (0 here), at most data_end; data_end equal
/// to data_size_in; egress_ifindex 0; ingress_ifindex a device of the
/// *calling thread's* network namespace (ENODEV otherwise), whose queue
/// rx_queue_index exists and has its xdp_rxq registered (every device
/// registers its queues when allocated, so any veth or tun qualifies);
/// rx_queue_index 0 when ingress_ifindex is 0. Without ctx_in (or with
/// ingress_ifindex 0) the frame arrives on the namespace's loopback, which
/// the programs do not know, and bpf_fib_lookup resolves in the namespace
/// of that device.
const XDP_MD_LEN: usize = 24;
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;

/// How the test skb's checksum state is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// CHECKSUM_NONE: the kernel's default for test_run.
    None,
    /// CHECKSUM_COMPLETE (BPF_F_TEST_SKB_CHECKSUM_COMPLETE): skb->csum holds
    /// the sum of the packet from the IP header on, as on receive from most
    /// NICs, and after the run the kernel checks the program kept it right
    /// (EBADMSG otherwise). The packet bytes come out exactly as with
    /// CHECKSUM_NONE (the helpers rewrite the checksum fields the same way);
    /// only this extra check differs, and it is the one that catches an
    /// address rewrite without BPF_F_PSEUDO_HDR. (CHECKSUM_PARTIAL, which
    /// veth and local senders produce, cannot be set up through test_run.)
    Complete,
}

/// What one program run returned.
#[derive(Clone, Debug)]
pub struct Run {
    pub verdict: i32,
    /// The packet as the program left it.
    pub out: Vec<u8>,
}

impl Host {
    /// Runs `frame` through the program of `hook` as if it arrived on
    /// (ingress, XDP) or left by (egress) `ifindex`; TC hooks get a
    /// CHECKSUM_COMPLETE skb (see [`Csum`]).
    pub fn run(&mut self, hook: Hook, ifindex: u32, frame: &[u8]) -> Result<Run> {
        self.run_with(hook, ifindex, frame, Csum::Complete, None)
    }

    /// `gso`: (segment size, segments) to present the frame as a GSO skb
    /// (what GRO or a TSO sender hands over). `Hook::Xdp` runs
    /// [`Host::run_xdp`]: an xdp_buff has no checksum state and no GSO.
    pub fn run_with(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        csum: Csum,
        gso: Option<(u32, u32)>,
    ) -> Result<Run> {
        if hook == Hook::Xdp {
            ensure!(gso.is_none(), "an XDP frame cannot be a GSO skb");
            return self.run_xdp(ifindex, frame);
        }
        let mut ctx = [0u8; SKB_CTX_LEN];
        ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        if hook == Hook::TcIngress {
            ctx[SKB_INGRESS_IFINDEX..SKB_INGRESS_IFINDEX + 4]
                .copy_from_slice(&ifindex.to_ne_bytes());
        }
        if let Some((size, segs)) = gso {
            ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
            ctx[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
        }
        let prog = match hook {
            Hook::TcEgress => self.dp.egress_program()?,
            _ => self.dp.ingress_program()?,
        };
        let fd = prog.fd()?.as_fd();
        let flags = match csum {
            Csum::None => 0,
            Csum::Complete => BPF_F_TEST_SKB_CHECKSUM_COMPLETE,
        };
        test_run(fd, frame, &ctx, flags).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBADMSG) {
                anyhow::anyhow!(
                    "BPF_PROG_TEST_RUN: EBADMSG: the program left skb->csum inconsistent with \
                     the packet (a checksum update without BPF_F_PSEUDO_HDR where the \
                     pseudo-header changed, or a store without its checksum update)"
                )
            } else {
                anyhow::anyhow!("BPF_PROG_TEST_RUN of a {}-byte frame: {e}", frame.len())
            }
        })
    }

    /// Runs `frame` through the XDP accelerator (`fwd_xdp`) as if it
    /// arrived on `ifindex` (queue 0); see `XDP_MD_LEN` for what the kernel
    /// requires of the context. `ifindex` 0 passes no interface: the frame
    /// arrives on loopback.
    pub fn run_xdp(&mut self, ifindex: u32, frame: &[u8]) -> Result<Run> {
        let mut ctx = [0u8; XDP_MD_LEN];
        let end = u32::try_from(frame.len())?;
        ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4].copy_from_slice(&end.to_ne_bytes());
        ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
            .copy_from_slice(&ifindex.to_ne_bytes());
        let prog = self
            .dp
            .ebpf
            .program(PROG_XDP)
            .context("program fwd_xdp missing")?;
        let fd = prog.fd()?.as_fd();
        test_run(fd, frame, &ctx, 0).map_err(|e| {
            anyhow::anyhow!(
                "BPF_PROG_TEST_RUN (XDP) of a {}-byte frame on ifindex {ifindex}: {e}",
                frame.len()
            )
        })
    }
}

/// One BPF_PROG_TEST_RUN of program `fd` on `frame` with context `ctx`
/// (see [`super::syscall`] for why the syscall is made by hand).
fn test_run(fd: BorrowedFd<'_>, frame: &[u8], ctx: &[u8], flags: u32) -> std::io::Result<Run> {
    // Room for what a program may add (an Ethernet header for L3).
    let mut out = vec![0u8; frame.len() + 128];
    let r = prog_test_run(
        fd,
        TestRun {
            data: frame,
            ctx,
            out: Some(&mut out),
            repeat: 1,
            flags,
        },
    )?;
    out.truncate(r.data_size_out as usize);
    Ok(Run {
        verdict: r.retval as i32,
        out,
    })
}
