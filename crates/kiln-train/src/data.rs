//! Training data: labelled samples held in memory, shuffled, augmented and batched.
//!
//! Samples are read once with [`kiln::data`] (IDX such as Fashion-MNIST,
//! ImageFolder directories through a preprocessing preset, `.npz`, `.npy`),
//! so every format and preset kiln evaluates with trains the same way. The
//! decoded inputs are kept in memory as `f32` when they fit a byte cap
//! ([`TrainSet::load`]); past the cap, datasets of files (ImageFolder
//! directories, `.npy` folders) are streamed: each batch decodes just its
//! samples, so memory stays bounded by the batch. IDX and `.npz` past the cap
//! are refused with their size, never allocated. Shuffling and augmentation draw from a seeded SplitMix64
//! stream derived from `(seed, epoch, step)`, so any step can be replayed
//! without saving RNG state.

use crate::{Error, ErrorKind};
use kiln::data::{DataSpec, Dataset};

/// Default cap on the bytes a training set may hold in memory (4 GiB).
pub const DEFAULT_MAX_BYTES: usize = 4 << 30;

/// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): a small, fast,
/// well-distributed seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a tuple of seeds (mixed in order).
    pub fn new(seeds: &[u64]) -> Rng {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for &s in seeds {
            r.0 ^= s;
            r.next_u64();
        }
        r
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in `0..n` (`n > 0`; Lemire's multiply-shift, bias < 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform `f64` in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// A Fisher-Yates permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Where the inputs of a [`TrainSet`] are.
#[derive(Debug, Clone)]
enum Store {
    /// Decoded, sample-major, `len * C * H * W` values.
    Mem(Vec<f32>),
    /// Read on demand: sample `i` of the set is sample `idx[i]` of the dataset.
    Files(std::sync::Arc<Dataset>, Vec<usize>),
}

/// Labelled samples of one shape `[C, H, W]`, in memory or streamed from files.
#[derive(Debug, Clone)]
pub struct TrainSet {
    /// Per-sample shape `[C, H, W]`.
    pub shape: [usize; 3],
    store: Store,
    /// Class index per sample.
    pub y: Vec<u32>,
    /// Where the samples came from (the dataset path and range).
    pub source: String,
}

impl TrainSet {
    /// Reads every sample of `spec` (which must have labels) into memory.
    ///
    /// # Errors
    /// [`ErrorKind::Data`] if a sample has no label, the samples differ in
    /// shape, a sample is not `[1, C, H, W]`, or the set would hold more than
    /// `max_bytes` (checked before the inputs are allocated); reading errors
    /// of [`kiln::data`] as they are.
    pub fn load(spec: DataSpec, max_bytes: usize) -> Result<TrainSet, Error> {
        let path = spec.path.clone();
        let ds = Dataset::open(spec)?;
        let derr = |m: String| Error::new(ErrorKind::Data, m).with_file(&path);
        if !ds.has_labels() {
            return Err(derr(
                "the dataset has no labels; training needs a label per sample".into(),
            ));
        }
        let n = ds.len();
        let check = |s: &kiln::data::Sample| -> Result<[usize; 3], Error> {
            let d = s.input.shape();
            if d.len() != 4 || d[0] != 1 {
                return Err(derr(format!(
                    "sample {} has dims {d:?}; training needs [1, C, H, W] per sample",
                    s.name
                )));
            }
            Ok([d[1], d[2], d[3]])
        };
        if n == 0 {
            return Err(derr("the dataset is empty".into()));
        }
        let source = format!("{} ({} samples)", path.display(), n);
        if ds.random_access() {
            let first = ds.get(0)?;
            let shape = check(&first)?;
            let bytes = n
                .saturating_mul(shape.iter().product::<usize>())
                .saturating_mul(4);
            if bytes > max_bytes {
                let y = (0..n)
                    .map(|i| {
                        ds.label_of(i)
                            .map(|l| l as u32)
                            .ok_or_else(|| derr(format!("sample {i} has no label")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(TrainSet {
                    shape,
                    store: Store::Files(std::sync::Arc::new(ds), (0..n).collect()),
                    y,
                    source,
                });
            }
        }
        let mut shape = None;
        let (mut x, mut y) = (Vec::new(), Vec::with_capacity(n));
        for s in ds.samples()? {
            let s = s?;
            let sh = check(&s)?;
            match shape {
                None => {
                    let bytes = n.saturating_mul(sh.iter().product::<usize>()).saturating_mul(4);
                    if bytes > max_bytes {
                        return Err(derr(format!(
                            "{n} samples of {sh:?} need {} MiB in memory, above the cap of {} MiB ({} files are read in order only; \
                             datasets of image or .npy files past the cap are streamed)",
                            bytes >> 20,
                            max_bytes >> 20,
                            ds.format().name()
                        )));
                    }
                    x.reserve_exact(n * sh.iter().product::<usize>());
                    shape = Some(sh);
                }
                Some(p) if p != sh => {
                    return Err(derr(format!(
                        "sample {} is {sh:?}, the first sample was {p:?}",
                        s.name
                    )));
                }
                _ => {}
            }
            let label = s
                .label
                .ok_or_else(|| derr(format!("sample {} has no label", s.name)))?;
            x.extend(s.input.to_f32_vec());
            y.push(label as u32);
        }
        let shape = shape.ok_or_else(|| derr("the dataset is empty".into()))?;
        Ok(TrainSet {
            shape,
            store: Store::Mem(x),
            y,
            source,
        })
    }

    /// True if the inputs are read from files batch by batch (the set did
    /// not fit the memory cap).
    pub fn is_streamed(&self) -> bool {
        matches!(self.store, Store::Files(..))
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Values per sample (`C * H * W`).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Samples `range` as a new set (e.g. a validation hold-out).
    pub fn slice(&self, range: std::ops::Range<usize>) -> TrainSet {
        let k = self.sample_len();
        let store = match &self.store {
            Store::Mem(x) => Store::Mem(x[range.start * k..range.end * k].to_vec()),
            Store::Files(ds, idx) => Store::Files(ds.clone(), idx[range.clone()].to_vec()),
        };
        TrainSet {
            shape: self.shape,
            store,
            y: self.y[range.clone()].to_vec(),
            source: format!("{} [{}..{}]", self.source, range.start, range.end),
        }
    }

    /// Gathers samples `idx` into one `[B, C, H, W]` buffer, augmented.
    ///
    /// # Errors
    /// Streamed sets: reading errors of a sample's file, or a sample whose
    /// shape differs from the first one's ([`ErrorKind::Data`]).
    pub fn gather(&self, idx: &[usize], aug: &Augment, rng: &mut Rng) -> Result<(Vec<f32>, Vec<u32>), Error> {
        let k = self.sample_len();
        let mut x = Vec::with_capacity(idx.len() * k);
        let mut y = Vec::with_capacity(idx.len());
        let mut decoded: Vec<f32>;
        for &i in idx {
            let s: &[f32] = match &self.store {
                Store::Mem(all) => &all[i * k..(i + 1) * k],
                Store::Files(ds, map) => {
                    let smp = ds.get(map[i])?;
                    let d = smp.input.shape();
                    if d != [1, self.shape[0], self.shape[1], self.shape[2]] {
                        return Err(Error::new(
                            ErrorKind::Data,
                            format!(
                                "sample {} has dims {d:?}, the first sample was {:?}",
                                smp.name, self.shape
                            ),
                        ));
                    }
                    decoded = smp.input.to_f32_vec();
                    &decoded
                }
            };
            if aug.is_identity() {
                x.extend_from_slice(s);
            } else {
                let start = x.len();
                x.resize(start + k, 0.0);
                aug.apply(self.shape, s, &mut x[start..], rng);
            }
            y.push(self.y[i]);
        }
        Ok((x, y))
    }

    /// The inputs of samples `range`, sample-major (no augmentation).
    ///
    /// # Errors
    /// As [`TrainSet::gather`].
    pub fn inputs(&self, range: std::ops::Range<usize>) -> Result<Vec<f32>, Error> {
        match &self.store {
            Store::Mem(x) => {
                let k = self.sample_len();
                Ok(x[range.start * k..range.end * k].to_vec())
            }
            Store::Files(..) => {
                let idx: Vec<usize> = range.collect();
                Ok(self.gather(&idx, &Augment::default(), &mut Rng::new(&[0]))?.0)
            }
        }
    }
}

/// Standard augmentations for small-image classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Random horizontal flip with probability 0.5.
    pub flip: bool,
    /// Random crop with zero padding: the image is shifted by up to this many
    /// pixels in each direction (equivalently, padded by `shift` and
    /// cropped back at a random offset; 0 = off).
    pub shift: usize,
}

impl Augment {
    /// Parses a comma-separated list: `none`, `flip`, `shift:K` (e.g. `flip,shift:2`).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an unknown item.
    pub fn parse(s: &str) -> Result<Augment, Error> {
        let mut a = Augment::default();
        for item in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match item {
                "none" => {}
                "flip" => a.flip = true,
                t if t.starts_with("shift:") => {
                    a.shift = t[6..].parse().map_err(|_| {
                        Error::new(
                            ErrorKind::Config,
                            format!("augmentation '{t}': expected shift:K with K a pixel count"),
                        )
                    })?;
                }
                t => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("unknown augmentation '{t}' (known: none, flip, shift:K)"),
                    ))
                }
            }
        }
        Ok(a)
    }

    /// True if nothing is applied.
    pub fn is_identity(&self) -> bool {
        !self.flip && self.shift == 0
    }

    /// Writes an augmented copy of `src` (`[C, H, W]`) into `dst`.
    pub fn apply(&self, shape: [usize; 3], src: &[f32], dst: &mut [f32], rng: &mut Rng) {
        let [c, h, w] = shape;
        let flip = self.flip && rng.below(2) == 1;
        let (dy, dx) = if self.shift > 0 {
            let r = 2 * self.shift + 1;
            (
                rng.below(r) as isize - self.shift as isize,
                rng.below(r) as isize - self.shift as isize,
            )
        } else {
            (0, 0)
        };
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let sx = x as isize + dx;
                    let v = if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                        0.0
                    } else {
                        let sx = if flip { w - 1 - sx as usize } else { sx as usize };
                        src[(ch * h + sy as usize) * w + sx]
                    };
                    dst[(ch * h + y) * w + x] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = Rng::new(&[7, 1]).permutation(1000);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, Rng::new(&[7, 1]).permutation(1000));
        assert_ne!(p, Rng::new(&[7, 2]).permutation(1000));
    }

    #[test]
    fn shift_and_flip_move_pixels() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut dst = vec![0.0; 9];
        Augment::default().apply([1, 3, 3], &src, &mut dst, &mut Rng::new(&[0]));
        assert_eq!(dst, src);
        // Some seed flips; a flipped row is reversed.
        let a = Augment { flip: true, shift: 0 };
        let flipped: Vec<f32> = vec![2., 1., 0., 5., 4., 3., 8., 7., 6.];
        let seen = (0..16).any(|s| {
            a.apply([1, 3, 3], &src, &mut dst, &mut Rng::new(&[s]));
            dst == flipped
        });
        assert!(seen);
        assert!(Augment::parse("flip,shift:2").unwrap() == Augment { flip: true, shift: 2 });
        assert_eq!(Augment::parse("rotate").unwrap_err().kind, ErrorKind::Config);
    }
}
