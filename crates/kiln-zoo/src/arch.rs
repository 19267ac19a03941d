//! The architectures, layer by layer, after their reference implementations.

use crate::net::{Act, Net, Pad, V};

/// torchvision's `_make_divisible(v, 8)` (the MobileNet/TF rounding, also
/// EfficientNet's `round_filters`): nearest multiple of 8, at least 8, never
/// below 90% of `v`.
pub(crate) fn make_divisible(v: f64) -> usize {
    let d = 8usize;
    let new = d.max((v + d as f64 / 2.0) as usize / d * d);
    if (new as f64) < 0.9 * v {
        new + d
    } else {
        new
    }
}

/// Strides of the downsampling layers: for small inputs (`small`), the stem's
/// stride and the first stride-2 stage's become 1 (see the crate docs).
struct Strides {
    small: bool,
    dropped: bool,
}

impl Strides {
    fn stem(&self) -> usize {
        if self.small {
            1
        } else {
            2
        }
    }
    /// The stride of a stage whose nominal stride is `s`.
    fn stage(&mut self, s: usize) -> usize {
        if s == 2 && self.small && !self.dropped {
            self.dropped = true;
            1
        } else {
            s
        }
    }
}

/// MobileNetV2's inverted residual (Sandler et al. 2018), also MobileNetV3's
/// bneck (with squeeze-excite `se` = squeeze channels) and EfficientNet's
/// MBConv: 1x1 expand to `hidden` (skipped when `hidden` equals the input
/// channels), k x k depthwise with stride `s`, optional SE, linear 1x1
/// projection, residual `Add` when the shapes match.
#[allow(clippy::too_many_arguments)]
fn mbconv(
    n: &mut Net,
    p: &str,
    x: &V,
    hidden: usize,
    cout: usize,
    k: usize,
    s: usize,
    act: Act,
    se: Option<usize>,
) -> V {
    let mut y = x.clone();
    if hidden != x.c {
        y = n.conv_bn(&format!("{p}.expand"), &y, hidden, 1, 1, 1, act);
    }
    y = n.conv_bn(&format!("{p}.dw"), &y, hidden, k, s, hidden, act);
    if let Some(squeeze) = se {
        // torchvision SqueezeExcitation: pool, 1x1 conv (bias), ReLU, 1x1 conv (bias), hard sigmoid, scale.
        let g = n.gap(&format!("{p}.se.pool"), &y);
        let g = n.conv(&format!("{p}.se.fc1"), &g, squeeze, 1, 1, 1, true);
        let g = n.act(&format!("{p}.se"), &g, Act::Relu);
        let g = n.conv(&format!("{p}.se.fc2"), &g, hidden, 1, 1, 1, true);
        let g = n.act(&format!("{p}.se"), &g, Act::HardSigmoid);
        y = n.mul(&format!("{p}.se.mul"), &y, &g);
    }
    y = n.conv_bn(&format!("{p}.project"), &y, cout, 1, 1, 1, Act::None);
    if s == 1 && x.c == cout {
        y = n.add(&format!("{p}.add"), x, &y);
    }
    y
}

/// scripts/train_fmnist.py's FmnistMnv2.
pub(crate) fn fmnist_mnv2(n: &mut Net, x: &V, width: f64, classes: usize) -> V {
    const BLOCKS: [(usize, usize, usize); 7] = [
        (4, 24, 2),
        (4, 24, 1),
        (4, 40, 2),
        (4, 40, 1),
        (4, 64, 1),
        (4, 64, 1),
        (4, 96, 1),
    ];
    let ch = |c: usize| make_divisible(c as f64 * width);
    let mut y = n.conv_bn("features.0", x, ch(16), 3, 1, 1, Act::Relu6);
    for (i, &(t, c, s)) in BLOCKS.iter().enumerate() {
        y = mbconv(
            n,
            &format!("features.{}", i + 1),
            &y,
            y.c * t,
            ch(c),
            3,
            s,
            Act::Relu6,
            None,
        );
    }
    y = n.conv_bn(
        &format!("features.{}", BLOCKS.len() + 1),
        &y,
        ch(256),
        1,
        1,
        1,
        Act::Relu6,
    );
    let y = n.pool_flatten(&y);
    n.gemm("fc", &y, classes)
}

/// torchvision `mobilenet_v2`.
pub(crate) fn mobilenet_v2(n: &mut Net, x: &V, width: f64, classes: usize, small: bool) -> V {
    // (t, c, n, s)
    const SETTINGS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut st = Strides {
        small,
        dropped: false,
    };
    let mut y = n.conv_bn(
        "features.0",
        x,
        make_divisible(32.0 * width),
        3,
        st.stem(),
        1,
        Act::Relu6,
    );
    let mut i = 1;
    for (t, c, reps, s) in SETTINGS {
        let cout = make_divisible(c as f64 * width);
        let s = st.stage(s);
        for r in 0..reps {
            let stride = if r == 0 { s } else { 1 };
            y = mbconv(
                n,
                &format!("features.{i}"),
                &y,
                y.c * t,
                cout,
                3,
                stride,
                Act::Relu6,
                None,
            );
            i += 1;
        }
    }
    let last = make_divisible(1280.0 * width.max(1.0));
    y = n.conv_bn(&format!("features.{i}"), &y, last, 1, 1, 1, Act::Relu6);
    let y = n.pool_flatten(&y);
    n.gemm("classifier.1", &y, classes)
}

/// torchvision `mobilenet_v3_small`.
pub(crate) fn mobilenet_v3_small(n: &mut Net, x: &V, width: f64, classes: usize, small: bool) -> V {
    use Act::{HardSwish as HS, Relu as RE};
    // (kernel, expanded, out, se, activation, stride), input channels chained.
    const SETTINGS: [(usize, usize, usize, bool, Act, usize); 11] = [
        (3, 16, 16, true, RE, 2),
        (3, 72, 24, false, RE, 2),
        (3, 88, 24, false, RE, 1),
        (5, 96, 40, true, HS, 2),
        (5, 240, 40, true, HS, 1),
        (5, 240, 40, true, HS, 1),
        (5, 120, 48, true, HS, 1),
        (5, 144, 48, true, HS, 1),
        (5, 288, 96, true, HS, 2),
        (5, 576, 96, true, HS, 1),
        (5, 576, 96, true, HS, 1),
    ];
    let ch = |c: usize| make_divisible(c as f64 * width);
    let mut st = Strides {
        small,
        dropped: false,
    };
    let mut y = n.conv_bn("features.0", x, ch(16), 3, st.stem(), 1, HS);
    for (i, &(k, exp, out, se, act, s)) in SETTINGS.iter().enumerate() {
        let hidden = ch(exp);
        let se = se.then(|| make_divisible((hidden / 4) as f64));
        y = mbconv(
            n,
            &format!("features.{}", i + 1),
            &y,
            hidden,
            ch(out),
            k,
            st.stage(s),
            act,
            se,
        );
    }
    y = n.conv_bn(
        &format!("features.{}", SETTINGS.len() + 1),
        &y,
        6 * y.c,
        1,
        1,
        1,
        HS,
    );
    let y = n.pool_flatten(&y);
    let y = n.gemm("classifier.0", &y, ch(1024));
    let y = n.act("classifier.1", &y, HS);
    n.gemm("classifier.3", &y, classes)
}

/// ShuffleNetV2's stage output channels (stem, stages 2-4, conv5) per width
/// (torchvision's `stages_out_channels`).
pub(crate) const SHUFFLENET_TABLES: [(f32, [usize; 5]); 4] = [
    (0.5, [24, 48, 96, 192, 1024]),
    (1.0, [24, 116, 232, 464, 1024]),
    (1.5, [24, 176, 352, 704, 1024]),
    (2.0, [24, 244, 488, 976, 2048]),
];

/// torchvision `shufflenet_v2_x{0_5,1_0,1_5,2_0}` (`table` = its stage
/// output channels).
pub(crate) fn shufflenet_v2(n: &mut Net, x: &V, table: [usize; 5], classes: usize, small: bool) -> V {
    let st = Strides {
        small,
        dropped: false,
    };
    let mut y = n.conv_bn("conv1", x, table[0], 3, st.stem(), 1, Act::Relu);
    y = n.maxpool("maxpool", &y, 3, st.stem());
    for (stage, (reps, cout)) in [4, 8, 4].into_iter().zip(&table[1..4]).enumerate() {
        let bf = cout / 2;
        for r in 0..reps {
            let p = format!("stage{}.{r}", stage + 2);
            let branch2 = |n: &mut Net, x: &V, s: usize| {
                let b = n.conv_bn(&format!("{p}.branch2.pw1"), x, bf, 1, 1, 1, Act::Relu);
                let b = n.conv_bn(&format!("{p}.branch2.dw"), &b, bf, 3, s, bf, Act::None);
                n.conv_bn(&format!("{p}.branch2.pw2"), &b, bf, 1, 1, 1, Act::Relu)
            };
            y = if r == 0 {
                let b1 = n.conv_bn(&format!("{p}.branch1.dw"), &y, y.c, 3, 2, y.c, Act::None);
                let b1 = n.conv_bn(&format!("{p}.branch1.pw"), &b1, bf, 1, 1, 1, Act::Relu);
                let b2 = branch2(n, &y, 2);
                n.concat(&format!("{p}.concat"), &b1, &b2)
            } else {
                let (x1, x2) = n.split2(&format!("{p}.split"), &y);
                let b2 = branch2(n, &x2, 1);
                n.concat(&format!("{p}.concat"), &x1, &b2)
            };
            y = n.shuffle(&format!("{p}.shuffle"), &y, 2);
        }
    }
    y = n.conv_bn("conv5", &y, table[4], 1, 1, 1, Act::Relu);
    let y = n.pool_flatten(&y);
    n.gemm("fc", &y, classes)
}

/// EfficientNet-Lite scaling (width, depth, resolution) of variants 0..=4.
pub(crate) const LITE_SCALING: [(f64, f64, usize); 5] = [
    (1.0, 1.0, 224),
    (1.0, 1.1, 240),
    (1.1, 1.2, 260),
    (1.2, 1.4, 280),
    (1.4, 1.8, 300),
];

/// EfficientNet-Lite (TF `efficientnet_lite_builder`, weights layout of
/// lukemelas' EfficientNet-PyTorch): `width` already includes the variant's
/// coefficient; `depth` scales the repeats of all but the first and last stage.
pub(crate) fn efficientnet_lite(
    n: &mut Net,
    x: &V,
    width: f64,
    depth: f64,
    classes: usize,
    small: bool,
) -> V {
    // (repeats, kernel, stride, expand ratio, out channels)
    const STAGES: [(usize, usize, usize, usize, usize); 7] = [
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ];
    n.pad = Pad::Same;
    let mut st = Strides {
        small,
        dropped: false,
    };
    let mut y = n.conv_bn("stem", x, 32, 3, st.stem(), 1, Act::Relu6);
    let mut i = 0;
    for (j, (reps, k, s, e, c)) in STAGES.into_iter().enumerate() {
        let reps = if j == 0 || j == STAGES.len() - 1 {
            reps
        } else {
            (depth * reps as f64).ceil() as usize
        };
        let (cout, s) = (make_divisible(c as f64 * width), st.stage(s));
        for r in 0..reps {
            let stride = if r == 0 { s } else { 1 };
            y = mbconv(
                n,
                &format!("blocks.{i}"),
                &y,
                y.c * e,
                cout,
                k,
                stride,
                Act::Relu6,
                None,
            );
            i += 1;
        }
    }
    y = n.conv_bn("head", &y, 1280, 1, 1, 1, Act::Relu6);
    let y = n.pool_flatten(&y);
    n.gemm("fc", &y, classes)
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0 * 0.35), 16);
        assert_eq!(make_divisible(16.0 * 0.5), 8);
        assert_eq!(make_divisible(24.0 * 0.75), 24);
        assert_eq!(make_divisible(1280.0), 1280);
        assert_eq!(make_divisible(96.0 * 1.4), 136);
        assert_eq!(make_divisible(3.0), 8);
    }
}
