//! What a `cargo xtask bench` invocation runs: the configurations --only
//! selects minus those the forwarder binary cannot run (with the reason),
//! the scale and micro parts, run counts, durations, and a rough estimate
//! of the wall time.
use std::path::Path;

use anyhow::{ensure, Result};

use super::{
    configs::{Config, CONFIGS},
    measure::Durations,
    scale, BenchArgs,
};

pub(super) const SCALE: &str = "scale";
pub(super) const MICRO: &str = "micro";
pub(super) const SYNFLOOD: &str = super::synflood::SYNFLOOD;

/// What to run, after --only and the XDP support check.
pub(super) struct Plan {
    pub(super) configs: Vec<&'static Config>,
    pub(super) skipped: Vec<(&'static Config, String)>,
    pub(super) scale: bool,
    pub(super) micro: bool,
    pub(super) synflood: bool,
    pub(super) runs: usize,
    pub(super) scale_runs: usize,
    pub(super) d: Durations,
}

impl Plan {
    pub(super) fn new(args: &BenchArgs, forwarder_bin: &Path) -> Result<Plan> {
        let valid: Vec<&str> = CONFIGS
            .iter()
            .map(|c| c.name)
            .chain([SCALE, MICRO, SYNFLOOD])
            .collect();
        for o in &args.only {
            ensure!(
                valid.contains(&o.as_str()),
                "--only: unknown part {o:?}; valid: {}",
                valid.join(", ")
            );
        }
        let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
        let (mut configs, mut skipped) = (Vec::new(), Vec::new());
        for c in CONFIGS.iter().filter(|c| want(c.name)) {
            match c.unsupported(forwarder_bin) {
                Some(why) => skipped.push((c, why)),
                None => configs.push(c),
            }
        }
        let runs = args.runs.unwrap_or(if args.quick { 2 } else { 5 });
        ensure!(runs > 0, "--runs must be at least 1");
        Ok(Plan {
            configs,
            skipped,
            scale: want(SCALE),
            micro: want(MICRO),
            synflood: want(SYNFLOOD),
            runs,
            // Each scale run needs a window of one sweep interval: three
            // per size keep a full run inside its time bound.
            scale_runs: args.scale_runs.unwrap_or(if args.quick { 1 } else { 3 }),
            d: if args.quick {
                Durations::QUICK
            } else {
                Durations::DEFAULT
            },
        })
    }

    /// Rough wall time: measurement seconds plus ~3 s per run for the
    /// namespaces, servers and router setup (~5 s for a scale run: fill,
    /// table walk).
    pub(super) fn estimate_secs(&self) -> u32 {
        let d = &self.d;
        let per = d.tcp1 + d.tcp4 + d.wrk + d.rtt + d.udp + 3;
        let main: u32 = self
            .configs
            .iter()
            .map(|c| {
                let (rtt, profile) = if c.is_ipv6() {
                    (d.rtt, 0)
                } else {
                    // The sampled wrk run and `perf script`.
                    (0, d.profile + 5)
                };
                per - rtt + profile + if c.is_forwarder() { d.bpf } else { 0 }
            })
            .sum::<u32>()
            * self.runs as u32;
        let scale = if self.scale {
            (d.scale_tcp + d.rtt + 5) * scale::SIZES.len() as u32 * self.scale_runs as u32
        } else {
            0
        };
        let flood = if self.synflood {
            super::synflood::estimate_secs(&self.d, self.runs)
        } else {
            0
        };
        main + scale + flood + if self.micro { 15 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(only: &[&str], quick: bool, runs: Option<usize>) -> BenchArgs {
        BenchArgs {
            quick,
            only: only.iter().map(|s| s.to_string()).collect(),
            out: None,
            runs,
            scale_runs: None,
            note: None,
            render_from: None,
        }
    }

    /// --only selects exactly the named parts; defaults follow --quick.
    /// (No optional configuration is selected, so the binary is never run.)
    #[test]
    fn only_selects_parts_and_quick_sets_defaults() {
        let bin = Path::new("/nonexistent/forwarder");
        let p = Plan::new(&args(&["kernel", SCALE], false, None), bin).unwrap();
        let names: Vec<&str> = p.configs.iter().map(|c| c.name).collect();
        assert_eq!(names, ["kernel"]);
        assert!(p.scale && !p.micro && p.skipped.is_empty());
        assert_eq!((p.runs, p.scale_runs), (5, 3));
        let q = Plan::new(&args(&[MICRO], true, None), bin).unwrap();
        assert!(q.configs.is_empty() && !q.scale && q.micro);
        assert_eq!(
            (q.runs, q.scale_runs, q.d.tcp1),
            (2, 1, Durations::QUICK.tcp1)
        );
    }

    #[test]
    fn unknown_part_and_zero_runs_are_refused() {
        let bin = Path::new("/nonexistent/forwarder");
        let e = Plan::new(&args(&["kernel", "bogus"], false, None), bin)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown part \"bogus\""), "{e}");
        assert!(e.contains("forwarder-tc") && e.contains(MICRO), "{e}");
        assert!(Plan::new(&args(&["kernel"], false, Some(0)), bin).is_err());
    }
}
