use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use std::time::Instant;

#[derive(Module, Debug)]
struct ConvBn { conv: Conv2d, bn: BatchNorm, act: bool }
impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, s: usize, g: usize, act: bool, d: &Device) -> Self {
        let conv = Conv2dConfig::new([cin, cout], [k, k]).with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2)).with_groups(g).with_bias(false).init(d);
        ConvBn { conv, bn: BatchNormConfig::new(cout).init(d), act }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv.forward(x); let y = if std::env::var("NOBN").is_ok() { y } else if std::env::var("MYBN").is_ok() {
            let [n, c, h, w] = y.dims();
            let mean: Tensor<4> = y.clone().reshape([n, c, h * w]).mean_dim(2).mean_dim(0).reshape([1, c, 1, 1]);
            let xc = y - mean;
            let var: Tensor<4> = (xc.clone() * xc.clone()).reshape([n, c, h * w]).mean_dim(2).mean_dim(0).reshape([1, c, 1, 1]);
            let inv = (var + 1e-5).sqrt().recip();
            let g = self.bn.gamma.val().reshape([1, c, 1, 1]);
            let b = self.bn.beta.val().reshape([1, c, 1, 1]);
            xc * (inv * g) + b
        } else { self.bn.forward(y) };
        if self.act { match std::env::var("ACT").as_deref() { Ok("relu") => burn::tensor::activation::relu(y), Ok("relu2") => burn::tensor::activation::relu(y.clone()) - burn::tensor::activation::relu(y - 6.0), _ => y.clamp(0.0, 6.0) } } else { y }
    }
}
#[derive(Module, Debug)]
struct Block { e: ConvBn, dw: ConvBn, p: ConvBn, res: bool }
impl Block {
    fn new(cin: usize, cout: usize, s: usize, t: usize, d: &Device) -> Self {
        let h = cin * t;
        Block { e: ConvBn::new(cin, h, 1, 1, 1, true, d), dw: ConvBn::new(h, h, 3, s, h, true, d), p: ConvBn::new(h, cout, 1, 1, 1, false, d), res: s == 1 && cin == cout }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.p.forward(self.dw.forward(self.e.forward(x.clone())));
        if self.res { x + y } else { y }
    }
}
#[derive(Module, Debug)]
struct Net { stem: ConvBn, blocks: Vec<Block>, head: ConvBn, fc: Linear }
impl Net {
    fn new(d: &Device) -> Self {
        let mut c = 16; let mut blocks = vec![];
        for (t, co, s) in [(4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 40, 1), (4, 64, 1), (4, 64, 1), (4, 96, 1)] {
            blocks.push(Block::new(c, co, s, t, d)); c = co;
        }
        Net { stem: ConvBn::new(1, 16, 3, 1, 1, true, d), blocks, head: ConvBn::new(c, 256, 1, 1, 1, true, d), fc: LinearConfig::new(256, 10).init(d) }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x);
        for b in &self.blocks { x = b.forward(x); }
        let x = self.head.forward(x);
        let x: Tensor<2> = x.mean_dim(3).mean_dim(2).flatten(1, 3);
        self.fc.forward(x)
    }
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or("flex".into());
    let steps: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let base = if which == "ndarray" { Device::ndarray() } else { Device::flex() };
    let d = base.autodiff();
    let bs = 128;
    // block benchmark: one depthwise-separable block 64->64 at 7x7? use 24ch 14x14, t=4
    let blk = Block::new(24, 24, 1, 4, &d);
    let mut opt = AdamWConfig::new().init();
    let x = Tensor::<4>::random([bs, 24, 14, 14], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
    let mut blk = blk;
    for i in 0..steps + 2 {
        if i == 2 { }
        let t = Instant::now();
        let y = blk.forward(x.clone());
        let loss = (y.clone() * y).mean();
        let g = GradientsParams::from_grads(loss.backward(), &blk);
        blk = opt.step(1e-3, blk, g);
        if i >= 2 { eprintln!("block step {:.1} ms -> {:.0} img/s", t.elapsed().as_secs_f64() * 1e3, bs as f64 / t.elapsed().as_secs_f64()); }
    }
    let mut net = Net::new(&d);
    let mut opt = AdamWConfig::new().init();
    let x = Tensor::<4>::random([bs, 1, 28, 28], burn::tensor::Distribution::Uniform(0.0, 1.0), &d);
    let y = Tensor::<1, Int>::from_ints([3i32; 128], &d);
    let ce = CrossEntropyLossConfig::new().init(&d);
    let mut times = vec![];
    for i in 0..steps + 2 {
        let t = Instant::now();
        let logits = net.forward(x.clone());
        let loss = ce.forward(logits, y.clone());
        let g = GradientsParams::from_grads(loss.backward(), &net);
        net = opt.step(1e-3, net, g);
        let e = t.elapsed().as_secs_f64();
        if i >= 2 { times.push(e); eprintln!("net step {:.1} ms", e * 1e3); }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = times[times.len() / 2];
    println!("{which}: net median step {:.1} ms, {:.0} img/s, epoch(55000) {:.0} s", med * 1e3, bs as f64 / med, 55000.0 / (bs as f64 / med));
}
