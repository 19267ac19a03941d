//! Classifier post-processing: softmax, top-k, class names, labels from file names.

use crate::{Error, ErrorKind};
use std::path::Path;

/// Softmax over a vector of logits (numerically stable: subtracts the max).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Class probabilities from a classifier output: the output itself when it
/// already is a distribution (every entry in [0, 1], summing to 1 within
/// 1e-3, as models ending in Softmax give), else its [`softmax`].
pub fn probabilities(output: &[f32]) -> Vec<f32> {
    let sum: f32 = output.iter().sum();
    if output.iter().all(|p| (0.0..=1.0).contains(p)) && (sum - 1.0).abs() <= 1e-3 {
        output.to_vec()
    } else {
        softmax(output)
    }
}

/// Indices and values of the `k` largest entries, largest first (ties: lower index first).
pub fn top_k(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, v[i])).collect()
}

/// Reads class names, one per line, in class-index order.
pub fn load_labels(path: &Path) -> Result<Vec<String>, Error> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
    if v.is_empty() {
        return Err(Error::new(ErrorKind::Decode, "label file is empty").with_file(path));
    }
    Ok(v)
}

/// The label encoded as the last number of a file name, e.g.
/// `imagenet_06_463.jpg` -> 463 (the foolbox sample-image convention).
pub fn label_from_file_name(path: &Path) -> Option<usize> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_softmax_sums_to_one() {
        let v = [0.1, 3.0, -1.0, 2.0];
        assert_eq!(top_k(&v, 2), vec![(1, 3.0), (3, 2.0)]);
        let p = softmax(&v);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[3]);
        // A distribution is kept as is; logits go through softmax.
        assert_eq!(probabilities(&[0.568, 0.432]), vec![0.568, 0.432]);
        assert_eq!(probabilities(&v), p);
    }

    #[test]
    fn label_from_foolbox_name() {
        assert_eq!(
            label_from_file_name(Path::new("x/imagenet_06_463.jpg")),
            Some(463)
        );
        assert_eq!(label_from_file_name(Path::new("chelsea.png")), None);
    }
}
