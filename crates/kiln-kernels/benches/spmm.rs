//! Dense vs block-sparse pointwise GEMM on the real 1x1 convolution shapes
//! of the Fashion-MNIST net (`models/fmnist_mnv2.onnx`) at batch 32, with 80%
//! of the weights' 1x8 blocks zero, one thread:
//!
//! ```sh
//! cargo bench -p kiln-kernels --bench spmm -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Per layer (`spmm/<layer>`): `dense` (the packed GEMM of the CPU's level,
//! e.g. `gemm_f32_avx512_12x32`), `sparse` (the level's sparse kernel, e.g.
//! `spmm_f32_avx512_8x16`) and, on AVX-512 CPUs, `sparse8` (the 8-column
//! AVX2 kernel `spmm_f32_avx2_12x8`, the runtime's other candidate there).
//! `spmm/all15` runs the 15 layers back to back: dense, sparse, and `best`,
//! each layer on the faster of its sparse kernels (what the runtime's timed
//! choice does). The weights are random with exactly 80% of the blocks
//! zeroed at random (the pruned net's own blocks pair up about as often:
//! 27-36% of the 16-column group rows kept, 36% here). `KILN_ISA` caps the
//! level.
use criterion::{criterion_group, criterion_main, Criterion};
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::spmm::{spmm_f32, SparseB};
use kiln_kernels::{active_isa, Activation, Isa};
use std::hint::black_box;
use std::time::{Duration, Instant};

const BATCH: usize = 32;
const SPARSITY: f64 = 0.8;

/// The 15 pointwise convolutions: name, H*W, input and output channels,
/// fused activation (ReLU6 after the expansions and the head, none after the
/// projections).
const LAYERS: [(&str, usize, usize, usize, bool); 15] = [
    ("f1_expand_28x28_16-64", 784, 16, 64, true),
    ("f1_project_14x14_64-24", 196, 64, 24, false),
    ("f2_expand_14x14_24-96", 196, 24, 96, true),
    ("f2_project_14x14_96-24", 196, 96, 24, false),
    ("f3_expand_14x14_24-96", 196, 24, 96, true),
    ("f3_project_7x7_96-40", 49, 96, 40, false),
    ("f4_expand_7x7_40-160", 49, 40, 160, true),
    ("f4_project_7x7_160-40", 49, 160, 40, false),
    ("f5_expand_7x7_40-160", 49, 40, 160, true),
    ("f5_project_7x7_160-64", 49, 160, 64, false),
    ("f6_expand_7x7_64-256", 49, 64, 256, true),
    ("f6_project_7x7_256-64", 49, 256, 64, false),
    ("f7_expand_7x7_64-256", 49, 64, 256, true),
    ("f7_project_7x7_256-96", 49, 256, 96, false),
    ("f8_head_7x7_96-256", 49, 96, 256, true),
];

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// One layer's operands and packings.
struct Layer {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    act: Activation,
    a: Vec<f32>,
    dense: PackedB,
    sparse: SparseB,
    /// The 8-column AVX2 format, on AVX-512 CPUs.
    sparse8: Option<SparseB>,
}

impl Layer {
    fn new(isa: Isa, (name, hw, k, n, relu6): (&'static str, usize, usize, usize, bool), seed: u64) -> Layer {
        let mut rng = Rng(seed);
        let m = BATCH * hw;
        let a: Vec<f32> = (0..m * k).map(|_| rng.unit().max(0.0) * 3.0).collect();
        let mut b: Vec<f32> = (0..k * n).map(|_| rng.unit() * 0.5).collect();
        let per = n.div_ceil(8);
        let mut blocks: Vec<usize> = (0..k * per).collect();
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        for &bl in &blocks[..(blocks.len() as f64 * SPARSITY).round() as usize] {
            let (kk, j) = (bl / per, bl % per);
            for c in j * 8..((j + 1) * 8).min(n) {
                b[kk * n + c] = 0.0;
            }
        }
        let bias: Vec<f32> = (0..n).map(|_| rng.unit() * 0.1).collect();
        let act = if relu6 {
            Activation::Clamp { min: 0.0, max: 6.0 }
        } else {
            Activation::None
        };
        let sparse8 = (isa.float_level() == Isa::Avx512)
            .then(|| SparseB::from_row_major(Isa::Avx2, k, n, &b, Some(&bias)));
        Layer {
            name,
            m,
            k,
            n,
            act,
            a,
            dense: PackedB::from_row_major(isa, k, n, &b, Some(&bias)),
            sparse: SparseB::from_row_major(isa, k, n, &b, Some(&bias)),
            sparse8,
        }
    }

    fn dense(&self, c: &mut [f32]) {
        gemm_f32(self.m, &self.a, self.k, &self.dense, None, c, self.n, self.act);
    }

    fn sparse(&self, sp: &SparseB, c: &mut [f32]) {
        spmm_f32(self.m, &self.a, self.k, sp, None, c, self.n, self.act);
    }

    /// The faster of the sparse formats on this layer (the runtime's choice,
    /// made here the same way: median of 5 single runs after a warm-up).
    fn best_sparse(&self, c: &mut [f32]) -> &SparseB {
        let Some(s8) = &self.sparse8 else {
            return &self.sparse;
        };
        let mut time = |sp: &SparseB| {
            self.sparse(sp, c);
            let mut t: Vec<Duration> = (0..5)
                .map(|_| {
                    let t0 = Instant::now();
                    self.sparse(sp, c);
                    t0.elapsed()
                })
                .collect();
            t.sort();
            t[2]
        };
        if time(s8) < time(&self.sparse) {
            s8
        } else {
            &self.sparse
        }
    }
}

fn bench(cr: &mut Criterion) {
    let isa = active_isa();
    let layers: Vec<Layer> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, &l)| Layer::new(isa, l, 0x9E37_79B9 + i as u64))
        .collect();
    let mut c = vec![0f32; layers.iter().map(|l| l.m * l.n).max().unwrap_or(0)];
    // The kernels' results agree (the sparse ones skip only zero terms).
    for l in &layers {
        let len = l.m * l.n;
        let mut want = vec![0f32; len];
        l.dense(&mut want);
        l.sparse(&l.sparse, &mut c[..len]);
        assert!(c[..len] == want[..], "{}: sparse != dense", l.name);
    }
    eprintln!(
        "spmm bench: isa {isa}, dense gemm_f32_{}_{}x{}, sparse {}, stored group rows per layer: {}",
        isa.float_level(),
        kiln_kernels::gemm::tile_rows(isa),
        kiln_kernels::gemm::panel_width(isa),
        kiln_kernels::spmm::spmm_name(isa),
        layers
            .iter()
            .map(|l| format!("{:.2}", l.sparse.density()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut g = cr.benchmark_group("spmm");
    for l in &layers {
        let len = l.m * l.n;
        g.bench_function(format!("{}/dense", l.name), |b| {
            b.iter(|| l.dense(black_box(&mut c[..len])))
        });
        g.bench_function(format!("{}/sparse", l.name), |b| {
            b.iter(|| l.sparse(&l.sparse, black_box(&mut c[..len])))
        });
        if let Some(s8) = &l.sparse8 {
            g.bench_function(format!("{}/sparse8", l.name), |b| {
                b.iter(|| l.sparse(s8, black_box(&mut c[..len])))
            });
        }
    }
    g.bench_function("all15/dense", |b| {
        b.iter(|| {
            for l in &layers {
                l.dense(black_box(&mut c[..l.m * l.n]));
            }
        })
    });
    g.bench_function("all15/sparse", |b| {
        b.iter(|| {
            for l in &layers {
                l.sparse(&l.sparse, black_box(&mut c[..l.m * l.n]));
            }
        })
    });
    if layers.iter().any(|l| l.sparse8.is_some()) {
        let best: Vec<&SparseB> = layers
            .iter()
            .map(|l| l.best_sparse(&mut c[..l.m * l.n]))
            .collect();
        g.bench_function("all15/best", |b| {
            b.iter(|| {
                for (l, sp) in layers.iter().zip(&best) {
                    l.sparse(sp, black_box(&mut c[..l.m * l.n]));
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
