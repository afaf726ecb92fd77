//! A grouped bar chart of ratios as a self-contained SVG: one group per
//! metric, one bar per baseline, on a log scale with bars growing from the
//! 1x line (up: the forwarder's number is higher, down: lower), so 2x and
//! 0.5x look equally far from parity. No plotting dependency.

/// One metric: its label and one ratio per series (None: not measured).
pub struct Group {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

const W: f64 = 820.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 80.0;
const COLORS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Decades covering every value and at least 0.1x..10x.
fn range(groups: &[Group]) -> (i32, i32) {
    let vals = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten())
        .filter(|v| **v > 0.0);
    let (mut lo, mut hi) = (-1, 1);
    for v in vals {
        lo = lo.min(v.log10().floor() as i32);
        hi = hi.max(v.log10().ceil() as i32);
    }
    (lo, hi)
}

pub fn ratio_chart(title: &str, subtitle: &str, series: &[&str], groups: &[Group]) -> String {
    let (lo, hi) = range(groups);
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (hi as f64 - v.log10()) / (hi - lo) as f64;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="16" font-weight="bold">{}</text>
<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>
"##,
        W / 2.0,
        esc(title),
        W / 2.0,
        esc(subtitle)
    );
    // Grid: every decade labelled, 2x and 5x faint.
    for d in lo..=hi {
        for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = m * 10f64.powi(d);
            if v.log10() > hi as f64 + 1e-9 {
                continue;
            }
            let yy = y(v);
            s += &format!(
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{}\"/>\n",
                W - RIGHT,
                if major { "#ccc" } else { "#eee" }
            );
            if major {
                s += &format!(
                    "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}x</text>\n",
                    LEFT - 6.0,
                    yy + 4.0,
                    trim(v)
                );
            }
        }
    }
    let base = y(1.0);
    s += &format!(
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{base:.1}\" y2=\"{base:.1}\" stroke=\"#000\" stroke-width=\"1.5\"/>\n",
        W - RIGHT
    );
    // Legend.
    let mut lx = LEFT;
    for (i, name) in series.iter().enumerate() {
        s += &format!(
            "<rect x=\"{lx}\" y=\"50\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"60\">{}</text>\n",
            COLORS[i % COLORS.len()],
            lx + 16.0,
            esc(name)
        );
        lx += 30.0 + 7.0 * name.len() as f64;
    }
    let gw = (W - LEFT - RIGHT) / groups.len().max(1) as f64;
    let bw = (gw * 0.8 / series.len().max(1) as f64).min(40.0);
    for (gi, g) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * gw + (gw - bw * series.len() as f64) / 2.0;
        for (si, v) in g.values.iter().enumerate() {
            let x = gx + si as f64 * bw;
            match v {
                Some(v) if *v > 0.0 => {
                    let yv = y(*v);
                    let (top, h) = if yv < base {
                        (yv, base - yv)
                    } else {
                        (base, yv - base)
                    };
                    s += &format!(
                        "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {:.2}x</title></rect>\n",
                        x + 1.0,
                        bw - 2.0,
                        h.max(1.0),
                        COLORS[si % COLORS.len()],
                        esc(series[si]),
                        v
                    );
                    let ly = if yv < base { yv - 4.0 } else { yv + 12.0 };
                    s += &format!(
                        "<text x=\"{:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                        x + bw / 2.0,
                        short(*v)
                    );
                }
                _ => {
                    s += &format!(
                        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\" fill=\"#999\">n/a</text>\n",
                        x + bw / 2.0,
                        base - 4.0
                    );
                }
            }
        }
        // Group label, wrapped on " (" so long labels stay readable.
        let cx = LEFT + gi as f64 * gw + gw / 2.0;
        for (li, line) in g.label.split('\n').enumerate() {
            s += &format!(
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                H - BOTTOM + 18.0 + 14.0 * li as f64,
                esc(line)
            );
        }
    }
    s += "</svg>\n";
    s
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn short(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_wellformed_and_has_every_bar() {
        let g = vec![
            Group {
                label: "TCP\n1 stream".into(),
                values: vec![Some(0.9), Some(1.1), None, Some(5.5)],
            },
            Group {
                label: "conn/s".into(),
                values: vec![Some(0.5), Some(1.3), Some(1.2), Some(12.0)],
            },
        ];
        let s = ratio_chart("t", "s", &["kernel", "iptables", "nftables", "socat"], &g);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<title>").count(), 7);
        assert!(s.contains("n/a"));
        // 12x extends the range to 100x.
        assert!(s.contains(">100x<"));
        assert_eq!(s.matches("<svg").count(), s.matches("</svg>").count());
    }

    #[test]
    fn range_covers_parity() {
        assert_eq!(range(&[]), (-1, 1));
    }
}
