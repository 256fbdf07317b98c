//! SVG line charts of a sweep: throughput and p99 latency against the swept value, one line
//! per allocator.

use std::path::Path;

use plotters::prelude::*;

use crate::error::CliError;

/// One allocator's points: (value index, throughput in ops/s, p99 in ns).
pub(crate) type Series = (String, Vec<(usize, f64, f64)>);

/// Draws the two charts side by side into `path`.
pub(crate) fn sweep_chart(
    path: &Path,
    title: &str,
    param: &str,
    values: &[String],
    series: &[Series],
) -> Result<(), CliError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(draw_error)?;
        let (left, right) = root.split_horizontally(600);
        draw(
            &left,
            "throughput (Mops/s)",
            param,
            values,
            series,
            |(_, t, _)| t / 1e6,
        )?;
        draw(
            &right,
            "p99 latency per sample (µs)",
            param,
            values,
            series,
            |(_, _, p)| p / 1e3,
        )?;
        root.present().map_err(draw_error)?;
    }
    harness::result::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

fn draw(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    y_label: &str,
    param: &str,
    values: &[String],
    series: &[Series],
    y: impl Fn(&(usize, f64, f64)) -> f64,
) -> Result<(), CliError> {
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(&y))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = values.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.25f64..(n as f64 - 0.75), 0.0..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(param)
        .y_desc(y_label)
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < values.len() {
                values[i as usize].clone()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(draw_error)?;
    for (index, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0 as f64, y(p))),
                color.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0 as f64, y(p)), 3, color.filled())),
            )
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

fn draw_error<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Usage {
        option: "--svg".into(),
        message: format!("drawing the chart failed: {e}"),
    }
}
