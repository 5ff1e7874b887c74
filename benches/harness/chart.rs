//! The comparison chart (SVG, `plotters` with its SVG backend only: no font
//! files or system libraries; text is left to the SVG viewer).
//!
//! Panels: events/s per contender for Kafka 128 B, Kafka 1 KB and NATS
//! (medians of verified runs; failed or skipped cases have no bar);
//! scenario 3 against its bound; scenario 4's RSS and backlog over time;
//! scenario 5's concurrency and lag over time (first verified run of each).
//!
//! Guarantees: draws only figures present in the rows; a drawing error is
//! returned, never hidden.

use plotters::prelude::*;

use super::report::Row;

fn colour(contender: &str) -> RGBColor {
    match contender {
        "spate" => RGBColor(0x1f, 0x77, 0xb4),
        c if c.starts_with("raw") => RGBColor(0x7f, 0x7f, 0x7f),
        "Quix Streams" => RGBColor(0xff, 0x7f, 0x0e),
        "Bytewax" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x94, 0x67, 0xbd),
    }
}

fn short(guarantee: &str) -> String {
    match guarantee.split(' ').next().unwrap_or("") {
        "at-least-once" => "ALO".to_owned(),
        "exactly-once" => "EOS".to_owned(),
        "at-most-once" => "core".to_owned(),
        _ => guarantee.trim_start_matches("ordering ").to_owned(),
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Bars of median events/s, one per measured row.
fn bars(area: &Area, title: &str, rows: &[&Row], bound: bool) -> DrawResult {
    let measured: Vec<&&Row> = rows.iter().filter(|r| r.measured()).collect();
    let top = measured
        .iter()
        .map(|r| {
            if bound {
                r.bound.unwrap_or(0.0).min(r.rate() * 4.0).max(r.rate())
            } else {
                r.rate()
            }
        })
        .fold(1.0, f64::max)
        * 1.15;
    let labels: Vec<String> = measured
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.contender.replace("Streams", ""),
                short(&r.guarantee)
            )
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..measured.len().max(1) as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(measured.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("events/s")
        .y_label_formatter(&|y| super::report::thousands(*y))
        .draw()?;
    for (i, row) in measured.iter().enumerate() {
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, row.rate())],
            colour(&row.contender).filled(),
        )))?;
        if bound {
            if let Some(b) = row.bound.filter(|b| *b <= top) {
                chart.draw_series(LineSeries::new(vec![(x + 0.05, b), (x + 0.95, b)], &RED))?;
            }
        }
    }
    Ok(())
}

/// Two series over time from the first verified run of a dynamic row.
fn timeline(area: &Area, title: &str, row: Option<&Row>, names: (&str, &str)) -> DrawResult {
    let series = row
        .and_then(|r| r.runs.first())
        .map(|r| r.series.clone())
        .unwrap_or_default();
    let end = series.iter().map(|p| p[0]).fold(1.0, f64::max);
    // (seconds, value) of one column, where it has a value.
    let line = |column: usize| -> Vec<(f64, f64)> {
        series
            .iter()
            .filter(|p| p[column].is_finite())
            .map(|p| (p[0], p[column]))
            .collect()
    };
    let (a, b) = (line(1), line(2));
    let top = |points: &[(f64, f64)]| points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top(&a))?
        .set_secondary_coord(0.0..end, 0.0..top(&b));
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(names.0)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc(names.1)
        .label_style(("sans-serif", 12).into_font().color(&RED))
        .draw()?;
    chart
        .draw_series(LineSeries::new(a, colour("spate").stroke_width(2)))?
        .label(names.0)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour("spate")));
    chart
        .draw_secondary_series(LineSeries::new(b, RED.stroke_width(1)))?
        .label(names.1)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws the chart into `path`.
pub fn draw(path: &std::path::Path, rows: &[Row], title: &str) -> DrawResult {
    let root = SVGBackend::new(path, (1400, 1260)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((3, 2));
    let of = |prefix: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.scenario.starts_with(prefix))
            .collect()
    };
    bars(
        &panels[0],
        "1 Kafka → no-op → Kafka, 128 B",
        &of("1 Kafka 128"),
        false,
    )?;
    bars(
        &panels[1],
        "1 Kafka → no-op → Kafka, 1 KB",
        &of("1 Kafka 1 KB"),
        false,
    )?;
    bars(
        &panels[2],
        "2 NATS → no-op → NATS (JetStream, core)",
        &of("2 "),
        false,
    )?;
    bars(
        &panels[3],
        "3 key-parallel, 1 ms handler (red: bound, if in range)",
        &of("3 "),
        true,
    )?;
    timeline(
        &panels[4],
        "4 backpressure: RSS (MiB) and backlog (events)",
        of("4 ").into_iter().next(),
        ("RSS MiB", "backlog events"),
    )?;
    timeline(
        &panels[5],
        "5 scaling step: concurrency and lag (events)",
        of("5 ").into_iter().next(),
        ("concurrency", "lag events"),
    )?;
    root.present()?;
    Ok(())
}
