//! `kiln eval`: accuracy of a classifier over a dataset, and agreement with a second model.

use anyhow::{anyhow, bail, Result};
use kiln::data::{DataSpec, Dataset, Format, LabelMode, Labels, Split};
use kiln::eval::{batch_size, evaluate, format_db, Accuracy, EvalModel, EvalOptions, EvalReport};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::ops::Range;
use std::path::PathBuf;

/// The options of `kiln eval`.
pub struct Opts {
    pub model: PathBuf,
    pub data: PathBuf,
    pub preset: String,
    pub labels: String,
    pub classes: Option<PathBuf>,
    pub split: Option<String>,
    pub range: Option<String>,
    pub limit: Option<usize>,
    pub batch: usize,
    pub compare: Option<PathBuf>,
    pub threads: usize,
    pub json: bool,
}

/// Parses `--range` (`A..B`, `A..` or `..B`).
fn parse_range(s: &str) -> Result<Range<usize>> {
    crate::quantize::parse_range("--range", s)
}

/// Up to 10 names, then how many more.
fn name_list(v: &[String]) -> String {
    let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > 10 {
        s.push_str(&format!(", ... ({} more)", v.len() - 10));
    }
    s
}

/// Why a dataset has no labels, and how to give it some.
fn no_labels_hint(ds: &Dataset, mode: LabelMode) -> String {
    if mode == LabelMode::None {
        return "--labels none: no labels to measure accuracy against".into();
    }
    match ds.format() {
        Format::Images | Format::Npy => "no labels: there are no class sub-folders and not every file name \
             ends in a class number (name_559.jpg); use the ImageFolder layout or numbered names"
            .into(),
        Format::Idx => "no labels: no matching *-labels-idx1-ubyte[.gz] file beside the images file".into(),
        Format::Npz => "no labels: the archive has no label array (y)".into(),
    }
}

fn fmt_diff(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.4e}")
    }
}

fn acc_line(label: &str, n: usize, of: usize) -> String {
    let p = kiln::eval::percent(n, of).unwrap_or(0.0);
    format!("{label}{n}/{of} = {p:.2}%")
}

fn acc_json(n: usize, of: usize) -> Value {
    json!({"correct": n, "total": of, "percent": kiln::eval::percent(n, of)})
}

fn db_json(db: f64) -> Value {
    if db.is_finite() {
        json!(db)
    } else if db.is_nan() {
        Value::Null
    } else {
        json!(format_db(db))
    }
}

pub fn eval(o: &Opts) -> Result<()> {
    if o.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if o.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let preset = crate::preset(&o.preset)?;
    let labels = LabelMode::from_name(&o.labels).ok_or_else(|| anyhow!("unknown --labels '{}'", o.labels))?;
    let mut spec = DataSpec::new(&o.data);
    spec.preset = preset;
    spec.labels = labels;
    spec.class_names = o
        .classes
        .as_deref()
        .map(kiln::classify::load_labels)
        .transpose()?;
    spec.split = o
        .split
        .as_deref()
        .map(|s| Split::from_name(s).ok_or_else(|| anyhow!("unknown --split '{s}' (test or train)")))
        .transpose()?;
    spec.range = o.range.as_deref().map(parse_range).transpose()?;
    spec.limit = o.limit;
    if o.limit == Some(0) {
        bail!("--limit must be at least 1");
    }

    let session = kiln::open_session(&o.model)?.with_threads(o.threads);
    let other = o
        .compare
        .as_deref()
        .map(|p| kiln::open_session(p).map(|s| s.with_threads(o.threads)))
        .transpose()?;
    let ds = Dataset::open(spec)?;
    if !ds.skipped().is_empty() {
        let what = if ds.format() == Format::Npy {
            "non-.npy"
        } else {
            "non-image"
        };
        eprintln!(
            "note: skipped {} {what} file(s) in {}: {}",
            ds.skipped().len(),
            o.data.display(),
            name_list(ds.skipped())
        );
    }
    if !ds.has_labels() && other.is_none() {
        bail!(
            "{}: {}; or give --compare MODEL2 to measure agreement only",
            ds.spec().path.display(),
            no_labels_hint(&ds, labels)
        );
    }
    let used =
        batch_size(&session, o.batch).min(other.as_ref().map_or(usize::MAX, |s| batch_size(s, o.batch)));
    if o.batch > 1 && used == 1 {
        let fixed = if batch_size(&session, 2) == 1 {
            &o.model
        } else {
            o.compare.as_ref().unwrap_or(&o.model)
        };
        eprintln!(
            "note: --batch {} ignored: {} has a fixed batch dim; running one sample at a time",
            o.batch,
            fixed.display()
        );
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(ds.len() as u64);
        if let Ok(st) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} samples  {elapsed_precise} (eta {eta})",
        ) {
            b.set_style(st);
        }
        b
    });
    let model = EvalModel {
        session: &session,
        file: &o.model,
    };
    let cmp = other
        .as_ref()
        .zip(o.compare.as_deref())
        .map(|(s, f)| EvalModel { session: s, file: f });
    let r = evaluate(model, cmp, &ds, &EvalOptions { batch: o.batch }, &mut |n| {
        if let Some(b) = &bar {
            b.set_position(n as u64);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = r?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&to_json(o, &ds, &r))?);
    } else {
        print_text(o, &ds, &r);
    }
    Ok(())
}

fn data_line(o: &Opts, ds: &Dataset) -> String {
    let mut s = format!("{} ({}", ds.spec().path.display(), ds.format().name());
    if ds.format() == Format::Images {
        s.push_str(&format!(", preset {}", o.preset));
    }
    if ds.len() != ds.total() {
        s.push_str(&format!(
            ", samples {}..{} of {}",
            ds.start(),
            ds.start() + ds.len(),
            ds.total()
        ));
    }
    s.push(')');
    s
}

fn print_text(o: &Opts, ds: &Dataset, r: &EvalReport) {
    println!("model:    {}", o.model.display());
    println!("data:     {}", data_line(o, ds));
    println!("labels:   {}", ds.labels().describe());
    println!(
        "samples:  {} ({} classes, batch {}) in {:.2} s, {:.3} ms/sample",
        r.samples,
        r.classes,
        r.batch,
        r.seconds,
        r.seconds * 1e3 / r.samples.max(1) as f64
    );
    let print_acc = |indent: &str, a: &Accuracy| {
        println!("{}", acc_line(&format!("{indent}top-1:    "), a.top1, a.samples));
        println!("{}", acc_line(&format!("{indent}top-5:    "), a.top5, a.samples));
    };
    if let Some(a) = &r.accuracy {
        print_acc("", a);
    }
    if let (Some(c), Some(p)) = (&r.compare, &o.compare) {
        let g = &c.agreement;
        println!("compare:  {}", p.display());
        if let Some(a) = &c.accuracy {
            print_acc("  ", a);
        }
        println!("{}", acc_line("  top-1 agreement: ", g.top1_same, g.samples));
        println!(
            "  |logit diff|:    max {}, mean {}",
            fmt_diff(g.max_abs_diff),
            fmt_diff(g.mean_abs_diff())
        );
        println!("  SQNR:            {} dB", format_db(g.sqnr_db()));
    }
}

fn to_json(o: &Opts, ds: &Dataset, r: &EvalReport) -> Value {
    let acc = |a: &Option<Accuracy>, top5: bool| {
        a.as_ref().map_or(Value::Null, |a| {
            acc_json(if top5 { a.top5 } else { a.top1 }, a.samples)
        })
    };
    let labels = match ds.labels() {
        Labels::None => Value::Null,
        l => json!(l.describe()),
    };
    json!({
        "model": o.model.display().to_string(),
        "data": ds.spec().path.display().to_string(),
        "format": ds.format().name(),
        "preset": (ds.format() == Format::Images).then_some(&o.preset),
        "labels": labels,
        "skipped": ds.skipped(),
        "range": [ds.start(), ds.start() + ds.len()],
        "total": ds.total(),
        "samples": r.samples,
        "labelled": r.accuracy.map(|a| a.samples),
        "classes": r.classes,
        "batch": r.batch,
        "seconds": r.seconds,
        "top1": acc(&r.accuracy, false),
        "top5": acc(&r.accuracy, true),
        "compare": r.compare.as_ref().map(|c| {
            let g = &c.agreement;
            json!({
                "model": o.compare.as_deref().map(|p| p.display().to_string()),
                "top1": acc(&c.accuracy, false),
                "top5": acc(&c.accuracy, true),
                "top1_agreement": {"same": g.top1_same, "total": g.samples, "percent": g.top1_percent()},
                "max_abs_diff": g.max_abs_diff,
                "mean_abs_diff": g.mean_abs_diff(),
                "sqnr_db": db_json(g.sqnr_db()),
            })
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("55000..60000").unwrap(), 55000..60000);
        assert_eq!(parse_range("10..").unwrap(), 10..usize::MAX);
        assert_eq!(parse_range("..5").unwrap(), 0..5);
        assert!(parse_range("5..5").is_err());
        assert!(parse_range("9..2").is_err());
        assert!(parse_range("1-2").is_err());
        assert!(parse_range("a..b").is_err());
    }

    #[test]
    fn figures_format() {
        assert_eq!(acc_line("top-1: ", 17, 20), "top-1: 17/20 = 85.00%");
        assert_eq!(fmt_diff(0.0), "0");
        assert_eq!(fmt_diff(0.000123), "1.2300e-4");
        assert_eq!(db_json(f64::INFINITY), json!("inf"));
        assert_eq!(db_json(41.5), json!(41.5));
        let v: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert_eq!(name_list(&v), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (2 more)");
    }
}
