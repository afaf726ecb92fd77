//! Loads the embedded kernel object and prints, per program, how many
//! instructions the verifier processed (`bpf_prog_info.verified_insns`,
//! Linux 5.16) against its limit of one million, or the end of the
//! verifier's log when it refuses one. The number to watch when changing
//! the programs' control flow (see forwarder-ebpf/src/mss.rs).
//!
//! `verifier_stats [OBJECT]` (as root; default: the object this binary
//! embeds).
use anyhow::{Context, Result};
use aya::{
    programs::{SchedClassifier, Xdp},
    EbpfLoader, VerifierLogLevel,
};
use forwarder::dataplane::{OBJECT, PROG_EGRESS, PROG_INGRESS, PROG_XDP};
use forwarder_common::{MAP_CT_EVICT, MAP_FLOWS};

fn main() -> Result<()> {
    // The aya-log level compiled in at load, as the daemon sets it
    // (LOG_LEVEL=0 off ... 5 trace): live log statements cost verifier work.
    let log_level: u8 = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut loader = EbpfLoader::new();
    loader.override_global("AYA_LOG_LEVEL", &log_level, false);
    loader
        .map_max_entries(MAP_FLOWS, 2 * 65536)
        .map_max_entries(MAP_CT_EVICT, 65536)
        .verifier_log_level(if std::env::var_os("VERBOSE").is_some() {
            VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS
        } else {
            VerifierLogLevel::STATS
        });
    // An object file given as the argument (another build, to compare),
    // else the embedded one.
    let other = std::env::args().nth(1).map(std::fs::read).transpose()?;
    let mut ebpf = loader
        .load(other.as_deref().unwrap_or(OBJECT))
        .context("loading the object")?;
    for name in [PROG_INGRESS, PROG_EGRESS, PROG_XDP] {
        let prog = ebpf.program_mut(name).context("program missing")?;
        let loaded = match name {
            PROG_XDP => {
                let p: &mut Xdp = prog.try_into()?;
                p.load().map(|_| p.info())
            }
            _ => {
                let p: &mut SchedClassifier = prog.try_into()?;
                p.load().map(|_| p.info())
            }
        };
        match loaded {
            Ok(info) => {
                let n = info?.verified_instruction_count().unwrap_or(0);
                println!("{name}: {n} instructions verified (limit 1000000)");
            }
            Err(e) => {
                let text = format!("{e:#}");
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .take(
                        std::env::var("TAIL")
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(12),
                    )
                    .collect();
                println!("{name}: REFUSED");
                for l in tail.iter().rev() {
                    println!("  {l}");
                }
            }
        }
    }
    Ok(())
}
