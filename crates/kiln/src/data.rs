//! Datasets for evaluation and calibration, streamed with bounded memory.
//!
//! A [`DataSpec`] describes where the samples are and how to read them; a
//! [`Dataset`] is that description checked and resolved ([`Dataset::open`]:
//! format detected, files listed, headers read, labels located). Each call to
//! [`Dataset::samples`] or [`Dataset::batches`] starts a fresh pass over the
//! data, so a dataset can be iterated any number of times (calibration makes
//! two passes). Only the current sample (or batch) is held in memory: images
//! are decoded one at a time, IDX and `.npz` arrays are read one sample at a
//! time from a (possibly decompressing) stream.
//!
//! Formats ([`Format`]):
//! - **images**: PNG/JPEG files (`.png`, `.jpg`, `.jpeg`, any case), each
//!   decoded and preprocessed with a [`Preset`] into `[1, 3, H, W]` f32.
//!   Labels come from the ImageFolder layout (one sub-folder per class, class
//!   index = position of the folder name in sorted order or in a given
//!   class-names list) or from the last number of the file name (the foolbox
//!   convention, `imagenet_07_559.jpg` -> 559); see [`LabelMode`].
//! - **npy**: `.npy` files, one model input per file, fed as stored (dtype and
//!   shape, usually with a leading batch dim of 1). Labels as for images.
//! - **idx**: MNIST / Fashion-MNIST IDX files, raw or gzipped:
//!   `*-images-idx3-ubyte[.gz]` (unsigned bytes, `[N, H, W]`) with the
//!   matching `*-labels-idx1-ubyte[.gz]`. Each image is `[1, 1, H, W]` f32
//!   with value `pixel / 255` (in `[0, 1]`, no mean/std normalization). A
//!   folder holding `t10k-*` and/or `train-*` pairs is accepted with a
//!   [`Split`].
//! - **npz**: a NumPy `.npz` archive (stored or deflated, as `np.savez` and
//!   `np.savez_compressed` write) with an array `x` (inputs, first dim =
//!   samples; sample `i` is `x[i:i+1]`, keeping a leading dim of 1, dtype as
//!   stored) and an optional 1-D integer array `y` (labels). Keras-style
//!   `x_test`/`y_test` and `x_train`/`y_train` are chosen with a [`Split`].
//!
//! In folders, hidden entries (names starting with `.`) are ignored; other
//! files that are not samples are listed by [`Dataset::skipped`].
//!
//! Every error names the file at fault. Sizes read from headers are checked
//! against caps and against the file before anything is allocated for them.

use crate::classify::label_from_file_name;
use crate::npy::{decode_le, read_npy_header, NpyHeader};
use crate::preprocess::{load_image, Preset};
use crate::{Error, ErrorKind};
use kiln_ir::{DType, Tensor, TensorData};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Largest image an IDX file may declare (pixels per image).
pub const MAX_IDX_PIXELS: usize = 1 << 24;
/// Largest sample of an `.npz` array `x` (bytes per sample).
pub const MAX_SAMPLE_BYTES: usize = 1 << 30;
/// Deepest folder nesting walked inside a class folder of the ImageFolder layout.
const MAX_DEPTH: usize = 16;

/// One sample of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Where it comes from: the file's path for images and `.npy` files,
    /// `FILE[i]` for sample `i` of an IDX file, `FILE:x[i]` for an `.npz` array.
    pub name: String,
    /// The model input, with a leading batch dim of 1 (`.npy` files: as stored).
    pub input: Tensor,
    /// Class index, when the dataset has labels.
    pub label: Option<usize>,
}

/// Several samples stacked along dim 0 (see [`stack`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The samples' names, in order.
    pub names: Vec<String>,
    /// The inputs concatenated along dim 0.
    pub input: Tensor,
    /// The samples' labels, in order.
    pub labels: Vec<Option<usize>>,
}

/// Where labels come from, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Images and `.npy` files: the ImageFolder layout when the folder holds
    /// sub-folders and no samples of its own; else the last number of the
    /// file names when every name has one; else none. IDX: the matching
    /// labels file if there is one. `.npz`: the `y` array if there is one.
    #[default]
    Auto,
    /// ImageFolder layout: one sub-folder per class (images and `.npy` files only).
    Folder,
    /// The last number of each file name (images and `.npy` files only); a
    /// name without a number is an error.
    FileName,
    /// No labels.
    None,
}

impl LabelMode {
    /// All modes with their CLI names.
    pub const ALL: [(&'static str, LabelMode); 4] = [
        ("auto", LabelMode::Auto),
        ("folder", LabelMode::Folder),
        ("filename", LabelMode::FileName),
        ("none", LabelMode::None),
    ];
    /// Looks a mode up by its CLI name.
    pub fn from_name(name: &str) -> Option<LabelMode> {
        LabelMode::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }
    /// The CLI name.
    pub fn name(self) -> &'static str {
        LabelMode::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Which part of a dataset shipped as train and test files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// IDX `t10k-*` files; `.npz` `x_test`/`y_test`.
    Test,
    /// IDX `train-*` files; `.npz` `x_train`/`y_train`.
    Train,
}

impl Split {
    /// Looks a split up by its CLI name (`test`, `train`).
    pub fn from_name(name: &str) -> Option<Split> {
        match name {
            "test" => Some(Split::Test),
            "train" => Some(Split::Train),
            _ => None,
        }
    }
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Train => "train",
        }
    }
    fn idx_prefix(self) -> &'static str {
        match self {
            Split::Test => "t10k",
            Split::Train => "train",
        }
    }
}

/// The description of a dataset: where it is and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// A folder (images, `.npy` files, or IDX files) or a file (`.npz`, an
    /// IDX images file, one image, one `.npy`).
    pub path: PathBuf,
    /// Preprocessing of images (ignored for other formats).
    pub preset: Preset,
    /// Where labels come from.
    pub labels: LabelMode,
    /// Class names in class-index order, for the ImageFolder layout: a
    /// sub-folder's class index is its position in this list (default: the
    /// sub-folder names sorted).
    pub class_names: Option<Vec<String>>,
    /// Test or train files of an IDX folder or a Keras-style `.npz`
    /// (default: `x`/`y` of an `.npz`, else the test files when there are any).
    pub split: Option<Split>,
    /// Only samples `range.start..range.end`, in dataset order. An `end` of
    /// `usize::MAX` means "to the end"; any other end past the data is an error.
    pub range: Option<Range<usize>>,
    /// At most this many samples (after `range`).
    pub limit: Option<usize>,
}

impl DataSpec {
    /// A spec for `path` with the defaults: the `efficientnet-lite` preset,
    /// [`LabelMode::Auto`], no class names, split, range or limit.
    pub fn new(path: impl Into<PathBuf>) -> DataSpec {
        DataSpec {
            path: path.into(),
            preset: Preset::EfficientNetLite,
            labels: LabelMode::Auto,
            class_names: None,
            split: None,
            range: None,
            limit: None,
        }
    }
}

/// The format of an opened dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG/JPEG images through a preset.
    Images,
    /// `.npy` files, one input each.
    Npy,
    /// IDX (MNIST) files.
    Idx,
    /// A `.npz` archive.
    Npz,
}

impl Format {
    /// Short name: `images`, `npy`, `idx`, `npz`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Images => "images",
            Format::Npy => "npy",
            Format::Idx => "idx",
            Format::Npz => "npz",
        }
    }
}

/// Where the labels of an opened dataset come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// The dataset has no labels.
    None,
    /// The last number of each file name.
    FileName,
    /// The ImageFolder layout; the class names in index order.
    Folder(Vec<String>),
    /// An IDX labels file.
    IdxFile(PathBuf),
    /// An array of the `.npz` archive (its name).
    NpzArray(String),
}

impl Labels {
    /// One line for a summary, e.g. `last number of the file names`.
    pub fn describe(&self) -> String {
        match self {
            Labels::None => "none".into(),
            Labels::FileName => "last number of the file names".into(),
            Labels::Folder(c) => format!("sub-folder names ({} classes)", c.len()),
            Labels::IdxFile(p) => p.display().to_string(),
            Labels::NpzArray(n) => format!("array '{n}'"),
        }
    }
}

#[derive(Debug, Clone)]
struct FileItem {
    path: PathBuf,
    label: Option<usize>,
}

#[derive(Debug, Clone)]
struct NpzEntry {
    name: String,
    data_start: u64,
    compressed_size: u64,
    deflated: bool,
    header: NpyHeader,
}

#[derive(Debug, Clone)]
enum Source {
    Files(Vec<FileItem>),
    Idx {
        images: PathBuf,
        labels: Option<PathBuf>,
        h: usize,
        w: usize,
    },
    Npz {
        path: PathBuf,
        x: NpzEntry,
        y: Option<NpzEntry>,
        /// Shape of one sample (`[1, ...]`) and its size in bytes.
        sample_shape: Vec<usize>,
        sample_bytes: usize,
    },
}

/// An opened dataset: a [`DataSpec`] resolved and checked, ready to be
/// iterated any number of times.
#[derive(Debug, Clone)]
pub struct Dataset {
    spec: DataSpec,
    format: Format,
    source: Source,
    labels: Labels,
    /// Samples in the whole data (before range and limit).
    total: usize,
    start: usize,
    len: usize,
    skipped: Vec<String>,
}

fn decode_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Decode, msg).with_file(path)
}

fn ext_of(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn is_image(p: &Path) -> bool {
    matches!(ext_of(p).as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn is_npy(p: &Path) -> bool {
    ext_of(p).as_deref() == Some("npy")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn is_hidden(p: &Path) -> bool {
    file_name(p).starts_with('.')
}

fn is_idx_images(name: &str) -> bool {
    name.contains("idx3-ubyte")
}

/// Sorted entries of a folder, hidden ones left out.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if !is_hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn rel_name(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

impl Dataset {
    /// Opens `spec`: detects the format, lists the files or reads the
    /// headers, locates the labels, and applies the range and limit. Reads
    /// no sample data.
    ///
    /// Errors (naming the file or folder): nothing at the path; a folder
    /// with no images, `.npy` or IDX files; a corrupt, truncated or
    /// oversized IDX or `.npz` header; labels asked for that are not there
    /// (a file name without a number, a file outside the class folders is
    /// only skipped); a label count that differs from the sample count; a
    /// range past the end or selecting nothing; a split where none applies.
    pub fn open(spec: DataSpec) -> Result<Dataset, Error> {
        let path = spec.path.clone();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let mut ds = if meta.is_dir() {
            let entries = list_dir(&path)?;
            let idx: Vec<&PathBuf> = entries
                .iter()
                .filter(|p| p.is_file() && is_idx_images(&file_name(p)))
                .collect();
            if !idx.is_empty() {
                let split = spec.split.unwrap_or_else(|| {
                    if idx.iter().any(|p| file_name(p).starts_with("t10k")) {
                        Split::Test
                    } else {
                        Split::Train
                    }
                });
                let chosen = idx
                    .iter()
                    .find(|p| file_name(p).starts_with(split.idx_prefix()))
                    .ok_or_else(|| {
                        decode_err(
                            &path,
                            format!(
                                "no {}-*-idx3-ubyte file for the {} split (IDX files here: {})",
                                split.idx_prefix(),
                                split.name(),
                                idx.iter().map(|p| file_name(p)).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?;
                Dataset::open_idx(&spec, chosen)?
            } else {
                if spec.split.is_some() {
                    return Err(split_not_applicable(&path));
                }
                Dataset::open_folder(&spec, &entries)?
            }
        } else {
            let name = file_name(&path);
            match ext_of(&path).as_deref() {
                Some("npz") => Dataset::open_npz(&spec)?,
                _ if is_idx_images(&name) => {
                    if let Some(s) = spec.split.filter(|s| !name.starts_with(s.idx_prefix())) {
                        return Err(decode_err(
                            &path,
                            format!(
                                "--split {} wants the {}-* files; this is not one",
                                s.name(),
                                s.idx_prefix()
                            ),
                        ));
                    }
                    Dataset::open_idx(&spec, &path)?
                }
                _ if is_image(&path) || is_npy(&path) => {
                    if spec.split.is_some() {
                        return Err(split_not_applicable(&path));
                    }
                    let format = if is_image(&path) {
                        Format::Images
                    } else {
                        Format::Npy
                    };
                    let (labels, label) = match spec.labels {
                        LabelMode::None => (Labels::None, None),
                        LabelMode::Folder => {
                            return Err(decode_err(
                                &path,
                                "--labels folder needs a folder with one sub-folder per class",
                            ))
                        }
                        LabelMode::FileName => match label_from_file_name(&path) {
                            Some(l) => (Labels::FileName, Some(l)),
                            None => return Err(no_number(&path)),
                        },
                        LabelMode::Auto => match label_from_file_name(&path) {
                            Some(l) => (Labels::FileName, Some(l)),
                            None => (Labels::None, None),
                        },
                    };
                    Dataset::new(
                        &spec,
                        format,
                        Source::Files(vec![FileItem {
                            path: path.clone(),
                            label,
                        }]),
                        labels,
                        1,
                        Vec::new(),
                    )
                }
                _ => {
                    return Err(decode_err(
                        &path,
                        "unrecognised data file (expected a folder, an .npz archive, an \
                         *-images-idx3-ubyte[.gz] file, an image or a .npy file)",
                    ))
                }
            }
        };
        ds.apply_range()?;
        Ok(ds)
    }

    fn new(
        spec: &DataSpec,
        format: Format,
        source: Source,
        labels: Labels,
        total: usize,
        skipped: Vec<String>,
    ) -> Dataset {
        Dataset {
            spec: spec.clone(),
            format,
            source,
            labels,
            total,
            start: 0,
            len: total,
            skipped,
        }
    }

    fn apply_range(&mut self) -> Result<(), Error> {
        let p = &self.spec.path;
        let (mut start, mut end) = (0, self.total);
        if let Some(r) = &self.spec.range {
            let e = if r.end == usize::MAX { self.total } else { r.end };
            let shown = if r.end == usize::MAX {
                format!("{}..", r.start)
            } else {
                format!("{}..{}", r.start, r.end)
            };
            if e > self.total || r.start > self.total {
                return Err(decode_err(
                    p,
                    format!(
                        "range {shown} is past the end: the data has {} samples",
                        self.total
                    ),
                ));
            }
            if r.start >= e {
                return Err(decode_err(p, format!("range {shown} selects no samples")));
            }
            (start, end) = (r.start, e);
        }
        if let Some(l) = self.spec.limit {
            if l == 0 {
                return Err(decode_err(p, "a limit of 0 selects no samples"));
            }
            end = end.min(start.saturating_add(l));
        }
        self.start = start;
        self.len = end - start;
        Ok(())
    }

    fn open_folder(spec: &DataSpec, entries: &[PathBuf]) -> Result<Dataset, Error> {
        let root = &spec.path;
        let mut skipped = Vec::new();
        let (mut top_img, mut top_npy, mut subdirs) = (Vec::new(), Vec::new(), Vec::new());
        for p in entries {
            if p.is_dir() {
                subdirs.push(p.clone());
            } else if is_image(p) {
                top_img.push(p.clone());
            } else if is_npy(p) {
                top_npy.push(p.clone());
            } else {
                skipped.push(rel_name(root, p));
            }
        }
        // The ImageFolder layout is walked when asked for, or when the folder
        // has sub-folders and no samples of its own (also without labels).
        let folder = match spec.labels {
            LabelMode::Folder => true,
            LabelMode::Auto | LabelMode::None => {
                top_img.is_empty() && top_npy.is_empty() && !subdirs.is_empty()
            }
            LabelMode::FileName => false,
        };
        let (format, items, labels) = if folder {
            if subdirs.is_empty() {
                return Err(decode_err(
                    root,
                    "--labels folder: no sub-folders here (ImageFolder layout: one sub-folder per class)",
                ));
            }
            let classes: Vec<String> = match &spec.class_names {
                Some(c) => c.clone(),
                None => subdirs.iter().map(|d| file_name(d)).collect(),
            };
            for p in top_img.iter().chain(&top_npy) {
                skipped.push(rel_name(root, p));
            }
            let (mut img, mut npy) = (Vec::new(), Vec::new());
            for d in &subdirs {
                let name = file_name(d);
                let class = classes.iter().position(|c| *c == name).ok_or_else(|| {
                    decode_err(d, format!("class folder '{name}' is not in the class-names list"))
                })?;
                walk_class(root, d, class, 0, &mut img, &mut npy, &mut skipped)?;
            }
            let (format, mut items) = pick(img, npy, root, &mut skipped);
            if items.is_empty() {
                return Err(decode_err(
                    root,
                    "no images (.png, .jpg, .jpeg) or .npy files in the class sub-folders \
                     (ImageFolder layout: one sub-folder per class)",
                ));
            }
            if spec.labels == LabelMode::None {
                items.iter_mut().for_each(|it| it.label = None);
                (format, items, Labels::None)
            } else {
                (format, items, Labels::Folder(classes))
            }
        } else {
            for d in &subdirs {
                skipped.push(format!("{}/", rel_name(root, d)));
            }
            let item = |p: PathBuf| FileItem {
                label: label_from_file_name(&p),
                path: p,
            };
            let img = top_img.into_iter().map(item).collect();
            let npy = top_npy.into_iter().map(item).collect();
            let (format, mut items) = pick(img, npy, root, &mut skipped);
            let labels = match spec.labels {
                LabelMode::FileName => {
                    if let Some(it) = items.iter().find(|it| it.label.is_none()) {
                        return Err(no_number(&it.path));
                    }
                    Labels::FileName
                }
                LabelMode::Auto if !items.is_empty() && items.iter().all(|it| it.label.is_some()) => {
                    Labels::FileName
                }
                _ => {
                    items.iter_mut().for_each(|it| it.label = None);
                    Labels::None
                }
            };
            (format, items, labels)
        };
        if items.is_empty() {
            return Err(decode_err(
                root,
                "no images (.png, .jpg, .jpeg), .npy or IDX files found",
            ));
        }
        let n = items.len();
        Ok(Dataset::new(
            spec,
            format,
            Source::Files(items),
            labels,
            n,
            skipped,
        ))
    }

    fn open_idx(spec: &DataSpec, images: &Path) -> Result<Dataset, Error> {
        let (mut r, len) = open_maybe_gz(images)?;
        let h = read_idx_header(&mut r, images, 3)?;
        let (n, rows, cols) = (h.dims[0], h.dims[1], h.dims[2]);
        let pixels = rows
            .checked_mul(cols)
            .filter(|&p| p <= MAX_IDX_PIXELS && p > 0)
            .ok_or_else(|| {
                decode_err(
                    images,
                    format!("IDX images of {rows}x{cols} are out of range (1 to {MAX_IDX_PIXELS} pixels)"),
                )
            })?;
        if n == 0 {
            return Err(decode_err(images, "the IDX file holds no images"));
        }
        if let Some(len) = len {
            check_raw_len(
                images,
                len,
                16,
                n as u64 * pixels as u64,
                &format!("{n} images of {rows}x{cols}"),
            )?;
        }
        let labels_path = match spec.labels {
            LabelMode::None => None,
            LabelMode::Folder | LabelMode::FileName => {
                return Err(decode_err(
                    images,
                    format!(
                        "--labels {} does not apply to IDX data (labels come from the matching \
                         *-labels-idx1-ubyte file; use auto or none)",
                        spec.labels.name()
                    ),
                ))
            }
            LabelMode::Auto => idx_labels_file(images),
        };
        if let Some(lp) = &labels_path {
            let (mut r, len) = open_maybe_gz(lp)?;
            let lh = read_idx_header(&mut r, lp, 1)?;
            if lh.dims[0] != n {
                return Err(decode_err(
                    lp,
                    format!("{} labels, but {} has {n} images", lh.dims[0], images.display()),
                ));
            }
            if let Some(len) = len {
                check_raw_len(lp, len, 8, n as u64, &format!("{n} labels"))?;
            }
        }
        let labels = labels_path
            .as_ref()
            .map_or(Labels::None, |p| Labels::IdxFile(p.clone()));
        let mut spec = spec.clone();
        spec.path = images.to_path_buf();
        Ok(Dataset::new(
            &spec,
            Format::Idx,
            Source::Idx {
                images: images.to_path_buf(),
                labels: labels_path,
                h: rows,
                w: cols,
            },
            labels,
            n,
            Vec::new(),
        ))
    }

    fn open_npz(spec: &DataSpec) -> Result<Dataset, Error> {
        let path = &spec.path;
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(f))
            .map_err(|e| decode_err(path, format!("not a readable .npz (zip) archive: {e}")))?;
        let arrays: Vec<String> = archive
            .file_names()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .collect();
        let has = |n: &str| arrays.iter().any(|a| a == n);
        let (xname, yname) = match spec.split {
            Some(s) => (format!("x_{}", s.name()), format!("y_{}", s.name())),
            None if has("x") => ("x".to_string(), "y".to_string()),
            None if has("x_test") => ("x_test".to_string(), "y_test".to_string()),
            None => ("x".to_string(), "y".to_string()),
        };
        if !has(&xname) {
            return Err(decode_err(
                path,
                format!(
                    "no array '{xname}' (inputs) in the archive; it has: {}",
                    arrays.join(", ")
                ),
            ));
        }
        let entry = |archive: &mut zip::ZipArchive<BufReader<File>>, name: &str| -> Result<NpzEntry, Error> {
            let i = archive
                .index_for_name(&format!("{name}.npy"))
                .or_else(|| archive.index_for_name(name))
                .ok_or_else(|| decode_err(path, format!("no array '{name}'")))?;
            let e = archive
                .by_index_raw(i)
                .map_err(|e| decode_err(path, format!("array '{name}': {e}")))?;
            if e.encrypted() {
                return Err(decode_err(path, format!("array '{name}' is encrypted")));
            }
            let deflated = match e.compression() {
                zip::CompressionMethod::Stored => false,
                zip::CompressionMethod::Deflated => true,
                m => {
                    return Err(decode_err(
                        path,
                        format!(
                            "array '{name}' is compressed with {m}; kiln reads stored and deflated entries"
                        ),
                    ))
                }
            };
            let (data_start, compressed_size, size) = (e.data_start(), e.compressed_size(), e.size());
            drop(e);
            let mut ent = NpzEntry {
                name: name.to_string(),
                data_start,
                compressed_size,
                deflated,
                header: NpyHeader {
                    dtype: DType::U8,
                    shape: vec![],
                    data_offset: 0,
                },
            };
            let mut r = open_entry(path, &ent)?;
            ent.header =
                read_npy_header(&mut r).map_err(|m| decode_err(path, format!("array '{name}': {m}")))?;
            let need = ent.header.data_offset as u64 + ent.header.data_bytes().unwrap_or(0) as u64;
            if size < need {
                return Err(decode_err(
                    path,
                    format!("array '{name}' is truncated: {size} bytes, its header needs {need}"),
                ));
            }
            Ok(ent)
        };
        let x = entry(&mut archive, &xname)?;
        let shape = &x.header.shape;
        if shape.is_empty() {
            return Err(decode_err(
                path,
                format!("array '{xname}' is a scalar; it needs a first dim of samples"),
            ));
        }
        let n = shape[0];
        if n == 0 {
            return Err(decode_err(path, format!("array '{xname}' holds no samples")));
        }
        let mut sample_shape = shape.clone();
        sample_shape[0] = 1;
        let sample_bytes = kiln_ir::numel(&sample_shape)
            .ok()
            .and_then(|e| e.checked_mul(x.header.dtype.size_of()))
            .filter(|&b| b > 0 && b <= MAX_SAMPLE_BYTES)
            .ok_or_else(|| {
                decode_err(
                    path,
                    format!("array '{xname}' of shape {shape:?}: samples must be 1 byte to 1 GiB"),
                )
            })?;
        let y = match spec.labels {
            LabelMode::None => None,
            LabelMode::Folder | LabelMode::FileName => {
                return Err(decode_err(
                    path,
                    format!(
                        "--labels {} does not apply to .npz data (labels come from the array '{yname}'; use auto or none)",
                        spec.labels.name()
                    ),
                ))
            }
            LabelMode::Auto if has(&yname) => {
                let y = entry(&mut archive, &yname)?;
                let yh = &y.header;
                if !matches!(yh.dtype, DType::I8 | DType::U8 | DType::I32 | DType::I64) || yh.shape.len() != 1 {
                    return Err(decode_err(
                        path,
                        format!(
                            "array '{yname}' is {} {:?}; labels must be a 1-D integer array",
                            yh.dtype, yh.shape
                        ),
                    ));
                }
                if yh.shape[0] != n {
                    return Err(decode_err(
                        path,
                        format!("array '{yname}' has {} labels, '{xname}' has {n} samples", yh.shape[0]),
                    ));
                }
                Some(y)
            }
            LabelMode::Auto => None,
        };
        let labels = y
            .as_ref()
            .map_or(Labels::None, |y| Labels::NpzArray(y.name.clone()));
        Ok(Dataset::new(
            spec,
            Format::Npz,
            Source::Npz {
                path: path.clone(),
                x,
                y,
                sample_shape,
                sample_bytes,
            },
            labels,
            n,
            Vec::new(),
        ))
    }

    /// The spec this dataset was opened from (for IDX folders, `path` is the
    /// images file chosen).
    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }
    /// The format detected.
    pub fn format(&self) -> Format {
        self.format
    }
    /// Where the labels come from.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
    /// True when every sample has a label.
    pub fn has_labels(&self) -> bool {
        self.labels != Labels::None
    }
    /// Number of samples a pass yields (range and limit applied).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when a pass yields no sample (never, for an opened dataset).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of samples in the whole data, before range and limit.
    pub fn total(&self) -> usize {
        self.total
    }
    /// Index of the first sample a pass yields (the range start).
    pub fn start(&self) -> usize {
        self.start
    }
    /// Files and folders of a folder dataset that are not samples (other
    /// file types; top-level files in the ImageFolder layout; sub-folders
    /// when labels come from file names), relative to the folder, in
    /// sorted order. Folders end in `/`.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
    /// The IDX images and labels files (`None` for other formats).
    pub fn idx_files(&self) -> Option<(&Path, Option<&Path>)> {
        match &self.source {
            Source::Idx { images, labels, .. } => Some((images, labels.as_deref())),
            _ => None,
        }
    }

    /// Starts a pass over the samples, in order (sorted file names; class
    /// folders in class order; array order), range and limit applied.
    ///
    /// Errors: an IDX or `.npz` file that can no longer be opened.
    pub fn samples(&self) -> Result<Samples<'_>, Error> {
        let state = match &self.source {
            Source::Files(_) => State::Files,
            Source::Idx { images, labels, h, w } => {
                let mut img = open_maybe_gz(images)?.0;
                skip(&mut img, 16 + self.start as u64 * (h * w) as u64, images)?;
                let lab = match labels {
                    Some(lp) => {
                        let mut r = open_maybe_gz(lp)?.0;
                        skip(&mut r, 8 + self.start as u64, lp)?;
                        Some(r)
                    }
                    None => None,
                };
                State::Idx {
                    images: img,
                    labels: lab,
                    buf: vec![0; h * w],
                }
            }
            Source::Npz {
                path,
                x,
                y,
                sample_bytes,
                ..
            } => {
                let mut xr = open_entry(path, x)?;
                skip(
                    &mut xr,
                    x.header.data_offset as u64 + self.start as u64 * *sample_bytes as u64,
                    path,
                )?;
                let yr = match y {
                    Some(y) => {
                        let mut r = open_entry(path, y)?;
                        let sz = y.header.dtype.size_of() as u64;
                        skip(&mut r, y.header.data_offset as u64 + self.start as u64 * sz, path)?;
                        Some((r, y.header.dtype))
                    }
                    None => None,
                };
                State::Npz {
                    x: xr,
                    y: yr,
                    buf: vec![0; *sample_bytes],
                }
            }
        };
        Ok(Samples {
            ds: self,
            state,
            next: self.start,
            end: self.start + self.len,
        })
    }

    /// True if [`Dataset::get`] reads samples in any order: datasets of
    /// files (images, `.npy`). IDX and `.npz` datasets are read as streams.
    pub fn random_access(&self) -> bool {
        matches!(self.source, Source::Files(_))
    }

    /// Sample `i` (0-based, within the range and limit) read on its own, for
    /// shuffled access (training); only the file of that sample is read.
    ///
    /// # Errors
    /// [`ErrorKind::Decode`] if `i` is out of range or the dataset is not
    /// [`Dataset::random_access`]; decoding errors of the file.
    pub fn get(&self, i: usize) -> Result<Sample, Error> {
        let Source::Files(items) = &self.source else {
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "{} datasets are read in order only (no random access)",
                    self.format.name()
                ),
            ));
        };
        if i >= self.len {
            return Err(Error::new(
                ErrorKind::Decode,
                format!("sample {i} of {} requested", self.len),
            ));
        }
        let it = &items[self.start + i];
        let input = match self.format {
            Format::Images => load_image(&it.path, self.spec.preset)?,
            _ => crate::npy::read_npy(&it.path)?,
        };
        Ok(Sample {
            name: it.path.display().to_string(),
            input,
            label: it.label,
        })
    }

    /// The label of sample `i` without reading the sample, for datasets of
    /// files whose labels come from folder or file names; `None` otherwise.
    pub fn label_of(&self, i: usize) -> Option<usize> {
        match &self.source {
            Source::Files(items) if i < self.len => items[self.start + i].label,
            _ => None,
        }
    }

    /// Starts a pass over the samples grouped in batches of `batch` (the last
    /// one smaller) with [`stack`]. A `batch` of 0 is taken as 1.
    pub fn batches(&self, batch: usize) -> Result<Batches<'_>, Error> {
        Ok(Batches {
            samples: self.samples()?,
            batch: batch.max(1),
        })
    }
}

fn split_not_applicable(path: &Path) -> Error {
    decode_err(
        path,
        "a split (test/train) applies to a folder of IDX files or an .npz archive with x_test/x_train",
    )
}

fn no_number(path: &Path) -> Error {
    decode_err(
        path,
        "no number in the file name to take the label from (--labels filename wants names like name_559.jpg)",
    )
}

/// Keeps the images if there are any (the .npy files are then skipped), else the .npy files.
fn pick(
    img: Vec<FileItem>,
    npy: Vec<FileItem>,
    root: &Path,
    skipped: &mut Vec<String>,
) -> (Format, Vec<FileItem>) {
    if !img.is_empty() {
        skipped.extend(npy.iter().map(|it| rel_name(root, &it.path)));
        skipped.sort();
        (Format::Images, img)
    } else {
        skipped.sort();
        (Format::Npy, npy)
    }
}

fn walk_class(
    root: &Path,
    dir: &Path,
    class: usize,
    depth: usize,
    img: &mut Vec<FileItem>,
    npy: &mut Vec<FileItem>,
    skipped: &mut Vec<String>,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(decode_err(
            dir,
            format!("folders nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    for p in list_dir(dir)? {
        if p.is_dir() {
            walk_class(root, &p, class, depth + 1, img, npy, skipped)?;
        } else if is_image(&p) {
            img.push(FileItem {
                path: p,
                label: Some(class),
            });
        } else if is_npy(&p) {
            npy.push(FileItem {
                path: p,
                label: Some(class),
            });
        } else {
            skipped.push(rel_name(root, &p));
        }
    }
    Ok(())
}

/// The labels file matching an IDX images file (`...-images-idx3-ubyte[.gz]`
/// -> `...-labels-idx1-ubyte[.gz]`, gzipped or not), if it exists.
fn idx_labels_file(images: &Path) -> Option<PathBuf> {
    let name = file_name(images);
    let base = name.strip_suffix(".gz").unwrap_or(&name);
    let lbase = base.replace("images", "labels").replace("idx3", "idx1");
    if lbase == base {
        return None;
    }
    let dir = images.parent().unwrap_or(Path::new(""));
    [format!("{lbase}.gz"), lbase.clone()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

type Stream = Box<dyn Read + Send>;

/// Opens `path`, transparently gunzipping it when it starts with the gzip
/// magic. Also returns the file length when the file is not gzipped.
fn open_maybe_gz(path: &Path) -> Result<(Stream, Option<u64>), Error> {
    use std::io::BufRead;
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = BufReader::new(f);
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(flate2::bufread::MultiGzDecoder::new(r)), None))
    } else {
        Ok((Box::new(r), Some(len)))
    }
}

/// Opens the data of an `.npz` entry as a stream (inflating it if deflated).
fn open_entry(path: &Path, e: &NpzEntry) -> Result<Stream, Error> {
    let mut f = File::open(path).map_err(|err| Error::io(path, err))?;
    f.seek(SeekFrom::Start(e.data_start))
        .map_err(|err| Error::io(path, err))?;
    let r = BufReader::new(f.take(e.compressed_size));
    Ok(if e.deflated {
        Box::new(flate2::bufread::DeflateDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// Reads exactly `buf.len()` bytes; a short read is a "truncated" error.
fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &Path, what: &str) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            decode_err(path, format!("truncated file: it ends inside {what}"))
        }
        _ => decode_err(path, format!("reading {what}: {e}")),
    })
}

fn skip(r: &mut dyn Read, n: u64, path: &Path) -> Result<(), Error> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| Error::io(path, e))?;
    if got < n {
        return Err(decode_err(
            path,
            "truncated file: it ends before the first sample",
        ));
    }
    Ok(())
}

/// A parsed IDX header: the dims (big-endian u32 each).
#[derive(Debug)]
struct IdxHeader {
    dims: Vec<usize>,
}

/// Reads an IDX header of unsigned bytes (type 0x08) with `ndims` dims.
fn read_idx_header(r: &mut dyn Read, path: &Path, ndims: u8) -> Result<IdxHeader, Error> {
    let mut m = [0u8; 4];
    read_full(r, &mut m, path, "the IDX header")?;
    if m[0] != 0 || m[1] != 0 {
        return Err(decode_err(
            path,
            format!(
                "not an IDX file (magic {:02x}{:02x}{:02x}{:02x})",
                m[0], m[1], m[2], m[3]
            ),
        ));
    }
    if m[2] != 0x08 {
        return Err(decode_err(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (kiln reads unsigned bytes, 0x08)",
                m[2]
            ),
        ));
    }
    if m[3] != ndims {
        let want = if ndims == 3 {
            "an images file has 3 (count, rows, columns)"
        } else {
            "a labels file has 1 (count)"
        };
        return Err(decode_err(path, format!("IDX file with {} dims; {want}", m[3])));
    }
    let mut dims = Vec::with_capacity(ndims as usize);
    for _ in 0..ndims {
        read_full(r, &mut m, path, "the IDX header")?;
        dims.push(u32::from_be_bytes(m) as usize);
    }
    Ok(IdxHeader { dims })
}

fn check_raw_len(path: &Path, len: u64, header: u64, data: u64, what: &str) -> Result<(), Error> {
    let need = header + data;
    if len < need {
        return Err(decode_err(
            path,
            format!("truncated IDX file: the header says {what} ({need} bytes), the file has {len} bytes"),
        ));
    }
    Ok(())
}

enum State {
    Files,
    Idx {
        images: Stream,
        labels: Option<Stream>,
        buf: Vec<u8>,
    },
    Npz {
        x: Stream,
        y: Option<(Stream, DType)>,
        buf: Vec<u8>,
    },
}

/// One pass over a [`Dataset`]: yields each sample in order, or the error
/// that stopped the pass (naming the file); ends after an error.
pub struct Samples<'a> {
    ds: &'a Dataset,
    state: State,
    next: usize,
    end: usize,
}

impl std::fmt::Debug for Samples<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Samples")
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Samples<'_> {
    fn read(&mut self, i: usize) -> Result<Sample, Error> {
        let ds = self.ds;
        match (&ds.source, &mut self.state) {
            (Source::Files(items), _) => {
                let it = &items[i];
                let input = match ds.format {
                    Format::Images => load_image(&it.path, ds.spec.preset)?,
                    _ => crate::npy::read_npy(&it.path)?,
                };
                Ok(Sample {
                    name: it.path.display().to_string(),
                    input,
                    label: it.label,
                })
            }
            (
                Source::Idx {
                    images,
                    labels: lp,
                    h,
                    w,
                },
                State::Idx {
                    images: ir,
                    labels,
                    buf,
                },
            ) => {
                read_full(ir, buf, images, &format!("image {i} of {}", ds.total))?;
                let v: Vec<f32> = buf.iter().map(|&b| b as f32 / 255.0).collect();
                let label = match (labels, lp) {
                    (Some(r), Some(lp)) => {
                        let mut b = [0u8];
                        read_full(r, &mut b, lp, &format!("label {i} of {}", ds.total))?;
                        Some(b[0] as usize)
                    }
                    _ => None,
                };
                Ok(Sample {
                    name: format!("{}[{i}]", images.display()),
                    input: Tensor::from_vec(vec![1, 1, *h, *w], v)?,
                    label,
                })
            }
            (
                Source::Npz {
                    path,
                    x,
                    sample_shape,
                    ..
                },
                State::Npz { x: xr, y, buf },
            ) => {
                let what = format!("sample {i} of array '{}'", x.name);
                read_full(xr, buf, path, &what)?;
                let input = Tensor::new(sample_shape.clone(), decode_le(x.header.dtype, buf))?;
                let label = match y {
                    Some((r, dt)) => {
                        let mut b = [0u8; 8];
                        let b = &mut b[..dt.size_of()];
                        read_full(r, b, path, &format!("label {i}"))?;
                        let v = match decode_le(*dt, b) {
                            TensorData::I8(v) => v[0] as i64,
                            TensorData::U8(v) => v[0] as i64,
                            TensorData::I32(v) => v[0] as i64,
                            TensorData::I64(v) => v[0],
                            _ => -1,
                        };
                        Some(usize::try_from(v).map_err(|_| {
                            decode_err(
                                path,
                                format!("label {i} is {v}; labels must be class indices >= 0"),
                            )
                        })?)
                    }
                    None => None,
                };
                Ok(Sample {
                    name: format!("{}:{}[{i}]", path.display(), x.name),
                    input,
                    label,
                })
            }
            _ => Err(Error::new(
                ErrorKind::Model(kiln_ir::ErrorKind::Internal),
                "dataset state does not match its source",
            )),
        }
    }
}

impl Iterator for Samples<'_> {
    type Item = Result<Sample, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        let r = self.read(i);
        self.next = if r.is_ok() { i + 1 } else { self.end };
        Some(r)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.end - self.next))
    }
}

/// One pass over a [`Dataset`] in batches; ends after an error.
#[derive(Debug)]
pub struct Batches<'a> {
    samples: Samples<'a>,
    batch: usize,
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut v = Vec::with_capacity(self.batch);
        for s in self.samples.by_ref() {
            match s {
                Ok(s) => v.push(s),
                Err(e) => return Some(Err(e)),
            }
            if v.len() == self.batch {
                break;
            }
        }
        if v.is_empty() {
            None
        } else {
            Some(stack(v))
        }
    }
}

/// Stacks samples along dim 0 into one batch. One sample is kept as is;
/// several must have the same dtype and shape with a leading dim of 1.
///
/// Errors (`Decode`, naming the sample): an empty list, a dtype or shape
/// that differs from the first sample's, a leading dim other than 1.
pub fn stack(samples: Vec<Sample>) -> Result<Batch, Error> {
    let Some(first) = samples.first() else {
        return Err(Error::new(ErrorKind::Decode, "no samples to batch"));
    };
    if samples.len() == 1 {
        let s = samples.into_iter().next().expect("one sample");
        return Ok(Batch {
            names: vec![s.name],
            input: s.input,
            labels: vec![s.label],
        });
    }
    let (dtype, shape) = (first.input.dtype(), first.input.shape().to_vec());
    for s in &samples {
        if s.input.dtype() != dtype || s.input.shape() != shape.as_slice() {
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "sample {} is {} {:?}, the batch started with {} {:?}: a batch needs equal shapes",
                    s.name,
                    s.input.dtype(),
                    s.input.shape(),
                    dtype,
                    shape
                ),
            ));
        }
        if shape.first() != Some(&1) {
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "sample {} has shape {:?}: batching needs a leading dim of 1",
                    s.name, shape
                ),
            ));
        }
    }
    let n = samples.len();
    let mut names = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut data = TensorData::zeros(dtype, 0);
    for s in samples {
        names.push(s.name);
        labels.push(s.label);
        let (_, d) = s.input.into_parts();
        append(&mut data, d);
    }
    let mut bshape = shape;
    bshape[0] = n;
    Ok(Batch {
        names,
        input: Tensor::new(bshape, data)?,
        labels,
    })
}

fn append(to: &mut TensorData, from: TensorData) {
    match (to, from) {
        (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
        (TensorData::F16(a), TensorData::F16(b)) => a.extend(b),
        (TensorData::I8(a), TensorData::I8(b)) => a.extend(b),
        (TensorData::U8(a), TensorData::U8(b)) => a.extend(b),
        (TensorData::I32(a), TensorData::I32(b)) => a.extend(b),
        (TensorData::I64(a), TensorData::I64(b)) => a.extend(b),
        (TensorData::Bool(a), TensorData::Bool(b)) => a.extend(b),
        // stack() checked every dtype first.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fresh scratch folder under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn idx_bytes(ty: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// 5 images of 2x3, pixel (i, p) = 10 * i + p; labels 9 - i.
    fn write_idx_pair(dir: &Path, prefix: &str, gzip: bool) {
        let px: Vec<u8> = (0..5u8).flat_map(|i| (0..6u8).map(move |p| 10 * i + p)).collect();
        let img = idx_bytes(8, &[5, 2, 3], &px);
        let lab = idx_bytes(8, &[5], &[9, 8, 7, 6, 5]);
        let (img, lab, ext) = if gzip {
            (gz(&img), gz(&lab), ".gz")
        } else {
            (img, lab, "")
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
    }

    fn all(ds: &Dataset) -> Vec<Sample> {
        ds.samples().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    }

    fn open(spec: DataSpec) -> Dataset {
        Dataset::open(spec).unwrap()
    }

    fn open_err(spec: DataSpec) -> String {
        let e = Dataset::open(spec).unwrap_err();
        assert!(e.file.is_some(), "error names no file: {e}");
        e.to_string()
    }

    #[test]
    fn idx_raw_and_gz_read_the_same_and_scale_to_unit() {
        for gzip in [false, true] {
            let d = scratch(&format!("idx{gzip}"));
            write_idx_pair(&d, "t10k", gzip);
            let ds = open(DataSpec::new(&d));
            assert_eq!((ds.format(), ds.len(), ds.total()), (Format::Idx, 5, 5));
            assert!(matches!(ds.labels(), Labels::IdxFile(p) if p.to_string_lossy().contains("labels-idx1")));
            let s = all(&ds);
            assert_eq!(s.len(), 5);
            assert_eq!(s[2].input.shape(), &[1, 1, 2, 3]);
            assert_eq!(s[2].label, Some(7));
            let v = s[2].input.as_slice::<f32>().unwrap();
            assert_eq!(v[1], 21.0 / 255.0);
            assert!(s[2].name.ends_with("[2]"), "{}", s[2].name);
            // A second pass gives the same samples.
            assert_eq!(all(&ds), s);
            // A range is a window of the same samples; a limit cuts it.
            let mut spec = DataSpec::new(&d);
            spec.range = Some(1..4);
            spec.limit = Some(2);
            let w = all(&open(spec));
            assert_eq!(w, s[1..3].to_vec());
            // Open-ended range.
            let mut spec = DataSpec::new(&d);
            spec.range = Some(3..usize::MAX);
            assert_eq!(all(&open(spec)), s[3..].to_vec());
        }
    }

    #[test]
    fn idx_folder_split_selects_files() {
        let d = scratch("split");
        write_idx_pair(&d, "train", true);
        // Only train files: the default falls back to them; test is an error naming the folder.
        assert_eq!(open(DataSpec::new(&d)).len(), 5);
        let mut spec = DataSpec::new(&d);
        spec.split = Some(Split::Test);
        assert!(open_err(spec).contains("t10k"));
        // With both, test is the default and train is selectable.
        let px = vec![0u8; 2 * 2 * 3];
        std::fs::write(d.join("t10k-images-idx3-ubyte"), idx_bytes(8, &[2, 2, 3], &px)).unwrap();
        let ds = open(DataSpec::new(&d));
        assert_eq!(ds.len(), 2);
        assert!(!ds.has_labels(), "no t10k labels file");
        let mut spec = DataSpec::new(&d);
        spec.split = Some(Split::Train);
        assert_eq!(open(spec).len(), 5);
        // The images file itself also opens, labels found beside it; a split
        // other than the file's is an error.
        let ds = open(DataSpec::new(d.join("train-images-idx3-ubyte.gz")));
        assert!(ds.has_labels());
        let mut spec = DataSpec::new(d.join("train-images-idx3-ubyte.gz"));
        spec.split = Some(Split::Test);
        assert!(open_err(spec).contains("t10k"));
        // A labels mode that does not apply is an error.
        let mut spec = DataSpec::new(&d);
        spec.labels = LabelMode::FileName;
        assert!(open_err(spec).contains("does not apply"));
        // Range past the end.
        let mut spec = DataSpec::new(&d);
        spec.range = Some(1..9);
        assert!(open_err(spec).contains("past the end"));
    }

    #[test]
    fn idx_corrupt_and_truncated_headers_are_errors() {
        let d = scratch("idxbad");
        let p = d.join("x-images-idx3-ubyte");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated"),
            (vec![0, 0, 8], "truncated"),
            (idx_bytes(8, &[5, 2], &[]), "2 dims"),
            (idx_bytes(8, &[5, 2, 3], &[0; 10])[..14].to_vec(), "truncated"),
            (idx_bytes(0x0d, &[5, 2, 3], &[]), "element type"),
            (b"GIF89a not idx at all".to_vec(), "not an IDX file"),
            // Forged sizes: 4 billion images of 65535x65535 -> no allocation, a clear error.
            (idx_bytes(8, &[u32::MAX, 65535, 65535], &[]), "out of range"),
            (idx_bytes(8, &[u32::MAX, 28, 28], &[0; 100]), "truncated IDX file"),
            (idx_bytes(8, &[3, 0, 28], &[]), "out of range"),
            (idx_bytes(8, &[0, 28, 28], &[]), "no images"),
        ];
        for (bytes, want) in &cases {
            for gzip in [false, true] {
                let b = if gzip { gz(bytes) } else { bytes.clone() };
                std::fs::write(&p, &b).unwrap();
                match Dataset::open(DataSpec::new(&p)) {
                    Err(e) => {
                        assert_eq!(e.file.as_deref(), Some(p.as_path()));
                        let m = e.to_string();
                        // A gzipped file's size is not known up front: its truncation shows when read.
                        if !(gzip && *want == "truncated IDX file") {
                            assert!(m.contains(want), "{m} (want {want})");
                        }
                    }
                    Ok(ds) => {
                        assert!(gzip, "raw {want}: opened");
                        let r: Result<Vec<_>, _> = ds.samples().unwrap().collect();
                        let e = r.unwrap_err();
                        assert!(e.to_string().contains("truncated"), "{e}");
                        assert_eq!(e.file.as_deref(), Some(p.as_path()));
                    }
                }
            }
        }
        // Labels file: count mismatch and truncation, naming the labels file.
        write_idx_pair(&d, "y", false);
        let lp = d.join("y-labels-idx1-ubyte");
        std::fs::write(&lp, idx_bytes(8, &[4], &[1, 2, 3, 4])).unwrap();
        let e = Dataset::open(DataSpec::new(d.join("y-images-idx3-ubyte"))).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(lp.as_path()));
        assert!(e.message.contains("4 labels"), "{e}");
        std::fs::write(&lp, idx_bytes(8, &[5], &[1, 2])).unwrap();
        let e = Dataset::open(DataSpec::new(d.join("y-images-idx3-ubyte"))).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
        // Truncated image data in a gzipped stream: the pass ends with an error naming the file.
        let px = vec![7u8; 2 * 6];
        let p = d.join("z-images-idx3-ubyte.gz");
        std::fs::write(&p, gz(&idx_bytes(8, &[5, 2, 3], &px))).unwrap();
        let ds = open(DataSpec::new(&p));
        let r: Vec<_> = ds.samples().unwrap().collect();
        assert_eq!(r.len(), 3, "two samples, then the error, then the end");
        let e = r[2].as_ref().unwrap_err();
        assert!(e.message.contains("image 2 of 5"), "{e}");
    }

    fn npz(name: &str) -> PathBuf {
        let d = scratch(&format!("npz-{name}"));
        let p = d.join(name);
        let bytes: &[u8] = match name {
            // Written by numpy 2.4 (np.savez, np.savez_compressed; zip64 local headers).
            "savez.npz" => include_bytes!("testdata/savez.npz"),
            "savez_compressed.npz" => include_bytes!("testdata/savez_compressed.npz"),
            "keras_style.npz" => include_bytes!("testdata/keras_style.npz"),
            _ => unreachable!(),
        };
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn npz_from_numpy_stored_and_deflated() {
        for name in ["savez.npz", "savez_compressed.npz"] {
            let p = npz(name);
            let ds = open(DataSpec::new(&p));
            assert_eq!((ds.format(), ds.len()), (Format::Npz, 3));
            assert_eq!(ds.labels(), &Labels::NpzArray("y".into()));
            let s = all(&ds);
            assert_eq!(s[1].input.shape(), &[1, 1, 2, 2]);
            assert_eq!(s[1].input.as_slice::<f32>().unwrap(), &[1.0, 1.25, 1.5, 1.75]);
            assert_eq!(
                s.iter().map(|s| s.label).collect::<Vec<_>>(),
                [Some(2), Some(0), Some(1)]
            );
            assert!(s[2].name.ends_with(":x[2]"), "{}", s[2].name);
            let mut spec = DataSpec::new(&p);
            spec.range = Some(2..3);
            assert_eq!(all(&open(spec)), s[2..].to_vec());
            let mut spec = DataSpec::new(&p);
            spec.labels = LabelMode::None;
            assert!(all(&open(spec)).iter().all(|s| s.label.is_none()));
        }
        let p = npz("keras_style.npz");
        let ds = open(DataSpec::new(&p));
        assert_eq!((ds.len(), ds.labels()), (1, &Labels::NpzArray("y_test".into())));
        let mut spec = DataSpec::new(&p);
        spec.split = Some(Split::Train);
        let s = all(&open(spec));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].input.dtype(), s[0].label), (DType::U8, Some(1)));
    }

    /// Named arrays of an .npz: (name, .npy bytes).
    type Arrays<'a> = Vec<(&'a str, Vec<u8>)>;

    /// Writes an .npz with the zip crate: `arrays` as (name, npy bytes), deflated or stored.
    fn write_npz(p: &Path, arrays: &[(&str, Vec<u8>)], deflate: bool) {
        let mut z = zip::ZipWriter::new(File::create(p).unwrap());
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(true);
        for (n, b) in arrays {
            z.start_file(format!("{n}.npy"), o).unwrap();
            z.write_all(b).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn npz_errors_name_the_file() {
        let d = scratch("npzbad");
        let p = d.join("a.npz");
        let npy = |t: &Tensor| crate::npy::to_npy_bytes(t);
        let x = Tensor::from_vec(vec![4, 3], vec![0f32; 12]).unwrap();
        let y3 = Tensor::from_vec(vec![3], vec![0i64; 3]).unwrap();
        let yf = Tensor::from_vec(vec![4], vec![0f32; 4]).unwrap();
        // Headers claiming 10^8 rows (1.2 GB) and 10^10 rows (past the 4 GiB cap) over 48 bytes of data.
        let forge = |rows: &str| {
            let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 3), }}\n");
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&[0; 48]);
            b
        };
        let cases: Vec<(Arrays, &str)> = vec![
            (vec![("inputs", npy(&x))], "no array 'x'"),
            (vec![("x", npy(&x)), ("y", npy(&y3))], "3 labels"),
            (vec![("x", npy(&x)), ("y", npy(&yf))], "1-D integer"),
            (vec![("x", npy(&x)[..100].to_vec())], "truncated"),
            (
                vec![("x", b"\x93NUMPY\x01\x00\xff\xff{'descr'".to_vec())],
                "truncated",
            ),
            (vec![("x", forge("100000000"))], "truncated"),
            (vec![("x", forge("10000000000"))], "too large"),
            (vec![("x", npy(&Tensor::scalar(1f32)))], "scalar"),
        ];
        for (arrays, want) in cases {
            for deflate in [false, true] {
                write_npz(&p, &arrays, deflate);
                let m = open_err(DataSpec::new(&p));
                assert!(m.contains(want), "{m} (want {want})");
                assert!(m.contains("a.npz"), "{m}");
            }
        }
        std::fs::write(&p, b"PK\x03\x04 not really a zip").unwrap();
        assert!(open_err(DataSpec::new(&p)).contains("zip"));
        // A well-formed one written by the zip crate reads back.
        let y = Tensor::from_vec(vec![4], vec![3i32, 2, 1, 0]).unwrap();
        write_npz(&p, &[("x", npy(&x)), ("y", npy(&y))], true);
        let s = all(&open(DataSpec::new(&p)));
        assert_eq!(s.len(), 4);
        assert_eq!((s[3].input.shape(), s[3].label), (&[1usize, 3][..], Some(0)));
    }

    fn png(p: &Path, w: u32, h: u32) {
        image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]))
            .save(p)
            .unwrap();
    }

    #[test]
    fn image_folder_layout_and_file_name_labels() {
        let d = scratch("imgfolder");
        for (c, files) in [
            ("cat", &["b.png", "a.jpg.png"][..]),
            ("ant", &["z.png"][..]),
            ("dog", &[][..]),
        ] {
            std::fs::create_dir_all(d.join(c)).unwrap();
            for f in files {
                png(&d.join(c).join(f), 8, 6);
            }
        }
        std::fs::write(d.join("cat/notes.txt"), "x").unwrap();
        std::fs::write(d.join(".DS_Store"), "x").unwrap();
        let mut spec = DataSpec::new(&d);
        spec.preset = Preset::Raw;
        let ds = open(spec.clone());
        assert_eq!(ds.format(), Format::Images);
        assert_eq!(
            ds.labels(),
            &Labels::Folder(vec!["ant".into(), "cat".into(), "dog".into()])
        );
        assert_eq!(ds.skipped(), ["cat/notes.txt"]);
        let s = all(&ds);
        let got: Vec<(String, Option<usize>)> = s
            .iter()
            .map(|s| (rel_name(&d, Path::new(&s.name)), s.label))
            .collect();
        assert_eq!(
            got,
            [
                ("ant/z.png".to_string(), Some(0)),
                ("cat/a.jpg.png".to_string(), Some(1)),
                ("cat/b.png".to_string(), Some(1))
            ]
        );
        assert_eq!(s[0].input.shape(), &[1, 3, 6, 8]);
        // A class-names list gives the indices; a folder outside it is an error naming it.
        spec.class_names = Some(vec!["dog".into(), "cat".into(), "ant".into(), "eel".into()]);
        let s = all(&open(spec.clone()));
        assert_eq!(
            s.iter().map(|s| s.label).collect::<Vec<_>>(),
            [Some(2), Some(1), Some(1)]
        );
        spec.class_names = Some(vec!["cat".into(), "dog".into()]);
        assert!(open_err(spec.clone()).contains("'ant'"));
        // Without labels, the class folders are still walked.
        let mut none = spec.clone();
        none.labels = LabelMode::None;
        none.class_names = None;
        let s = all(&open(none));
        assert_eq!((s.len(), s[0].label), (3, None));
        // Batches of 2: [2, 3, 6, 8] then the last one, smaller.
        spec.class_names = None;
        let ds = open(spec.clone());
        let b: Vec<Batch> = ds.batches(2).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].input.shape(), &[2, 3, 6, 8]);
        assert_eq!(b[0].labels, [Some(0), Some(1)]);
        assert_eq!(b[1].input.shape(), &[1, 3, 6, 8]);
        // Images of different sizes cannot share a batch.
        png(&d.join("ant/y.png"), 9, 6);
        let e = open(spec.clone())
            .batches(3)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.message.contains("equal shapes"), "{e}");

        // File-name labels: auto picks them when every name has a number.
        let f = scratch("fnames");
        png(&f.join("img_00_559.png"), 4, 4);
        png(&f.join("img_01_7.png"), 4, 4);
        std::fs::write(f.join("README"), "x").unwrap();
        std::fs::create_dir_all(f.join("sub")).unwrap();
        let mut spec = DataSpec::new(&f);
        spec.preset = Preset::Raw;
        let ds = open(spec.clone());
        assert_eq!(ds.labels(), &Labels::FileName);
        assert_eq!(ds.skipped(), ["README", "sub/"]);
        assert_eq!(
            all(&ds).iter().map(|s| s.label).collect::<Vec<_>>(),
            [Some(559), Some(7)]
        );
        // One name without a number: auto gives no labels, filename is an error naming it.
        png(&f.join("photo.png"), 4, 4);
        assert!(!open(spec.clone()).has_labels());
        spec.labels = LabelMode::FileName;
        let e = Dataset::open(spec.clone()).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(f.join("photo.png").as_path()));
        spec.labels = LabelMode::Folder;
        assert!(open_err(spec).contains("sub-folder"));
        // A folder with nothing usable.
        let e = scratch("empty");
        std::fs::write(e.join("a.txt"), "x").unwrap();
        assert!(open_err(DataSpec::new(&e)).contains("no images"));
    }

    #[test]
    fn npy_folder_one_input_per_file() {
        let d = scratch("npyfolder");
        for (i, l) in [(0, 243), (1, 559)] {
            let t = Tensor::from_vec(vec![1, 2], vec![i as f32, 1.0]).unwrap();
            crate::npy::write_npy(&d.join(format!("s_{i:02}_{l}.input.npy")), &t).unwrap();
        }
        let ds = open(DataSpec::new(&d));
        assert_eq!((ds.format(), ds.labels()), (Format::Npy, &Labels::FileName));
        let s = all(&ds);
        assert_eq!(s[1].label, Some(559));
        assert_eq!(s[1].input.as_slice::<f32>().unwrap(), &[1.0, 1.0]);
        let b: Vec<Batch> = ds.batches(8).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].input.as_slice::<f32>().unwrap(), &[0.0, 1.0, 1.0, 1.0]);
        // A single file is a one-sample dataset.
        let one = open(DataSpec::new(d.join("s_01_559.input.npy")));
        assert_eq!((one.len(), all(&one)[0].label), (1, Some(559)));
        // A split does not apply here.
        let mut spec = DataSpec::new(&d);
        spec.split = Some(Split::Train);
        assert!(open_err(spec).contains("split"));
    }

    /// Prefixes and single-byte corruptions of small IDX (raw and gzipped)
    /// and .npz (stored and deflated) files: opening and reading
    /// give samples or errors naming the file, never a panic.
    #[test]
    fn truncations_and_corruptions_never_panic() {
        let d = scratch("mangle");
        let px: Vec<u8> = (0..2 * 6).map(|i| i as u8).collect();
        let raw = idx_bytes(8, &[2, 2, 3], &px);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("a-images-idx3-ubyte", raw.clone()),
            ("b-images-idx3-ubyte.gz", gz(&raw)),
            ("c.npz", include_bytes!("testdata/savez.npz").to_vec()),
            ("d.npz", include_bytes!("testdata/savez_compressed.npz").to_vec()),
        ];
        let mut outcomes = [0usize; 2];
        for (name, bytes) in &files {
            let p = d.join(name);
            // Every byte of the IDX files; every third of the (slower to open) archives.
            let step = if name.ends_with(".npz") { 3 } else { 1 };
            let mut variants: Vec<Vec<u8>> = (0..bytes.len())
                .step_by(step)
                .map(|n| bytes[..n].to_vec())
                .collect();
            for i in (0..bytes.len()).step_by(step) {
                let mut b = bytes.clone();
                b[i] ^= 0xff;
                variants.push(b);
            }
            for b in variants {
                std::fs::write(&p, &b).unwrap();
                let r = Dataset::open(DataSpec::new(&p)).and_then(|ds| {
                    ds.samples()?.collect::<Result<Vec<_>, _>>()?;
                    Ok(())
                });
                match r {
                    Ok(()) => outcomes[0] += 1,
                    Err(e) => {
                        assert_eq!(e.file.as_deref(), Some(p.as_path()), "{e}");
                        outcomes[1] += 1;
                    }
                }
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn missing_path_is_an_io_error_naming_it() {
        let p = Path::new("/nonexistent/kiln/data");
        let e = Dataset::open(DataSpec::new(p)).unwrap_err();
        assert_eq!((e.kind, e.file.as_deref()), (ErrorKind::Io, Some(p)));
    }
}
