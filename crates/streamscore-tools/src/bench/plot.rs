//! The latency-vs-throughput plot of a sweep, as a PNG.

use std::path::Path;

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

/// Draws p50/p95/p99 against achieved throughput, with the half-load p99
/// budget as a dashed line.
pub fn draw(r: &Results, path: &Path, font: &Path) -> Result<(), BenchError> {
    let fail = |message: String| BenchError::Plot {
        path: path.display().to_string(),
        message,
    };
    register(font).map_err(fail)?;
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let x_max = r
        .levels
        .iter()
        .map(|l| l.achieved.max(l.offered))
        .fold(1.0, f64::max)
        * 1.05;
    let bound = report::half_load(r).map(|l| report::latency_bound_ms(r, l));
    let y_max = r
        .levels
        .iter()
        .map(|l| l.p99_ms)
        .chain(bound)
        .fold(1.0, f64::max)
        * 1.1;
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
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (rows/s)")
        .y_desc("end-to-end latency (ms)")
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    let series: [(&str, RGBColor, Quantile); 3] = [
        ("p50", BLUE, |l| l.p50_ms),
        ("p95", GREEN, |l| l.p95_ms),
        ("p99", RED, |l| l.p99_ms),
    ];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = r.levels.iter().map(|l| (l.achieved, value(l))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| fail(e.to_string()))?;
    }
    if let Some(bound) = bound {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, bound), (x_max, bound)],
                8,
                6,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label("p99 budget at 50% load")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}
