//! `curves.png` of `kiln train`: the loss and top-1 curves of a run, drawn
//! from its `metrics.json` after every epoch (plotters' bitmap backend with
//! an embedded DejaVu Sans font, encoded as PNG by `image`; written
//! atomically).

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const W: u32 = 1100;
const H: u32 = 420;

/// One epoch's figures as `metrics.json` records them.
struct Point {
    epoch: f64,
    loss: f64,
    train_top1: f64,
    val_top1: Option<f64>,
}

pub(crate) fn font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    anyhow::ensure!(ok, "the embedded DejaVu Sans font did not load");
    Ok(())
}

/// Reads `metrics` (a `metrics.json` of `kiln train`) and writes `png`:
/// left, the mean training loss per epoch; right, training and validation
/// top-1 (%) per epoch. `title` heads the figure.
pub fn write_curves(metrics: &Path, png: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", metrics.display()))?;
    let pts: Vec<Point> = v["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some(Point {
                        epoch: m["epoch"].as_f64()?,
                        loss: m["train_loss"].as_f64()?,
                        train_top1: m["train_top1"].as_f64()?,
                        val_top1: m["val_top1"].as_f64(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(!pts.is_empty(), "{}: no epochs recorded", metrics.display());
    font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    draw(&mut buf, &pts, title).map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
    let img = image::RgbImage::from_raw(W, H, buf).context("plot buffer size")?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .context("encoding the plot as PNG")?;
    kiln::write_atomic(png, bytes.get_ref())?;
    Ok(())
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(buf: &mut [u8], pts: &[Point], title: &str) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(W / 2);
    let last = pts.iter().map(|p| p.epoch).fold(1.0, f64::max);
    let x_range = 0.5..last + 0.5;

    let lmax = pts.iter().map(|p| p.loss).fold(0.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&left)
        .margin(12)
        .caption("training loss (mean per epoch)", ("sans-serif", 16))
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range.clone(), 0.0..lmax.max(1e-3))?;
    c.configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .x_labels(pts.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    let loss: Vec<(f64, f64)> = pts.iter().map(|p| (p.epoch, p.loss)).collect();
    c.draw_series(LineSeries::new(loss.clone(), BLUE.stroke_width(2)))?;
    c.draw_series(loss.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;

    let vals: Vec<(f64, f64)> = pts.iter().filter_map(|p| Some((p.epoch, p.val_top1?))).collect();
    let train: Vec<(f64, f64)> = pts.iter().map(|p| (p.epoch, p.train_top1)).collect();
    let lo = train
        .iter()
        .chain(&vals)
        .map(|p| p.1)
        .fold(100.0, f64::min)
        .min(99.0);
    let y0 = (lo - 2.0).max(0.0).floor();
    let mut c = ChartBuilder::on(&right)
        .margin(12)
        .caption(
            if vals.is_empty() {
                "top-1 (%): train (red)"
            } else {
                "top-1 (%): train (red), validation on kiln's runtime (green)"
            },
            ("sans-serif", 16),
        )
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range, y0..100.0)?;
    c.configure_mesh()
        .x_desc("epoch")
        .y_desc("top-1 %")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(pts.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    c.draw_series(LineSeries::new(train.clone(), RED.stroke_width(2)))?;
    c.draw_series(train.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    if !vals.is_empty() {
        let green = RGBColor(0, 140, 60);
        c.draw_series(LineSeries::new(vals.clone(), green.stroke_width(2)))?;
        c.draw_series(vals.iter().map(|&p| Circle::new(p, 3, green.filled())))?;
    }
    root.present()?;
    Ok(())
}
