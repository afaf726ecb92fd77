//! Probes that need the real object and a real interface: load the
//! embedded object (the verifier's verdict on every program), then attach
//! it every way the daemon may (TCX with a link update, netlink cls_bpf on
//! a clsact qdisc, XDP native and generic with a link update) to a veth
//! pair in a network namespace of our own. The namespace belongs to one
//! thread (unshare(CLONE_NEWNET) there) and dies with it, taking the veth
//! pair and every attachment along: nothing of the machine's is touched.
use aya::{
    programs::{
        links::{FdLink, LinkOrder},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        Program, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};

/// Outcome of one probe: Ok, or the reason it failed. `None`: not tried.
pub type Outcome = Option<Result<(), String>>;

#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// The object as a whole (maps created, relocations done).
    pub object: Outcome,
    /// Each program's verifier verdict: the instructions it verified
    /// (None before Linux 5.16, which does not say), or why it refused.
    pub programs: Vec<(String, Result<Option<u32>, String>)>,
    pub tcx_attach: Outcome,
    pub tcx_link_update: Outcome,
    pub netlink_tc: Outcome,
    /// The program of that cls_bpf filter replaced in place (what a
    /// restart in tc-legacy mode does).
    pub netlink_tc_replace: Outcome,
    pub xdp_driver: Outcome,
    pub xdp_generic: Outcome,
    pub xdp_link_update: Outcome,
    /// A real output route lookup with BPF_FIB_LOOKUP_SRC filled in the
    /// source address of the egress device.
    pub fib_src_route: Outcome,
    /// A lookup to an unresolved neighbour is NO_NEIGH without
    /// BPF_FIB_LOOKUP_SKIP_NEIGH and a success with it.
    pub fib_skip_neigh_route: Outcome,
}

const VETH: (&str, &str) = ("fwdprobe0", "fwdprobe1");
/// On VETH.0 (a /24 in the scratch namespace: reaches nothing).
const ADDR: [u8; 4] = [10, 255, 0, 1];
const PEER: [u8; 4] = [10, 255, 0, 2];

/// Runs the probes in a private network namespace on a thread of its own.
pub fn run(
    object: &'static [u8],
    tcx: bool,
    kernel_features: u32,
    verifier_log: Option<std::path::PathBuf>,
) -> Result<Findings, String> {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot make a scratch network namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        probe(object, tcx, kernel_features, verifier_log.as_deref())
    })
    .join()
    .map_err(|_| "the probe thread panicked".to_string())?
}

/// The verifier's last words: its log ends with the rejected instruction
/// and the reason, followed by statistics that say nothing.
pub fn verifier_summary(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.starts_with(';')
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(2)..];
            format!("{io_error}: {}", tail.join(" / "))
        }
        other => format!("{other:#}"),
    }
}

/// Loads the object with the fallbacks the daemon would load (`kernel_features`).
fn load(object: &[u8], kernel_features: u32) -> Result<Ebpf, String> {
    EbpfLoader::new()
        .override_global(
            forwarder_common::GLOBAL_KERNEL_FEATURES,
            &kernel_features,
            true,
        )
        .load(object)
        .map_err(|e| format!("loading the object: {e:#}"))
}

/// Writes the whole log of a program the verifier rejected to
/// `<dir>/<name>.log` (the summary keeps only its last words).
fn save_log(dir: &std::path::Path, name: &str, e: &ProgramError) -> Result<(), String> {
    let ProgramError::LoadError { verifier_log, .. } = e else {
        return Ok(());
    };
    let path = dir.join(format!("{name}.log"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, verifier_log.to_string()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn probe(
    object: &[u8],
    tcx: bool,
    kernel_features: u32,
    verifier_log: Option<&std::path::Path>,
) -> Result<Findings, String> {
    let mut f = Findings::default();
    let mut ebpf = match load(object, kernel_features) {
        Ok(e) => e,
        Err(e) => {
            f.object = Some(Err(e));
            return Ok(f);
        }
    };
    f.object = Some(Ok(()));
    for (name, prog) in ebpf.programs_mut() {
        let r = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::Xdp(p) => p.load(),
            _ => continue,
        };
        let r = r.map(|()| {
            prog.info()
                .ok()
                .and_then(|i| i.verified_instruction_count())
        });
        let r = r.map_err(|e| {
            let saved = verifier_log.map_or(Ok(()), |dir| save_log(dir, name, &e));
            let summary = verifier_summary(&e);
            match saved {
                Ok(()) => summary,
                Err(why) => format!("{summary} ({why})"),
            }
        });
        f.programs.push((name.to_string(), r));
    }
    make_veth()?;
    fib_routes(&mut f);
    let tc_prog = f.programs.iter().find_map(|(n, r)| {
        (r.is_ok() && matches!(ebpf.program(n), Some(Program::SchedClassifier(_))))
            .then(|| n.clone())
    });
    if let Some(name) = tc_prog {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(&name)
            .and_then(|p| p.try_into().ok())
            .ok_or("classifier vanished")?;
        if tcx {
            let link = prog
                .attach_with_options(
                    VETH.0,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .and_then(|id| prog.take_link(id))
                .map_err(|e| format!("{e:#}"));
            f.tcx_attach = Some(link.as_ref().map(|_| ()).map_err(Clone::clone));
            if let Ok(link) = link {
                f.tcx_link_update = Some(
                    FdLink::try_from(link)
                        .map_err(|e| format!("{e:#}"))
                        .and_then(|fd| {
                            let l =
                                SchedClassifierLink::try_from(fd).map_err(|e| format!("{e:#}"))?;
                            prog.attach_to_link(l)
                                .map(drop)
                                .map_err(|e| format!("{e:#}"))
                        }),
                );
            }
        }
        // Where and how the daemon's tc-legacy mode attaches.
        use crate::dataplane::tc_legacy::{HANDLE, PRIORITY};
        // Taken out of the program's own list (as the daemon does), or
        // aya refuses the replacement as a second attachment.
        let filter = tc::qdisc_add_clsact(VETH.1)
            .map_err(|e| format!("adding a clsact qdisc: {e:#}"))
            .and_then(|_| {
                prog.attach_with_options(
                    VETH.1,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: PRIORITY,
                        handle: HANDLE.into(),
                        classid: None,
                    }),
                )
                .and_then(|id| prog.take_link(id))
                .map_err(|e| format!("cls_bpf direct-action filter: {e:#}"))
            });
        f.netlink_tc = Some(filter.as_ref().map(drop).map_err(Clone::clone));
        if filter.is_ok() {
            f.netlink_tc_replace = Some(
                SchedClassifierLink::attached(
                    VETH.1,
                    TcAttachType::Ingress,
                    PRIORITY,
                    HANDLE.into(),
                    None,
                )
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    prog.attach_to_link(l)
                        .map(drop)
                        .map_err(|e| format!("{e:#}"))
                }),
            );
        }
    }
    let xdp_name = f.programs.iter().find_map(|(n, r)| {
        (r.is_ok() && matches!(ebpf.program(n), Some(Program::Xdp(_)))).then(|| n.clone())
    });
    if let Some(name) = xdp_name {
        let prog: &mut Xdp = ebpf
            .program_mut(&name)
            .and_then(|p| p.try_into().ok())
            .ok_or("xdp program vanished")?;
        let native = prog
            .attach(VETH.0, XdpMode::Driver)
            .and_then(|id| prog.take_link(id))
            .map_err(|e| format!("{e:#}"));
        f.xdp_driver = Some(native.as_ref().map(|_| ()).map_err(Clone::clone));
        if let Ok(link) = native {
            f.xdp_link_update = Some(
                FdLink::try_from(link)
                    .map_err(|e| format!("no XDP bpf_link (netlink attach only): {e:#}"))
                    .and_then(|fd| {
                        let l = XdpLink::try_from(fd).map_err(|e| format!("{e:#}"))?;
                        prog.attach_to_link(l)
                            .map(drop)
                            .map_err(|e| format!("{e:#}"))
                    }),
            );
        }
        f.xdp_generic = Some(
            prog.attach(VETH.1, XdpMode::Skb)
                .map(drop)
                .map_err(|e| format!("{e:#}")),
        );
    }
    Ok(f)
}

/// bpf_fib_lookup's flags at work on a real route (VETH.0's /24): what
/// accepting a flag promises, checked.
fn fib_routes(f: &mut Findings) {
    const OUTPUT: u32 = 1 << 1;
    const SKIP_NEIGH: u32 = 1 << 2;
    const SRC: u32 = 1 << 4;
    const NO_NEIGH: i32 = 7;
    let name = std::ffi::CString::new(VETH.0).expect("no NUL");
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // bpf_fib_lookup answers FWD_DISABLED for devices without forwarding,
    // output lookups included. /proc/sys/net is the opener's namespace's.
    let fwd = format!("/proc/sys/net/ipv4/conf/{}/forwarding", VETH.0);
    if let Err(e) = std::fs::write(&fwd, "1") {
        let e = Some(Err(format!("enabling forwarding ({fwd}): {e}")));
        (f.fib_src_route, f.fib_skip_neigh_route) = (e.clone(), e);
        return;
    }
    let dst = u32::from_ne_bytes(PEER);
    f.fib_src_route = Some(
        super::raw::fib_lookup(ifindex, dst, OUTPUT | SRC | SKIP_NEIGH, true).and_then(|got| {
            let want = i32::from_ne_bytes(ADDR);
            (got == want).then_some(()).ok_or_else(|| {
                format!(
                    "to 10.255.0.2 via {}: got {got:#x}, want 10.255.0.1",
                    VETH.0
                )
            })
        }),
    );
    f.fib_skip_neigh_route = Some(
        super::raw::fib_lookup(ifindex, dst, OUTPUT, false).and_then(|plain| {
            let skip = super::raw::fib_lookup(ifindex, dst, OUTPUT | SKIP_NEIGH, false)?;
            (plain == NO_NEIGH && skip == 0)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "unresolved neighbour: {plain} without, {skip} with SKIP_NEIGH (want 7, 0)"
                    )
                })
        }),
    );
}

/// The veth pair, up, VETH.0 with ADDR/24, in this thread's (scratch)
/// namespace.
fn make_veth() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let r = async {
            handle
                .link()
                .add(rtnetlink::LinkVeth::new(VETH.0, VETH.1).build())
                .execute()
                .await
                .map_err(|e| format!("creating a veth pair (module veth): {e}"))?;
            for name in [VETH.0, VETH.1] {
                handle
                    .link()
                    .set(rtnetlink::LinkUnspec::new_with_name(name).up().build())
                    .execute()
                    .await
                    .map_err(|e| format!("setting {name} up: {e}"))?;
            }
            let name = std::ffi::CString::new(VETH.0).expect("no NUL");
            // SAFETY: a valid NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            handle
                .address()
                .add(index, std::net::Ipv4Addr::from(ADDR).into(), 24)
                .execute()
                .await
                .map_err(|e| format!("adding an address to {}: {e}", VETH.0))?;
            Ok(())
        }
        .await;
        task.abort();
        r
    })
}
