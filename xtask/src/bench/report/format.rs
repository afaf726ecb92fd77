//! How the report writes numbers and text: a value rounded for its metric's
//! unit, thousands separators, a "median (min-max) n=" table cell, 1k/1M
//! sizes. Pure functions of their arguments, shared by every section.
use crate::bench::results::{metric, Stat, FILL_SECS};

/// A value in its metric's unit, rounded for reading.
pub(super) fn fmt_val(key: &str, v: f64) -> String {
    let unit = metric(key).map_or("", |m| m.unit);
    match unit {
        "Gbit/s" => format!("{v:.2}"),
        "µs" => format!("{v:.1}"),
        "pkt/s" | "conn/s" => thousands(v),
        _ if key == FILL_SECS => format!("{v:.2}"),
        _ => format!("{v:.0}"),
    }
}

pub(super) fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn cell(key: &str, s: Option<Stat>, runs: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) => {
            let mut c = fmt_val(key, s.median);
            if s.n > 1 {
                c += &format!(" ({}-{})", fmt_val(key, s.min), fmt_val(key, s.max));
            }
            if s.n < runs {
                c += &format!(" n={}", s.n);
            }
            c
        }
    }
}

pub(super) fn short_n(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::TCP1;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(fmt_val(TCP1, 9.876), "9.88");
        assert_eq!(short_n(1_000_000), "1M");
        assert_eq!(short_n(100_000), "100k");
    }
}
