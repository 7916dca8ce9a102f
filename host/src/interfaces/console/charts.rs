//! Charts as SVG rendered on the server with `plotters` (no script, no fonts to ship: labels
//! are SVG text). Each chart comes with its numbers as a table for screen readers and for
//! anyone who wants the exact values.

use maud::{html, Markup};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::interfaces::console::layout;

/// Width and height of a chart in SVG units (it scales down to the screen).
const SIZE: (u32, u32) = (720, 260);

/// Series colours with enough contrast on white.
const COLOURS: [RGBColor; 4] = [
    RGBColor(11, 87, 208),
    RGBColor(164, 14, 38),
    RGBColor(17, 99, 41),
    RGBColor(125, 78, 0),
];

/// Keeps a label to characters that need no escaping in SVG text.
fn label(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '<' | '>' | '&' | '"' | '\''))
        .take(80)
        .collect()
}

/// A chart on `root`: white background, title, margins and the axes' ranges.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Option<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    root.fill(&WHITE).ok()?;
    ChartBuilder::on(root)
        .caption(label(title), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)
        .ok()
}

/// Draws a chart; a chart that cannot be drawn (or whose drawing library panics on odd data)
/// is left out, and the page around it still renders with the numbers table.
fn guarded(draw: impl FnOnce() -> Option<String>) -> String {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(draw))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// One named series of `(day start Unix ms, value)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// A line chart over days, with the numbers as a table below it.
pub fn lines_over_days(title: &str, unit: &str, series: &[Series]) -> Markup {
    let svg = guarded(|| draw_lines(title, unit, series));
    let days: std::collections::BTreeSet<i64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(d, _)| *d))
        .collect();
    html! {
        figure.chart {
            @if svg.is_empty() { p.hint { "No data yet." } } @else { (layout::svg(svg)) }
            details {
                summary { (title) ": the numbers" }
                div.scroll { table {
                    thead { tr { th { "day" } @for s in series { th.num { (s.name) } } } }
                    tbody { @for d in &days { tr {
                        td { (layout::day(*d)) }
                        @for s in series {
                            td.num { (s.points.iter().find(|(x, _)| x == d)
                                .map(|(_, v)| format!("{v:.0}")).unwrap_or_default()) }
                        }
                    } } }
                } }
            }
        }
    }
}

fn draw_lines(title: &str, unit: &str, series: &[Series]) -> Option<String> {
    let day = crate::foundation::clock::DAY_MS;
    // Days, not milliseconds, on the x axis: the ticks then fall on whole days.
    let at = |ms: i64| ms.div_euclid(day) as f64;
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, y)| (at(*x), *y)))
        .collect();
    let (x0, x1) = (
        all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
    );
    if !x0.is_finite() || !x1.is_finite() {
        return None;
    }
    let (x0, x1) = (x0 - 1.0, x1 + 1.0);
    let ymax = all.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0) * 1.1;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let mut chart = frame(&root, title, x0..x1, 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_labels(((x1 - x0) as usize + 1).min(8))
            .y_labels(5)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 0.01 {
                    layout::day(x.round() as i64 * day)[5..].to_owned()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc(label(unit))
            .light_line_style(RGBColor(234, 238, 242))
            .draw()
            .ok()?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|(x, y)| (at(*x), *y)),
                    colour.stroke_width(2),
                ))
                .ok()?
                .label(label(&s.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|(x, y)| Circle::new((at(*x), *y), 3, colour.filled())),
                )
                .ok()?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(208, 215, 222))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(out)
}

/// A bar chart of named counts, with the numbers as a table below it.
pub fn bars(title: &str, unit: &str, bars: &[(String, i64)]) -> Markup {
    let svg = if bars.is_empty() {
        String::new()
    } else {
        guarded(|| draw_bars(title, unit, bars))
    };
    html! {
        figure.chart {
            @if svg.is_empty() { p.hint { "Nothing to show." } } @else { (layout::svg(svg)) }
            details {
                summary { (title) ": the numbers" }
                table {
                    thead { tr { th { "" } th.num { (unit) } } }
                    tbody { @for (name, value) in bars { tr { td { (name) } td.num { (layout::number(*value)) } } } }
                }
            }
        }
    }
}

fn draw_bars(title: &str, unit: &str, bars: &[(String, i64)]) -> Option<String> {
    let n = bars.len();
    // Negative values (a party that owes) go below the axis.
    let ymax = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.15;
    let ymin = bars.iter().map(|b| b.1).min().unwrap_or(0).min(0) as f64 * 1.15;
    let names: Vec<String> = bars.iter().map(|b| label(&b.0)).collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let mut chart = frame(&root, title, 0.0..n as f64, ymin..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            // Names are written on the bars themselves: tick positions are the library's.
            .x_labels(2)
            .x_label_formatter(&|_| String::new())
            .y_labels(5)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc(label(unit))
            .light_line_style(RGBColor(234, 238, 242))
            .draw()
            .ok()?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let x = i as f64;
                let colour = if *v < 0 { COLOURS[1] } else { COLOURS[0] };
                Rectangle::new([(x + 0.15, 0.0), (x + 0.85, *v as f64)], colour.filled())
            }))
            .ok()?;
        let style = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(
                names
                    .iter()
                    .zip(bars)
                    .enumerate()
                    .map(|(i, (name, (_, v)))| {
                        Text::new(
                            name.clone(),
                            (i as f64 + 0.5, (*v).max(0) as f64),
                            style.clone(),
                        )
                    }),
            )
            .ok()?;
        root.present().ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_data() {
        let series = [Series {
            name: "calls".to_owned(),
            points: vec![(0, 3.0), (86_400_000, 7.0)],
        }];
        let html = lines_over_days("Calls per day", "calls", &series).into_string();
        assert!(html.contains("<svg"), "{html}");
        assert!(html.contains("Calls per day"));
        assert!(html.contains("<td class=\"num\">7</td>"), "{html}");
        let html = bars("Failures", "count", &[("<x>".to_owned(), 2)]).into_string();
        let owes = bars(
            "Net",
            "units",
            &[("a".to_owned(), -28), ("b".to_owned(), 28)],
        );
        assert!(
            owes.into_string().contains("<rect"),
            "a negative bar is drawn"
        );
        assert!(html.contains("<svg"));
        assert!(!html.contains("<x>"), "labels are escaped or stripped");
        // One day of a real date: the axis still spans whole days around it.
        let one_day = [Series {
            name: "calls".to_owned(),
            points: vec![(1_772_445_600_000, 3.0)],
        }];
        let html = lines_over_days("One day", "calls", &one_day).into_string();
        assert!(html.contains("<svg") && html.contains("03-02"), "{html}");
        let empty = lines_over_days("Nothing", "calls", &[]).into_string();
        assert!(empty.contains("No data yet"));
    }
}
