//! `bench_prog --spin CASE --seconds S`: one case in a loop and nothing
//! else, for a sampling profiler. This VM has no hardware PMU, so
//! `bpftool prog profile` cannot count cycles; software sampling can:
//!
//! ```text
//! perf record -e cpu-clock -g -o spin.data -- bench_prog --spin nat --seconds 20
//! perf report -i spin.data --no-children --sort sym -p bpf_test_run -x --stdio -g none
//! ```
//!
//! (JIT'd programs show as `bpf_prog_<tag>_<name>` with
//! net.core.bpf_jit_kallsyms = 1, helpers and map code by their kernel
//! names.) `create` adds flows until `CREATE_BATCH` exist, then removes
//! them from userspace and starts over, so the table never fills (a full
//! table would time eviction, not creation); samples outside
//! `bpf_test_run` (the removals) fall out of the report above.
use std::time::{Duration, Instant};

use super::{
    expect_redirect, packets::key, tcp_frame, Bench, Frames, Setup, CLIENT, CLIENT_SIDE_PEER,
    LISTEN, REPEAT, SERVER, SNAT, SYN,
};
use anyhow::{bail, ensure, Result};

/// Flows created before the table is emptied again.
const CREATE_BATCH: u16 = 20_000;

pub fn run(b: &mut Bench, _s: &Setup, f: &Frames, case: &str, seconds: usize) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(seconds as u64);
    let mut runs = 0u64;
    match case {
        "nat" | "no_nat" => {
            let frame = if case == "nat" { &f.nat } else { &f.ident };
            while Instant::now() < until {
                let (v, _) = b.run(frame, REPEAT)?;
                expect_redirect(case, v)?;
                runs += REPEAT as u64;
            }
        }
        "create" => {
            let keep = [
                key(CLIENT, CLIENT_SIDE_PEER, 40000, 80),
                key(SNAT, SERVER, 33000, 80),
                key(CLIENT, CLIENT_SIDE_PEER, 40002, 80),
                key(SNAT, SERVER, 33002, 8080),
                key(CLIENT, SERVER, 40001, 80),
            ];
            while Instant::now() < until {
                for i in 0..CREATE_BATCH {
                    let syn = tcp_frame(f.r0_mac, CLIENT, LISTEN, 10000 + i, 80, SYN, 0);
                    let (v, _) = b.run(&syn, 1)?;
                    expect_redirect("create", v)?;
                    runs += 1;
                }
                let created: Vec<_> =
                    b.dp.maps
                        .flows
                        .keys()
                        .filter_map(|k| k.ok())
                        .filter(|k| !keep.contains(k))
                        .collect();
                ensure!(
                    created.len() == 2 * CREATE_BATCH as usize,
                    "{} entries after {CREATE_BATCH} creations, expected two each",
                    created.len()
                );
                for k in created {
                    b.dp.maps.flows.remove(&k)?;
                }
            }
        }
        _ => bail!("--spin: unknown case {case} (nat, no_nat, create)"),
    }
    eprintln!("bench_prog --spin {case}: {runs} program runs in {seconds} s");
    Ok(())
}
