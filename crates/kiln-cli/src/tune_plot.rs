//! `pareto.png` of `kiln tune`: every measured candidate as accuracy
//! against latency, the Pareto front joined by a line, the chosen one
//! marked, and the latency and accuracy limits drawn (plotters' bitmap
//! backend, embedded DejaVu Sans, PNG by `image`; written atomically).

use anyhow::{Context, Result};
use kiln_search::tune::{CandidateResult, Limits};
use plotters::prelude::*;
use std::path::Path;

const W: u32 = 900;
const H: u32 = 560;

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws the plot of `results` into `png`. `front` and `chosen` index
/// `results`.
pub fn write_pareto(
    png: &Path,
    results: &[CandidateResult],
    front: &[usize],
    chosen: Option<usize>,
    limits: &Limits,
    device: &str,
) -> Result<()> {
    crate::train_plot::font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    draw(&mut buf, results, front, chosen, limits, device)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
    let img = image::RgbImage::from_raw(W, H, buf).context("plot buffer size")?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .context("encoding the plot as PNG")?;
    kiln::write_atomic(png, bytes.get_ref())?;
    Ok(())
}

fn draw(
    buf: &mut [u8],
    results: &[CandidateResult],
    front: &[usize],
    chosen: Option<usize>,
    limits: &Limits,
    device: &str,
) -> DrawResult {
    let pts: Vec<(usize, f64, f64)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.latency_ms?, r.accuracy?.percent)))
        .collect();
    let metric = results
        .iter()
        .find_map(|r| r.accuracy.map(|a| a.metric.name()))
        .unwrap_or("accuracy");
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = pts
        .iter()
        .map(|p| p.1)
        .chain(limits.max_latency_ms)
        .fold(1e-3, f64::max)
        * 1.1;
    let ymin = pts
        .iter()
        .map(|p| p.2)
        .chain(limits.max_accuracy_drop.map(|d| {
            let reference = results
                .iter()
                .find_map(|r| r.accuracy.map(|a| a.reference))
                .unwrap_or(100.0);
            reference - d
        }))
        .fold(100.0, f64::min);
    let y0 = (ymin - 2.0).max(0.0).floor();
    let mut c = ChartBuilder::on(&root)
        .margin(16)
        .caption(
            if chosen.is_some() {
                format!("kiln tune on {device}: {metric} (%) vs latency; Pareto front in red, chosen: blue cross")
            } else {
                format!("kiln tune on {device}: {metric} (%) vs latency; Pareto front in red, none meets the limits")
            },
            ("sans-serif", 17),
        )
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..xmax, y0..100.5)?;
    let predicted = results
        .iter()
        .any(|r| r.latency_source == Some(kiln_search::tune::LatencySource::Predicted));
    c.configure_mesh()
        .x_desc(if predicted {
            "latency (ms, predicted by the cost model)"
        } else {
            "latency (ms, median of measured runs)"
        })
        .y_desc(format!("{metric} %"))
        .draw()?;
    let grey = RGBColor(120, 120, 120);
    c.draw_series(pts.iter().map(|&(_, l, a)| Circle::new((l, a), 4, grey.filled())))?;
    let line: Vec<(f64, f64)> = front
        .iter()
        .filter_map(|&i| pts.iter().find(|p| p.0 == i).map(|p| (p.1, p.2)))
        .collect();
    c.draw_series(LineSeries::new(line.clone(), RED.stroke_width(2)))?;
    c.draw_series(line.iter().map(|&p| Circle::new(p, 5, RED.filled())))?;
    // Labels sit beside their point (a pixel offset), the chosen one's in
    // blue below it, so that the cross does not cover the text.
    for &i in front {
        if Some(i) == chosen {
            continue;
        }
        if let Some(&(_, l, a)) = pts.iter().find(|p| p.0 == i) {
            c.draw_series(std::iter::once(
                EmptyElement::at((l, a)) + Text::new(results[i].candidate.id(), (8, -16), ("sans-serif", 12)),
            ))?;
        }
    }
    if let Some(ch) = chosen {
        if let Some(&(_, l, a)) = pts.iter().find(|p| p.0 == ch) {
            c.draw_series(std::iter::once(Cross::new((l, a), 9, BLUE.stroke_width(3))))?;
            c.draw_series(std::iter::once(
                EmptyElement::at((l, a))
                    + Text::new(
                        format!("chosen: {}", results[ch].candidate.id()),
                        (10, 8),
                        ("sans-serif", 13).into_font().color(&BLUE),
                    ),
            ))?;
        }
    }
    let lim = RGBColor(0, 120, 200);
    if let Some(l) = limits.max_latency_ms {
        c.draw_series(LineSeries::new(vec![(l, y0), (l, 100.5)], lim.stroke_width(1)))?;
    }
    if let Some(d) = limits.max_accuracy_drop {
        let reference = results
            .iter()
            .find_map(|r| r.accuracy.map(|a| a.reference))
            .unwrap_or(100.0);
        let y = reference - d;
        c.draw_series(LineSeries::new(vec![(0.0, y), (xmax, y)], lim.stroke_width(1)))?;
    }
    root.present()?;
    Ok(())
}
