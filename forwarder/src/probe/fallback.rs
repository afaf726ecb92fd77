//! Which fallbacks the kernel programs load with: the `FWD_KERNEL_FEATURES`
//! word (forwarder_common::kernel) from what the probe found, minus what
//! `FORWARDER_FORCE_FALLBACK` takes away.
//!
//! The force switch exists so that every fallback a kernel older than this
//! machine's needs runs here too (test_run cases, e2e runs, `doctor`'s
//! verifier check): a fallback only 5.10 ever ran would be untested code.
use forwarder_common::{
    FEATURES_ALL, FEATURE_COARSE_TIME, FEATURE_FIB_SKIP_NEIGH, FEATURE_FIB_SRC,
};

use super::Features;

/// Comma-separated fallbacks to use even where the kernel has the feature:
/// `skip-neigh`, `fib-src`, `coarse-time`, or `all`.
pub const FORCE_FALLBACK_ENV: &str = "FORWARDER_FORCE_FALLBACK";

/// Each fallback: its name in FORCE_FALLBACK_ENV, the feature bit it
/// replaces, and what the programs do instead.
const FALLBACKS: [(&str, u32, &str); 3] = [
    (
        "skip-neigh",
        FEATURE_FIB_SKIP_NEIGH,
        "no BPF_FIB_LOOKUP_SKIP_NEIGH: an unresolved neighbour's egress interface comes from \
         the daemon's route facts of the target",
    ),
    (
        "fib-src",
        FEATURE_FIB_SRC,
        "no BPF_FIB_LOOKUP_SRC: the masquerade source comes from the daemon's route facts of \
         the target (`ip route get`)",
    ),
    (
        "coarse-time",
        FEATURE_COARSE_TIME,
        "no bpf_ktime_get_coarse_ns: flow times read bpf_ktime_get_ns",
    ),
];

/// The feature bits FORCE_FALLBACK_ENV's `value` takes away.
pub fn forced(value: &str) -> Result<u32, String> {
    let mut bits = 0;
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        bits |= match name {
            "all" => FEATURES_ALL,
            _ => FALLBACKS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, b, _)| *b)
                .ok_or_else(|| {
                    format!(
                        "{FORCE_FALLBACK_ENV}={value:?}: unknown fallback {name:?} (one or more \
                         of skip-neigh, fib-src, coarse-time, or all)"
                    )
                })?,
        };
    }
    Ok(bits)
}

/// The bits FORCE_FALLBACK_ENV takes away in this process (0 when unset).
pub fn forced_by_env() -> Result<u32, String> {
    forced(&std::env::var(FORCE_FALLBACK_ENV).unwrap_or_default())
}

/// The word the programs load with, from the probe's findings.
pub fn word(f: &Features, forced: u32) -> u32 {
    let mut w = 0;
    if f.fib_skip_neigh {
        w |= FEATURE_FIB_SKIP_NEIGH;
    }
    if f.fib_src {
        w |= FEATURE_FIB_SRC;
    }
    if f.coarse_time {
        w |= FEATURE_COARSE_TIME;
    }
    w & !forced
}

/// One line per fallback the programs run with `word`.
pub fn describe(word: u32) -> Vec<&'static str> {
    FALLBACKS
        .iter()
        .filter(|(_, b, _)| word & b == 0)
        .map(|(_, _, what)| *what)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_force_switch_takes_away_what_it_names_and_refuses_the_rest() {
        assert_eq!(forced(""), Ok(0));
        assert_eq!(forced("all"), Ok(FEATURES_ALL));
        assert_eq!(
            forced("skip-neigh, coarse-time"),
            Ok(FEATURE_FIB_SKIP_NEIGH | FEATURE_COARSE_TIME)
        );
        let e = forced("skip-neigh,srcc").unwrap_err();
        assert!(e.contains("\"srcc\"") && e.contains("fib-src"), "{e}");
    }

    #[test]
    fn the_word_has_what_the_kernel_has_minus_what_is_forced() {
        let all = Features {
            fib_skip_neigh: true,
            fib_src: true,
            coarse_time: true,
            ..Features::default()
        };
        assert_eq!(word(&all, 0), FEATURES_ALL);
        assert!(describe(FEATURES_ALL).is_empty());
        assert_eq!(word(&all, FEATURE_FIB_SRC), FEATURES_ALL & !FEATURE_FIB_SRC);
        // 5.10: none of the three.
        let old = Features::default();
        assert_eq!(word(&old, 0), 0);
        assert_eq!(describe(0).len(), 3);
    }
}
