//! The report's SVG chart: throughput and latency over time, one panel
//! each, sharing the time axis. Hand-written SVG: a few polylines, axes and
//! labels need no plotting library.

use std::fmt::Write;

/// One line on a panel.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// `(seconds, value)`; `None` values break the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// One panel: a title, a unit and its lines.
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

/// A labelled vertical line (a capacity step starting, say).
pub struct Marker {
    pub at: f64,
    pub label: String,
}

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 64.0;
const GAP: f64 = 70.0;

/// Renders `panels` stacked over a shared time axis from 0 to `end`
/// seconds.
pub fn render(title: &str, panels: &[Panel], markers: &[Marker], end: f64) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP);
    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let end = if end > 0.0 { end } else { 1.0 };
    let x_ticks = nice_ticks(end, 10);
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + GAP);
        render_panel(&mut svg, panel, markers, top, end, &x_ticks);
    }
    svg.push_str("</svg>\n");
    svg
}

fn render_panel(
    svg: &mut String,
    panel: &Panel,
    markers: &[Marker],
    top: f64,
    end: f64,
    x_ticks: &[f64],
) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL_HEIGHT;
    let max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let y_ticks = nice_ticks(if max > 0.0 { max } else { 1.0 }, 5);
    let y_max = y_ticks.last().copied().unwrap_or(1.0);
    let x = |t: f64| LEFT + t / end * plot_width;
    let y = |v: f64| bottom - v / y_max * PANEL_HEIGHT;

    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{} ({})</text>"#,
        top - 10.0,
        escape(&panel.title),
        escape(&panel.unit)
    );
    for &tick in &y_ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(tick) + 4.0,
            format_tick(tick),
            yy = y(tick),
        );
    }
    for &tick in x_ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{bottom}" y2="{}" stroke="#999"/><text x="{xx:.1}" y="{}" text-anchor="middle">{} s</text>"##,
            bottom + 4.0,
            bottom + 18.0,
            format_tick(tick),
            xx = x(tick),
        );
    }
    for marker in markers {
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{bottom}" stroke="#888" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            x(marker.at) + 3.0,
            top + 12.0,
            escape(&marker.label),
            xx = x(marker.at),
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="#333"/>"##
    );
    for (i, series) in panel.series.iter().enumerate() {
        for segment in segments(&series.points) {
            let points: Vec<String> = segment
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                series.color,
                points.join(" ")
            );
        }
        let legend_x = LEFT + 10.0 + i as f64 * 190.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="12" height="3" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            bottom + 34.0,
            series.color,
            legend_x + 16.0,
            bottom + 39.0,
            escape(&series.name)
        );
    }
}

/// The runs of consecutive points that have values.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    for &(t, v) in points {
        match v {
            Some(v) => current.push((t, v)),
            None if !current.is_empty() => all.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// Round tick values from 0 up to at least `max`, about `count` of them,
/// spaced 1, 2 or 5 times a power of ten.
pub fn nice_ticks(max: f64, count: usize) -> Vec<f64> {
    let raw = max / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

fn format_tick(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Escapes text for SVG (XML).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(100.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(93.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(7.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(0.8, 4), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8]);
        assert_eq!(
            nice_ticks(600.0, 10),
            [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
        );
    }

    #[test]
    fn missing_values_break_the_line() {
        let points = [
            (0.0, Some(1.0)),
            (1.0, None),
            (2.0, Some(2.0)),
            (3.0, Some(3.0)),
        ];
        assert_eq!(
            segments(&points),
            vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]
        );
    }

    #[test]
    fn the_chart_is_svg_with_a_line_per_series() {
        let panel = Panel {
            title: "Throughput".into(),
            unit: "orders/s".into(),
            series: vec![Series {
                name: "terminal <orders>".into(),
                color: "#1f77b4",
                points: vec![(0.0, Some(10.0)), (1.0, Some(12.0))],
            }],
        };
        let svg = render(
            "a & b",
            &[panel],
            &[Marker {
                at: 1.0,
                label: "20/s".into(),
            }],
            2.0,
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains("terminal &lt;orders&gt;"));
        assert!(svg.contains("20/s"));
    }
}
