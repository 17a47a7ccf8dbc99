//! `--plot`: latency by percentile as SVG, one curve per transport, as HdrHistogram plots it (x:
//! log scale of 1/(1-q), so 90 %, 99 %, 99.9 % … are evenly spaced; y: log scale of latency, so
//! the median and the tail both show).

use std::fmt::Write as _;

use crate::report::Report;

/// Colours of the curves, in transport order (colour-blind safe, Okabe–Ito).
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// The x ticks: (quantile, label).
const TICKS: [(f64, &str); 6] = [
    (0.0, "0%"),
    (0.9, "90%"),
    (0.99, "99%"),
    (0.999, "99.9%"),
    (0.9999, "99.99%"),
    (0.99999, "99.999%"),
];

/// Nines shown on the x axis: 99.999 %.
const NINES: f64 = 5.0;

/// An SVG plot of latency against percentile with one curve per report, a legend naming each
/// transport, a logarithmic latency axis and plain percentile labels.
pub fn plot_svg(reports: &[Report]) -> String {
    let (w, h, left, bottom, top, right) = (900.0, 520.0, 80.0, 60.0, 50.0, 190.0);
    let x_of = |q: f64| {
        let n = (-(1.0 - q).max(1e-5).log10()).min(NINES);
        round(left + n / NINES * (w - left - right))
    };
    // Each curve: (quantile, ns), up to the largest latency seen.
    let curves: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| {
            let mut points = Vec::new();
            let mut n = 0.0f64;
            while n < NINES {
                let q = 1.0 - 10f64.powf(-n);
                points.push((q, r.latency().quantile(q).max(1) as f64));
                n += 0.02;
            }
            points.push((1.0 - 10f64.powf(-NINES), r.latency_ns.max.max(1) as f64));
            points
        })
        .collect();
    let all = curves.iter().flatten().map(|p| p.1);
    let lo = all.clone().fold(f64::INFINITY, f64::min);
    let hi = all.fold(1.0, f64::max);
    let lo = if lo.is_finite() { lo } else { 1.0 };
    let (d_lo, d_hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let y_of = |ns: f64| {
        let f = (ns.max(1.0).log10() - d_lo) / (d_hi - d_lo);
        round(h - bottom - f * (h - bottom - top))
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = match reports.first() {
        Some(r) => format!(
            "baozi-shop latency by percentile: {}×{}, {} B messages, {}",
            r.producers,
            r.consumers,
            r.size,
            r.rate
                .map_or("flat out".to_owned(), |x| format!("{x} msgs/s offered"))
        ),
        None => "baozi-shop latency by percentile".to_owned(),
    };
    let _ = write!(
        s,
        r#"<text x="{}" y="26" text-anchor="middle" font-size="15">{title}</text>"#,
        (left + w - right) / 2.0
    );
    for (q, label) in TICKS {
        let x = x_of(q);
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            h - bottom,
            h - bottom + 18.0
        );
    }
    let mut d = d_lo;
    while d <= d_hi {
        let ns = 10f64.powf(d);
        let y = y_of(ns);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            decade_label(d as i32)
        );
        d += 1.0;
    }
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        w - left - right,
        h - top - bottom
    );
    for (i, (r, points)) in reports.iter().zip(&curves).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(q, ns)| format!("{:.1},{:.1}", x_of(*q), y_of(*ns)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"##,
            path.join(" "),
            r.transport
        );
        let ly = top + 10.0 + 22.0 * i as f64;
        let lx = w - right + 15.0;
        let depth = format!("depth {}", r.effective_depth);
        let _ = write!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{} ({depth})</text>"##,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            r.transport
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (left + w - right) / 2.0,
        h - 16.0
    );
    let _ = write!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (log scale)</text></svg>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    s.push('\n');
    s
}

/// "100 ns", "1 µs", "10 ms", "1 s": a power of ten of nanoseconds in plain words.
fn decade_label(exp: i32) -> String {
    let (unit, base) = match exp {
        i32::MIN..=2 => ("ns", 0),
        3..=5 => ("µs", 3),
        6..=8 => ("ms", 6),
        _ => ("s", 9),
    };
    format!("{} {unit}", 10u64.pow((exp - base).max(0) as u32))
}

/// A coordinate to a tenth of a pixel, so the SVG reads cleanly.
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
