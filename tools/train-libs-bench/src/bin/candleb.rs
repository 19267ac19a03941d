use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, D};
use candle_nn::{batch_norm, conv2d_no_bias, linear, AdamW, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use std::time::Instant;

static mut SHIFT_DW: bool = false;

struct ConvBn { conv: Option<Conv2d>, dw: Option<(Tensor, usize)>, bn: BatchNorm, act: bool }
impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, s: usize, g: usize, act: bool, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig { padding: k / 2, stride: s, groups: g, ..Default::default() };
        let shift = unsafe { SHIFT_DW } && g > 1;
        let (conv, dw) = if shift {
            let w = vb.pp("conv").get_with_hints((cout, 1, k, k), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
            (None, Some((w, s)))
        } else { (Some(conv2d_no_bias(cin, cout, k, cfg, vb.pp("conv"))?), None) };
        Ok(ConvBn { conv, dw, bn: batch_norm(cout, BatchNormConfig::default(), vb.pp("bn"))?, act })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if let Some(c) = &self.conv { c.forward(x)? } else {
            // depthwise 3x3 as 9 shifted multiply-adds (pure tensor ops, autodiff-able)
            let (w, s) = self.dw.as_ref().unwrap();
            let (_n, c, h, wd) = x.dims4()?;
            let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
            let (oh, ow) = ((h - 1) / s + 1, (wd - 1) / s + 1);
            let mut acc: Option<Tensor> = None;
            for ky in 0..3 { for kx in 0..3 {
                let mut p = xp.narrow(2, ky, (oh - 1) * s + 1)?.narrow(3, kx, (ow - 1) * s + 1)?;
                if *s == 2 { // subsample
                    let (n, c2, hh, ww) = p.dims4()?;
                    p = p.contiguous()?.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?.reshape((n, c2, (hh + 1) / 2, 2, (ww + 1) / 2, 2))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((n, c2, oh, ow))?;
                }
                let wk = w.narrow(2, ky, 1)?.narrow(3, kx, 1)?.reshape((1, c, 1, 1))?;
                let t = p.broadcast_mul(&wk)?;
                acc = Some(match acc { None => t, Some(a) => (a + t)? });
            }}
            acc.unwrap()
        };
        let y = self.bn.forward_t(&y, true)?;
        if self.act { y.clamp(0f32, 6f32) } else { Ok(y) }
    }
}
struct Block { e: ConvBn, dw: ConvBn, p: ConvBn, res: bool }
impl Block {
    fn new(cin: usize, cout: usize, s: usize, t: usize, vb: VarBuilder) -> Result<Self> {
        let h = cin * t;
        Ok(Block { e: ConvBn::new(cin, h, 1, 1, 1, true, vb.pp("e"))?, dw: ConvBn::new(h, h, 3, s, h, true, vb.pp("dw"))?, p: ConvBn::new(h, cout, 1, 1, 1, false, vb.pp("p"))?, res: s == 1 && cin == cout })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.p.forward(&self.dw.forward(&self.e.forward(x)?)?)?;
        if self.res { x + y } else { Ok(y) }
    }
}
struct Net { stem: ConvBn, blocks: Vec<Block>, head: ConvBn, fc: Linear }
impl Net {
    fn new(vb: VarBuilder) -> Result<Self> {
        let mut c = 16; let mut blocks = vec![];
        for (i, (t, co, s)) in [(4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 40, 1), (4, 64, 1), (4, 64, 1), (4, 96, 1)].into_iter().enumerate() {
            blocks.push(Block::new(c, co, s, t, vb.pp(format!("b{i}")))?); c = co;
        }
        Ok(Net { stem: ConvBn::new(1, 16, 3, 1, 1, true, vb.pp("stem"))?, blocks, head: ConvBn::new(c, 256, 1, 1, 1, true, vb.pp("head"))?, fc: linear(256, 10, vb.pp("fc"))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks { x = b.forward(&x)?; }
        let x = self.head.forward(&x)?;
        let x = x.mean(D::Minus1)?.mean(D::Minus1)?;
        self.fc.forward(&x)
    }
}
fn main() -> Result<()> {
    let which = std::env::args().nth(1).unwrap_or("groups".into());
    unsafe { SHIFT_DW = which == "shift"; }
    let steps: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let dev = Device::Cpu;
    let bs = 128;
    {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let blk = Block::new(24, 24, 1, 4, vb)?;
        let mut opt = AdamW::new(vm.all_vars(), ParamsAdamW { lr: 1e-3, ..Default::default() })?;
        let x = Tensor::randn(0f32, 1f32, (bs, 24, 14, 14), &dev)?;
        for i in 0..steps.min(5) + 2 {
            let t = Instant::now();
            let y = blk.forward(&x)?;
            let loss = y.sqr()?.mean_all()?;
            opt.backward_step(&loss)?;
            if i >= 2 { eprintln!("block step {:.1} ms -> {:.0} img/s", t.elapsed().as_secs_f64() * 1e3, bs as f64 / t.elapsed().as_secs_f64()); }
        }
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let net = Net::new(vb)?;
    let mut opt = AdamW::new(vm.all_vars(), ParamsAdamW { lr: 1e-3, ..Default::default() })?;
    let x = Tensor::rand(0f32, 1f32, (bs, 1, 28, 28), &dev)?;
    let y = Tensor::new(&[3u32; 128], &dev)?;
    let mut times = vec![];
    for i in 0..steps + 2 {
        let t = Instant::now();
        let logits = net.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        opt.backward_step(&loss)?;
        let e = t.elapsed().as_secs_f64();
        if i >= 2 { times.push(e); eprintln!("net step {:.1} ms", e * 1e3); }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = times[times.len() / 2];
    println!("candle-{which}: net median step {:.1} ms, {:.0} img/s, epoch(55000) {:.0} s", med * 1e3, bs as f64 / med, 55000.0 / (bs as f64 / med));
    Ok(())
}
