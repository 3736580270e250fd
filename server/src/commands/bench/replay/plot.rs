//! The replay's latency plot: each suggestion's keystroke-to-suggestion latency over the
//! replay's time, one colour per variant, on a log scale. Plain SVG written by hand (a
//! scatter plot and its axes do not need a plotting library's build time).

use std::fmt::Write;

const W: f64 = 960.0;
const H: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 44.0;
const COLOURS: [&str; 4] = ["#1b7837", "#d95f02", "#7570b3", "#e7298a"];
const TICKS_MS: [f64; 9] = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0];

/// One suggestion: when its keystroke came (seconds since the start), how long it took
/// (milliseconds), and whether it followed an edit far above the cursor (drawn larger).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub t: f64,
    pub ms: f64,
    pub far: bool,
}

/// A variant's name and its points.
pub(crate) type Series<'a> = (&'a str, &'a [Point]);

pub(crate) fn latency_svg(series: &[Series<'_>]) -> String {
    let t_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.t))
        .fold(1.0, f64::max);
    let ms_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.ms))
        .fold(10.0, f64::max)
        .max(100.0);
    let (lo, hi) = (1.0f64.log10(), (ms_max * 1.2).log10());
    let x = |t: f64| LEFT + (t / t_max) * (W - LEFT - RIGHT);
    let y = |ms: f64| TOP + (1.0 - (ms.max(1.0).log10() - lo) / (hi - lo)) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="16">keystroke → suggestion latency (ms, log scale) over the replay (s)</text>
"##
    );
    for ms in TICKS_MS.iter().filter(|&&m| m <= ms_max * 1.2) {
        let yy = y(*ms);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{ms}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let ticks = 6;
    for i in 0..=ticks {
        let t = t_max * f64::from(i) / f64::from(ticks);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{t:.0}</text>"##,
            x(t),
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(s, r##"<g fill="{colour}" fill-opacity="0.55">"##);
        for p in points.iter() {
            let r = if p.far { 3.0 } else { 1.8 };
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="{r}"/>"##,
                x(p.t),
                y(p.ms)
            );
        }
        let _ = writeln!(s, "</g>");
        let ly = TOP + 20.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{ly:.1}" r="5" fill="{colour}"/><text x="{:.1}" y="{:.1}">{name} ({})</text>"##,
            W - RIGHT + 16.0,
            W - RIGHT + 26.0,
            ly + 4.0,
            points.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_circle_per_point_and_a_legend_per_variant() {
        let point = |t, ms, far| Point { t, ms, far };
        let a = [point(0.5, 120.0, false), point(1.0, 900.0, true)];
        let b = [point(0.7, 40.0, false)];
        let svg = latency_svg(&[("full", &a), ("cold", &b)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<circle").count(),
            3 + 2,
            "points and legend dots"
        );
        assert!(svg.contains("full (2)") && svg.contains("cold (1)"));
        // Slower is drawn higher: 900 ms above 120 ms.
        let ys: Vec<f64> = svg
            .match_indices("cy=\"")
            .map(|(i, _)| {
                let rest = &svg[i + 4..];
                rest[..rest.find('"').unwrap_or(0)].parse().unwrap_or(0.0)
            })
            .collect();
        assert!(ys[1] < ys[0], "900 ms is drawn above 120 ms: {ys:?}");
    }
}
