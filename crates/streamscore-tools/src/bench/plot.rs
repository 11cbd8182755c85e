//! The latency-vs-throughput plot of a sweep, as a PNG.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::bench::{BenchError, Level, Results, report};

/// Picks one latency quantile of a sweep step.
type Quantile = fn(&Level) -> f64;

/// Registers the TrueType font the labels are drawn with (once per process).
fn register(font: &Path) -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(font).map_err(|e| {
            format!(
                "font {}: {e} (install one with `apt-get install fonts-dejavu-core`, or pass --font)",
                font.display()
            )
        })?;
        // The font lives as long as the process; plotters wants 'static bytes.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("font {}: not a TrueType font", font.display()))
    })
    .clone()
}

/// The plot's drawing area, in rows/s against ms.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws p50/p95/p99 against achieved throughput, with the half-load p99
/// budget as a dashed line.
pub fn draw(r: &Results, path: &Path, font: &Path) -> Result<(), BenchError> {
    register(font)
        .and_then(|()| paint(r, path))
        .map_err(|message| BenchError::Plot {
            path: path.display().to_string(),
            message,
        })
}

/// plotters' errors are generic over the backend; text is all the caller
/// needs of them.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn paint(r: &Results, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let bound = report::half_load(r).map(|l| report::latency_bound_ms(r, l));
    let (x_max, y_max) = extent(r, bound);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "streamscore end-to-end latency vs throughput ({}, exactly-once)",
                r.device
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (rows/s)")
        .y_desc("end-to-end latency (ms)")
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(text)?;
    draw_quantiles(&mut chart, &r.levels)?;
    if let Some(bound) = bound {
        draw_budget(&mut chart, bound, x_max)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(text)?;
    root.present().map_err(text)?;
    Ok(())
}

/// The axes' ends: a margin above the largest value, so that no point sits
/// on the frame, and room for the budget line even when every p99 is below it.
fn extent(r: &Results, bound: Option<f64>) -> (f64, f64) {
    let x_max = r
        .levels
        .iter()
        .map(|l| l.achieved.max(l.offered))
        .fold(1.0, f64::max)
        * 1.05;
    let y_max = r
        .levels
        .iter()
        .map(|l| l.p99_ms)
        .chain(bound)
        .fold(1.0, f64::max)
        * 1.1;
    (x_max, y_max)
}

fn draw_quantiles(chart: &mut Chart<'_, '_>, levels: &[Level]) -> Result<(), String> {
    let series: [(&str, RGBColor, Quantile); 3] = [
        ("p50", BLUE, |l| l.p50_ms),
        ("p95", GREEN, |l| l.p95_ms),
        ("p99", RED, |l| l.p99_ms),
    ];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = levels.iter().map(|l| (l.achieved, value(l))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(text)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(text)?;
    }
    Ok(())
}

fn draw_budget(chart: &mut Chart<'_, '_>, bound: f64, x_max: f64) -> Result<(), String> {
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, bound), (x_max, bound)],
            8,
            6,
            BLACK.stroke_width(1),
        ))
        .map_err(text)?
        .label("p99 budget at 50% load")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    Ok(())
}
