//! The per-source new-flow limit of `[global]` (`new_flows_per_source`,
//! `new_flows_burst`): its model, its syntax, and the kernel's form of it
//! (a GCRA: an emission interval and a tolerance).
use std::{fmt, time::Duration};

/// A per-source new-flow limit: `count` flows per `per`, bursts of up to
/// `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl FlowRate {
    /// The kernel's GCRA parameters: (emission interval, tolerance) in ns.
    pub fn gcra_ns(&self) -> (u64, u64) {
        let interval = (self.per.as_nanos() / u128::from(self.count.max(1))).max(1) as u64;
        (
            interval,
            interval.saturating_mul(u64::from(self.burst.max(1) - 1)),
        )
    }
}

impl fmt::Display for FlowRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `"N/s"`, `"N/m"` or `"N/h"`: N flows per second, minute or hour.
pub fn parse_flow_rate(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{s}` is not a rate of new flows");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("`{s}`: a limit of 0 refuses every flow"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok((count, per))
}

/// Without `new_flows_burst`: one second's worth of flows, at least one.
pub fn default_burst(count: u32, per: Duration) -> u32 {
    let per_sec = u64::from(count).div_ceil(per.as_secs().max(1));
    per_sec.clamp(1, u64::from(u32::MAX)) as u32
}
