//! kiln::data on the real Fashion-MNIST IDX files (`.fixtures/fashion-mnist/`,
//! gzipped, as the Debian package `dataset-fashion-mnist` ships them).
//! `scripts/fixtures` fetches that folder.

mod common;
use common::*;
use kiln::data::{DataSpec, Dataset, Format, Labels, Split};

#[test]
fn fashion_mnist_test_and_validation_splits() {
    let dir = fixtures().join("fashion-mnist");
    let ds = Dataset::open(DataSpec::new(&dir)).unwrap();
    assert_eq!((ds.format(), ds.len()), (Format::Idx, 10_000));
    assert!(ds.spec().path.ends_with("t10k-images-idx3-ubyte.gz"));
    assert!(matches!(ds.labels(), Labels::IdxFile(p) if p.ends_with("t10k-labels-idx1-ubyte.gz")));
    // The test set holds exactly 1000 images of each of the 10 classes, pixels in [0, 1].
    let mut per_class = [0usize; 10];
    for s in ds.samples().unwrap() {
        let s = s.unwrap();
        assert_eq!(s.input.shape(), &[1, 1, 28, 28]);
        assert!(s
            .input
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .all(|v| (0.0..=1.0).contains(v)));
        per_class[s.label.unwrap()] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
    // The usual validation split: the last 5000 training images, batched.
    let mut spec = DataSpec::new(&dir);
    spec.split = Some(Split::Train);
    spec.range = Some(55_000..60_000);
    let ds = Dataset::open(spec).unwrap();
    assert_eq!((ds.total(), ds.len()), (60_000, 5_000));
    let mut n = 0;
    for b in ds.batches(256).unwrap() {
        let b = b.unwrap();
        assert_eq!(&b.input.shape()[1..], &[1, 28, 28]);
        n += b.names.len();
    }
    assert_eq!(n, 5_000);
}
