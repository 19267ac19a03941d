//! Lowering of kiln's integer ops (made from QDQ graphs by
//! [`crate::lower_qdq`]) onto the int8 kernels, and their execution.
//!
//! 8-bit values live in the arena like f32 ones (a quarter of the words),
//! stored as `u8`; a model's `int8` tensor is stored `+ 128` with its zero
//! point and clamp bounds shifted by 128 (see [`kiln_kernels::quant`]), so
//! every kernel reads and writes `u8` and `vpdpbusd` multiplies the stored
//! bytes directly. Conversions happen only where a value leaves the integer
//! world: the reference fallback and graph outputs see the model's dtype.
//!
//! | op | kernel |
//! |----|--------|
//! | `QuantizeLinear` (per tensor, f32 in) | `quantize_f32_u8` (NHWC for 4-D, so the first convolution reads it in place) |
//! | `DequantizeLinear` (per tensor, 8-bit in) | `dequantize_u8_f32` |
//! | `QConv` 1x1 stride 1 (weight zero point 0, or uint8 weights at 128) | int8 GEMM on the NHWC activation |
//! | `QConv` depthwise | int8 depthwise kernel |
//! | other `QConv` (group 1) | im2col (padding = input zero point) + int8 GEMM |
//! | `QGemm` (constant weights) | int8 GEMM |
//! | `QAdd` (same shapes) | `add_u8` |
//! | `QAdd` / `QMul` with a one-element or per-channel 8-bit constant | table lookup (`lut_u8`, `lut_channel_u8`), the tables made by the reference op |
//! | `QGlobalAveragePool` | `global_avg_pool_u8` |
//! | `QLut` | table lookup |
//! | `MaxPool` on 8-bit | `maxpool_u8` |
//! | `Reshape`/`Flatten`/`Squeeze`/`Unsqueeze`/`Identity` on 8-bit | buffer alias |
//!
//! Every kernel computes exactly the integers of the reference op, so the
//! compiled int8 runtime equals the reference executor's integer path bit
//! for bit.

use super::*;
use kiln_ir::quant::quantize_multiplier;
use kiln_kernels::qdwconv::{qdwconv_u8_raw, PackedQDw, QDwGeom};
use kiln_kernels::qeltwise::{
    add_u8, dequantize_u8_f32, lut_u8, mul_u8, quantize_f32_u8, QAddParams, QMulParams,
};
use kiln_kernels::qgemm::{qgemm_name, qgemm_u8_raw, qtile_rows, QGemmArgs, QPackedB};
use kiln_kernels::qpool::{global_avg_pool_u8, maxpool_u8};
use kiln_kernels::quant::{QOut, Requant};
use std::ops::Range;

/// An int8 step.
#[derive(Debug)]
pub(super) enum QKernel {
    /// `y = clamp(round_half_even(x / scale) + zp)` (stored encoding).
    Quantize {
        x: usize,
        y: usize,
        len: usize,
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
    },
    /// [`QKernel::Quantize`] of an NCHW `[n, c, hw]` input into NHWC.
    QuantizeNhwc {
        x: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
    },
    /// `y = (x - zp) * scale` (stored encoding).
    Dequantize {
        x: usize,
        y: usize,
        len: usize,
        scale: f32,
        zp: i32,
    },
    /// GEMM over `m` rows of `lda` bytes (pointwise conv or QGemm).
    Gemm {
        m: usize,
        w: Arc<QPackedB>,
        a: usize,
        lda: usize,
        y: usize,
    },
    /// A pointwise GEMM whose output only feeds a `QAdd` with `skip`, fused:
    /// per block of rows, the GEMM writes into per-thread scratch and the
    /// add reads it from there (cache-hot) with the same rows of `skip`.
    GemmAdd {
        m: usize,
        w: Arc<QPackedB>,
        a: usize,
        lda: usize,
        skip: usize,
        /// The GEMM output is the add's first operand.
        gemm_first: bool,
        y: usize,
        p: QAddParams,
    },
    /// General convolution: im2col of a tile of pixels, then GEMM.
    Im2col {
        g: ConvGeom,
        zx: u8,
        w: Arc<QPackedB>,
        x: usize,
        y: usize,
    },
    /// Depthwise convolution, NHWC.
    Dw {
        g: QDwGeom,
        w: Arc<PackedQDw>,
        x: usize,
        y: usize,
    },
    /// `QAdd` of two same-shape tensors.
    Add {
        a: usize,
        b: usize,
        y: usize,
        len: usize,
        p: QAddParams,
    },
    /// `QMul` of two same-shape tensors.
    Mul {
        a: usize,
        b: usize,
        y: usize,
        len: usize,
        p: QMulParams,
    },
    /// Nearest `Resize` by integer factors on bytes, NHWC.
    Upsample {
        x: usize,
        y: usize,
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        fy: usize,
        fx: usize,
    },
    /// `QGlobalAveragePool`, NHWC `[n, hw, c]` -> `[n, c]`.
    Gap {
        x: usize,
        y: usize,
        n: usize,
        hw: usize,
        c: usize,
        zx: i32,
        rq: Box<Requant>,
    },
    /// `y = table[x]`.
    Lut {
        x: usize,
        y: usize,
        len: usize,
        table: Box<[u8; 256]>,
    },
    /// A table per channel of a 4-D `[n, c, hw]` value (NCHW, or NHWC when
    /// `nhwc`): `y = tables[channel][x]`.
    ChannelLut {
        x: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
        nhwc: bool,
        tables: Box<[[u8; 256]]>,
    },
    /// `QMul` of `x` `[n, c, h, w]` by a gate `g` `[n, c, 1, 1]` (a
    /// squeeze-and-excitation scale): `y = table[g[n, c]][x]`, the table
    /// holding the op's result for every pair of codes.
    GateLut {
        x: usize,
        g: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
        nhwc: bool,
        table: Box<[[u8; 256]]>,
    },
    /// Max pooling, NHWC.
    MaxPool { g: PoolGeom, x: usize, y: usize },
    /// Channel concatenation of NHWC values with equal quantization
    /// parameters (no requantization: bytes are copied).
    ConcatC {
        xs: Vec<(usize, usize)>,
        y: usize,
        pixels: usize,
        c: usize,
    },
    /// Layout change of an 8-bit value.
    Transpose {
        x: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
        to_nhwc: bool,
    },
}

/// 8-bit dtype offset of the stored encoding.
fn shift(dt: DType) -> Option<i32> {
    match dt {
        DType::U8 => Some(0),
        DType::I8 => Some(128),
        _ => None,
    }
}

fn attr_i(node: &Node, name: &str, default: i64) -> Result<i32, RuntimeError> {
    Ok(node.attr_int(name, default)? as i32)
}

fn ints(node: &Node, name: &str) -> Result<Option<Vec<i32>>, RuntimeError> {
    Ok(node
        .attr_ints_opt(name)?
        .map(|v| v.iter().map(|&x| x as i32).collect()))
}

/// Output params `(dtype, QOut)` in the stored encoding.
fn out_params(node: &Node) -> Result<Option<(DType, QOut)>, RuntimeError> {
    let dt = match node.attr_int("output_dtype", 2)? {
        2 => DType::U8,
        3 => DType::I8,
        _ => return Ok(None),
    };
    let (qmin, qmax): (i32, i32) = if dt == DType::U8 { (0, 255) } else { (-128, 127) };
    let s = shift(dt).unwrap_or(0);
    let zy = attr_i(node, "y_zero_point", 0)?;
    let lo = attr_i(node, "y_min", qmin as i64)?;
    let hi = attr_i(node, "y_max", qmax as i64)?;
    if !(qmin..=qmax).contains(&zy) || lo > hi || lo < qmin || hi > qmax {
        return Ok(None);
    }
    Ok(Some((
        dt,
        QOut {
            zy: zy + s,
            lo: lo + s,
            hi: hi + s,
        },
    )))
}

impl Builder<'_> {
    /// Static shape and dtype of an 8-bit value.
    pub(super) fn q8_shape(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        if name.is_empty() {
            return None;
        }
        if let Some(&v) = self.by_name.get(name) {
            let val = &self.vals[v];
            return (shift(val.dtype).is_some() && !matches!(val.loc, Loc::Boxed(_) | Loc::Const(_)))
                .then(|| val.shape.clone().map(|s| (s, val.dtype)))
                .flatten();
        }
        if self.is_const(name) {
            return None;
        }
        let t = self.types.get(name)?;
        shift(t.dtype)?;
        Some((t.known_dims()?, t.dtype))
    }

    /// A new 8-bit arena value for output `name`.
    pub(super) fn out_val8(&mut self, name: &str, shape: Vec<usize>, dt: DType, layout: Layout) -> usize {
        let id = self.push_val(name, Some(shape), dt, layout, Loc::Arena(0));
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The 8-bit value `name` in layout `want`, inserting a transpose once.
    pub(super) fn use_val8(&mut self, name: &str, want: Layout) -> Result<usize, RuntimeError> {
        let id = self.use_val(name, None)?;
        let v = &self.vals[id];
        if v.layout == want || v.shape.as_deref().is_none_or(layout_free) {
            return Ok(id);
        }
        if let Some(&c) = self.converted.get(&(id, want)) {
            return Ok(c);
        }
        let s = v.shape.clone().unwrap_or_default();
        let dt = v.dtype;
        let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
        let y = self.push_val(name, Some(s.clone()), dt, want, Loc::Arena(0));
        let to_nhwc = want == Layout::Nhwc;
        self.push_step(
            StepInfo {
                node: name.to_string(),
                op_type: "Transpose".into(),
                kernel: if to_nhwc {
                    "nchw_to_nhwc_u8"
                } else {
                    "nhwc_to_nchw_u8"
                }
                .into(),
                shape: s,
                flops: 0,
                bytes: 0,
            },
            Kernel::Q8(QKernel::Transpose {
                x: id,
                y,
                n,
                c,
                hw,
                to_nhwc,
            }),
            vec![id],
            vec![y],
            vec![],
        );
        self.converted.insert((id, want), y);
        Ok(y)
    }

    /// Lowers an integer-path node; false when it has no int8 kernel.
    pub(super) fn lower_q8(&mut self, node: &Node) -> Result<bool, RuntimeError> {
        let dom = node.domain.as_str();
        let std = dom.is_empty() || dom == "ai.onnx";
        let Some(out) = node.outputs.first().filter(|o| !o.is_empty()).cloned() else {
            return Ok(false);
        };
        match (node.op_type.as_str(), std, dom == "kiln") {
            ("QuantizeLinear", true, _) => self.lower_quantize(node, &out),
            ("DequantizeLinear", true, _) => self.lower_dequantize(node, &out),
            ("QConv", _, true) => self.lower_qconv(node, &out),
            ("QGemm", _, true) => self.lower_qgemm(node, &out),
            ("QAdd", _, true) => Ok(self.lower_qadd(node, &out)? || self.lower_qconst_lut(node, &out)?),
            ("QMul", _, true) => Ok(self.lower_qmul(node, &out)?
                || self.lower_qgate(node, &out)?
                || self.lower_qconst_lut(node, &out)?),
            ("Resize", true, _) if self.q8_shape(&node.inputs[0]).is_some() => self.lower_resize8(node, &out),
            ("QGlobalAveragePool", _, true) => self.lower_qgap(node, &out),
            ("QLut", _, true) => self.lower_qlut(node, &out),
            ("Concat", true, _) if self.q8_shape(&node.inputs[0]).is_some() => self.lower_concat8(node, &out),
            ("MaxPool", true, _) if self.q8_shape(&node.inputs[0]).is_some() => {
                self.lower_maxpool8(node, &out)
            }
            ("Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity", true, _)
                if self.q8_shape(&node.inputs[0]).is_some() =>
            {
                self.lower_alias8(node, &out)
            }
            _ => Ok(false),
        }
    }

    /// Per-tensor scale and zero point inputs 1 and 2 of a Q/DQ node, as
    /// (scale, zero point, dtype of the zero point).
    fn qdq_params(&self, node: &Node) -> Result<Option<(f32, i32, DType)>, RuntimeError> {
        let Some(s) = node.inputs.get(1).and_then(|s| self.const_tensor(s)) else {
            return Ok(None);
        };
        if s.len() != 1 || s.dtype() != DType::F32 {
            return Ok(None);
        }
        let scale = s.as_slice::<f32>()?[0];
        let (zp, dt) = match node.inputs.get(2).filter(|z| !z.is_empty()) {
            Some(z) => {
                let Some(z) = self.const_tensor(z) else {
                    return Ok(None);
                };
                if z.len() != 1 {
                    return Ok(None);
                }
                (z.to_i64_vec()?[0] as i32, z.dtype())
            }
            None => (0, DType::U8),
        };
        if node.attr_int("saturate", 1)? != 1 || !(scale.is_finite() && scale > 0.0) {
            return Ok(None);
        }
        Ok(Some((scale, zp, dt)))
    }

    fn lower_quantize(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some(xs) = self.f32_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        let Some((scale, zp, dt)) = self.qdq_params(node)? else {
            return Ok(false);
        };
        if node.attr_int("output_dtype", 0)? != 0 {
            return Ok(false);
        }
        let Some(s) = shift(dt) else { return Ok(false) };
        let xi = self.use_val(&node.inputs[0], None)?;
        let (lo, hi) = if dt == DType::U8 { (0, 255) } else { (-128, 127) };
        let len = xs.iter().product();
        if xs.len() == 4 && self.vals[xi].layout == Layout::Nchw && !layout_free(&xs) {
            // A 4-D NCHW value (the graph input): quantize and transpose in
            // one pass, so the first convolution reads NHWC bytes.
            let y = self.out_val8(out, xs.clone(), dt, Layout::Nhwc);
            let info = self.info(node, "quantize_nchw_to_nhwc_f32_u8".into(), &xs, len as u64);
            self.push_step(
                info,
                Kernel::Q8(QKernel::QuantizeNhwc {
                    x: xi,
                    y,
                    n: xs[0],
                    c: xs[1],
                    hw: xs[2] * xs[3],
                    scale,
                    zp: zp + s,
                    lo: lo + s,
                    hi: hi + s,
                }),
                vec![xi],
                vec![y],
                vec![],
            );
            return Ok(true);
        }
        let layout = self.vals[xi].layout;
        let y = self.out_val8(out, xs.clone(), dt, layout);
        let info = self.info(node, "quantize_f32_u8".into(), &xs, len as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Quantize {
                x: xi,
                y,
                len,
                scale,
                zp: zp + s,
                lo: lo + s,
                hi: hi + s,
            }),
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_dequantize(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((xs, xdt)) = self.q8_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        let Some((scale, zp, dt)) = self.qdq_params(node)? else {
            return Ok(false);
        };
        if dt != xdt || self.f32_shape(out).is_none() {
            return Ok(false);
        }
        let xi = self.use_val(&node.inputs[0], None)?;
        let layout = self.vals[xi].layout;
        let y = self.out_val(out, xs.clone(), layout);
        let len = xs.iter().product();
        let info = self.info(node, "dequantize_u8_f32".into(), &xs, len as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Dequantize {
                x: xi,
                y,
                len,
                scale,
                zp: zp + shift(dt).unwrap_or(0),
            }),
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    /// Weights `[m, k...]` as `i8` with zero point 0: int8 weights with
    /// zero point 0, or uint8 weights with zero point 128 (shifted).
    fn q_weights(&self, w: &Tensor, zw: &[i32]) -> Result<Option<Vec<i8>>, RuntimeError> {
        Ok(match w.dtype() {
            DType::I8 if zw.iter().all(|&z| z == 0) => Some(w.as_slice::<i8>()?.to_vec()),
            DType::U8 if zw.iter().all(|&z| z == 128) => Some(
                w.as_slice::<u8>()?
                    .iter()
                    .map(|&v| (v as i32 - 128) as i8)
                    .collect(),
            ),
            _ => None,
        })
    }

    fn requant(node: &Node, n: usize, out: QOut) -> Result<Option<Requant>, RuntimeError> {
        let (Some(m), Some(e)) = (ints(node, "multiplier")?, ints(node, "shift")?) else {
            return Ok(None);
        };
        if !(m.len() == 1 || m.len() == n) || e.len() != m.len() {
            return Ok(None);
        }
        if m.iter().any(|&v| v < 0) || e.iter().any(|&v| !(-31..=30).contains(&v)) {
            return Ok(None);
        }
        Ok(Some(Requant::new(n, &m, &e, out)))
    }

    fn lower_qconv(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some((xs, xdt)) = self.q8_shape(x) else {
            return Ok(false);
        };
        let Some(w) = node.inputs.get(1).and_then(|w| self.const_tensor(w)) else {
            return Ok(false);
        };
        let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match self.const_tensor(b) {
                Some(t) if t.dtype() == DType::I32 => Some(t),
                _ => return Ok(false),
            },
            None => None,
        };
        let Some((ydt, qo)) = out_params(node)? else {
            return Ok(false);
        };
        if xs.len() != 4 {
            return Ok(false);
        }
        let Some(cs) = conv2d_shape(
            node,
            self.cm.opset,
            &xs,
            w.shape(),
            bias.as_ref().map(|b| b.len()),
        )?
        else {
            return Ok(false);
        };
        let m = cs.m;
        let zw = ints(node, "w_zero_point")?.unwrap_or_else(|| vec![0]);
        let Some(wq) = self.q_weights(&w, &zw)? else {
            return Ok(false);
        };
        let Some(rq) = Self::requant(node, m, qo)? else {
            return Ok(false);
        };
        let zx = attr_i(node, "x_zero_point", 0)? + shift(xdt).unwrap_or(0);
        if !(0..=255).contains(&zx) {
            return Ok(false);
        }
        let bd: Option<Vec<i32>> = match &bias {
            Some(b) => Some(b.as_slice::<i32>()?.to_vec()),
            None => None,
        };
        let ys = vec![cs.n, m, cs.output[0], cs.output[1]];
        let g = ConvGeom {
            n: cs.n,
            h: cs.input[0],
            w: cs.input[1],
            ci: cs.c,
            co: m,
            group: cs.group,
            kh: cs.kernel[0],
            kw: cs.kernel[1],
            sh: cs.strides[0],
            sw: cs.strides[1],
            dh: cs.dilations[0],
            dw: cs.dilations[1],
            pt: cs.pads_begin[0],
            pl: cs.pads_begin[1],
            oh: cs.output[0],
            ow: cs.output[1],
        };
        let isa = self.cm.isa;
        let depthwise = cs.group == cs.c && cs.c == m && cs.group > 1;
        if !depthwise && cs.group != 1 || depthwise && (g.dh != 1 || g.dw != 1) {
            return Ok(false);
        }
        let xi = self.use_val8(x, Layout::Nhwc)?;
        let y = self.out_val8(out, ys.clone(), ydt, Layout::Nhwc);
        let macs = g.macs();
        let (kernel, kname) = if depthwise {
            let dw = Arc::new(PackedQDw::pack(isa, m, g.kh, g.kw, &wq, bd.as_deref(), zx, rq));
            let kn = match dw.isa {
                Isa::Avx512Vnni => "qdwconv_u8_avx512vnni_64c",
                Isa::Avx512 => "qdwconv_u8_avx512_64c",
                Isa::Avx2 => "qdwconv_u8_avx2_32c",
                _ => "qdwconv_u8_scalar",
            };
            let name = format!("{kn}_{}x{}s{}", g.kh, g.kw, g.sh);
            let dg = QDwGeom {
                n: g.n,
                h: g.h,
                w: g.w,
                c: m,
                kh: g.kh,
                kw: g.kw,
                sh: g.sh,
                sw: g.sw,
                pt: g.pt,
                pl: g.pl,
                oh: g.oh,
                ow: g.ow,
            };
            (
                QKernel::Dw {
                    g: dg,
                    w: dw,
                    x: xi,
                    y,
                },
                name,
            )
        } else {
            // ONNX weights [m][ci][kh][kw]; im2col rows are kh segments of
            // (kx, c) in NHWC order, each padded to a multiple of 4 bytes
            // (zero weights): an interior pixel's segment is one contiguous
            // copy of the input row.
            let (kh, kw, ci) = (g.kh, g.kw, g.ci);
            let segp = if g.is_pointwise() { ci } else { im2col_seg(&g) };
            let k = segp * kh;
            let wref = &wq;
            let b = Arc::new(QPackedB::pack(
                isa,
                k,
                m,
                |kk, j| {
                    let (ky, r) = (kk / segp, kk % segp);
                    let (kx, c) = (r / ci, r % ci);
                    if r < kw * ci {
                        wref[((j * ci + c) * kh + ky) * kw + kx]
                    } else {
                        0
                    }
                },
                bd.as_deref(),
                zx,
                &rq,
            ));
            if g.is_pointwise() {
                (
                    QKernel::Gemm {
                        m: g.pixels(),
                        w: b,
                        a: xi,
                        lda: g.ci,
                        y,
                    },
                    qgemm_name(isa).to_string(),
                )
            } else {
                (
                    QKernel::Im2col {
                        g,
                        zx: zx as u8,
                        w: b,
                        x: xi,
                        y,
                    },
                    format!("{}_im2col_{}x{}s{}", qgemm_name(isa), g.kh, g.kw, g.sh),
                )
            }
        };
        let info = self.info(node, kname, &ys, 2 * macs);
        self.push_step(info, Kernel::Q8(kernel), vec![xi], vec![y], vec![]);
        self.released(node, &[1, 2]);
        Ok(true)
    }

    fn lower_qgemm(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let a = &node.inputs[0];
        let Some((xs, xdt)) = self.q8_shape(a) else {
            return Ok(false);
        };
        let Some(w) = node.inputs.get(1).and_then(|w| self.const_tensor(w)) else {
            return Ok(false);
        };
        if w.rank() != 2 || xs.is_empty() || *xs.last().unwrap_or(&0) != w.shape()[1] {
            return Ok(false);
        }
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match self.const_tensor(b) {
                Some(t) if t.dtype() == DType::I32 && t.len() == n => Some(t.as_slice::<i32>()?.to_vec()),
                _ => return Ok(false),
            },
            None => None,
        };
        let Some((ydt, qo)) = out_params(node)? else {
            return Ok(false);
        };
        let zw = ints(node, "w_zero_point")?.unwrap_or_else(|| vec![0]);
        let Some(wq) = self.q_weights(&w, &zw)? else {
            return Ok(false);
        };
        let Some(rq) = Self::requant(node, n, qo)? else {
            return Ok(false);
        };
        let zx = attr_i(node, "a_zero_point", 0)? + shift(xdt).unwrap_or(0);
        if !(0..=255).contains(&zx) {
            return Ok(false);
        }
        let isa = self.cm.isa;
        let b = Arc::new(QPackedB::pack(
            isa,
            k,
            n,
            |kk, j| wq[j * k + kk],
            bias.as_deref(),
            zx,
            &rq,
        ));
        let xi = self.use_val8(a, Layout::Nchw)?;
        let mut ys = xs.clone();
        *ys.last_mut().unwrap_or(&mut 0) = n;
        let y = self.out_val8(out, ys.clone(), ydt, Layout::Nchw);
        let m: usize = xs[..xs.len() - 1].iter().product();
        let info = self.info(node, qgemm_name(isa).into(), &ys, 2 * (m * n * k) as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Gemm {
                m,
                w: b,
                a: xi,
                lda: k,
                y,
            }),
            vec![xi],
            vec![y],
            vec![],
        );
        self.released(node, &[1, 2]);
        Ok(true)
    }

    /// Operands of a same-shape element-wise op of two 8-bit tensors: their
    /// shape, the stored zero points of `a` and `b` (attributes
    /// `a_zero_point`, `b_zero_point`), the output dtype and parameters;
    /// `None` when the op does not qualify.
    #[allow(clippy::type_complexity)]
    fn eltwise8_operands(
        &self,
        node: &Node,
    ) -> Result<Option<(Vec<usize>, i32, i32, DType, QOut)>, RuntimeError> {
        let (Some((sa, da)), Some((sb, db))) = (
            self.q8_shape(&node.inputs[0]),
            node.inputs.get(1).and_then(|b| self.q8_shape(b)),
        ) else {
            return Ok(None);
        };
        if sa != sb {
            return Ok(None);
        }
        let Some((ydt, out_q)) = out_params(node)? else {
            return Ok(None);
        };
        let za = attr_i(node, "a_zero_point", 0)? + shift(da).unwrap_or(0);
        let zb = attr_i(node, "b_zero_point", 0)? + shift(db).unwrap_or(0);
        if !(0..=255).contains(&za) || !(0..=255).contains(&zb) {
            return Ok(None);
        }
        Ok(Some((sa, za, zb, ydt, out_q)))
    }

    /// Pushes the step of a same-shape element-wise 8-bit op on inputs 0
    /// and 1 (`b` brought to `a`'s layout, the output in it too, in place
    /// allowed): `make(a, b, y, len)` is its kernel.
    fn push_eltwise8(
        &mut self,
        node: &Node,
        out: &str,
        shape: Vec<usize>,
        ydt: DType,
        kernel: &str,
        make: impl FnOnce(usize, usize, usize, usize) -> QKernel,
    ) -> Result<bool, RuntimeError> {
        let ai = self.use_val(&node.inputs[0], None)?;
        let layout = self.vals[ai].layout;
        let bi = self.use_val8(&node.inputs[1], layout)?;
        let len = shape.iter().product::<usize>();
        let info = self.info(node, kernel.into(), &shape, len as u64);
        let y = self.out_val8(out, shape, ydt, layout);
        self.push_step(
            info,
            Kernel::Q8(make(ai, bi, y, len)),
            vec![ai, bi],
            vec![y],
            vec![ai, bi],
        );
        Ok(true)
    }

    fn lower_qadd(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((shape, za, zb, ydt, out_q)) = self.eltwise8_operands(node)? else {
            return Ok(false);
        };
        let one = |name: &str| -> Result<Option<i32>, RuntimeError> {
            Ok(ints(node, name)?.and_then(|v| (v.len() == 1).then_some(v[0])))
        };
        let (Some(ma), Some(ea), Some(mb), Some(eb), Some(m), Some(e)) = (
            one("a_multiplier")?,
            one("a_shift")?,
            one("b_multiplier")?,
            one("b_shift")?,
            one("multiplier")?,
            one("shift")?,
        ) else {
            return Ok(false);
        };
        if [ma, mb, m].iter().any(|&v| v < 0) || [ea, eb, e].iter().any(|&v| !(-31..=30).contains(&v)) {
            return Ok(false);
        }
        let p = QAddParams::new(za, zb, (ma, ea), (mb, eb), (m, e), out_q);
        self.push_eltwise8(node, out, shape, ydt, "add_u8", |a, b, y, len| QKernel::Add {
            a,
            b,
            y,
            len,
            p,
        })
    }

    /// `QMul` of two same-shape 8-bit tensors: [`mul_u8`].
    fn lower_qmul(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        if node.inputs.iter().any(|i| self.is_const(i)) {
            return Ok(false);
        }
        let Some((shape, za, zb, ydt, out_q)) = self.eltwise8_operands(node)? else {
            return Ok(false);
        };
        let (Some(m), Some(e)) = (
            ints(node, "multiplier")?.and_then(|v| (v.len() == 1).then_some(v[0])),
            ints(node, "shift")?.and_then(|v| (v.len() == 1).then_some(v[0])),
        ) else {
            return Ok(false);
        };
        if m < 0 || !(-31..=30).contains(&e) {
            return Ok(false);
        }
        let p = QMulParams::new(za, zb, (m, e), out_q);
        self.push_eltwise8(node, out, shape, ydt, "mul_u8", |a, b, y, len| QKernel::Mul {
            a,
            b,
            y,
            len,
            p,
        })
    }

    /// `QMul` of an 8-bit `[n, c, h, w]` tensor by an 8-bit gate
    /// `[n, c, 1, 1]` (or `[1, c, 1, 1]` with `n = 1`; squeeze-and-excitation
    /// blocks): every output byte is a function of the two input bytes, so
    /// the op is a 256 x 256 table, made by running the reference op on
    /// every pair of codes (equal to the reference bit for bit).
    fn lower_qgate(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        if node.inputs.len() != 2 || node.inputs.iter().any(|i| self.is_const(i)) {
            return Ok(false);
        }
        let (Some((s0, d0)), Some((s1, d1))) =
            (self.q8_shape(&node.inputs[0]), self.q8_shape(&node.inputs[1]))
        else {
            return Ok(false);
        };
        let is_gate = |g: &[usize], x: &[usize]| {
            x.len() == 4
                && g.len() == 4
                && g[0] == x[0]
                && g[1] == x[1]
                && g[2] == 1
                && g[3] == 1
                && x[2] * x[3] > 1
        };
        let (xpos, xs, xdt, gdt) = if is_gate(&s1, &s0) {
            (0, s0, d0, d1)
        } else if is_gate(&s0, &s1) {
            (1, s1, d1, d0)
        } else {
            return Ok(false);
        };
        if self.types.get(out).and_then(|t| t.known_dims()).as_deref() != Some(xs.as_slice()) {
            return Ok(false);
        }
        let Some((ydt, _)) = out_params(node)? else {
            return Ok(false);
        };
        // Codes in stored order (uint8 k; int8 k - 128): x along the last
        // axis [1, 256], the gate along the first [256, 1].
        let codes = |dt: DType, shape: Vec<usize>| -> Result<Option<Tensor>, RuntimeError> {
            Ok(match dt {
                DType::U8 => Some(Tensor::from_vec(shape, (0..=255u8).collect::<Vec<u8>>())?),
                DType::I8 => Some(Tensor::from_vec(shape, (-128..=127i8).collect::<Vec<i8>>())?),
                _ => None,
            })
        };
        let (Some(xc), Some(gc)) = (codes(xdt, vec![1, 256])?, codes(gdt, vec![256, 1])?) else {
            return Ok(false);
        };
        let args: Vec<Option<&Tensor>> = if xpos == 0 {
            vec![Some(&xc), Some(&gc)]
        } else {
            vec![Some(&gc), Some(&xc)]
        };
        let def = ops::lookup_node(node, self.cm.opset)?;
        let ctx = OpCtx {
            node,
            opset: self.cm.opset,
        };
        let res = (def.eval)(&ctx, &args).map_err(|e| e.at_node(&node.name, &node.op_type))?;
        let Some(t) = res.first().filter(|t| t.len() == 256 * 256 && t.dtype() == ydt) else {
            return Ok(false);
        };
        let stored: Vec<u8> = match ydt {
            DType::U8 => t.as_slice::<u8>()?.to_vec(),
            _ => t.as_slice::<i8>()?.iter().map(|&v| (v as u8) ^ 0x80).collect(),
        };
        let mut table = vec![[0u8; 256]; 256];
        for (d, s) in table.iter_mut().zip(stored.chunks_exact(256)) {
            d.copy_from_slice(s);
        }
        let xi = self.use_val(&node.inputs[xpos], None)?;
        let layout = self.vals[xi].layout;
        let gi = self.use_val(&node.inputs[1 - xpos], None)?;
        let y = self.out_val8(out, xs.clone(), ydt, layout);
        let len = xs.iter().product::<usize>();
        let info = self.info(node, "gate_lut_u8".into(), &xs, len as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::GateLut {
                x: xi,
                g: gi,
                y,
                n: xs[0],
                c: xs[1],
                hw: xs[2] * xs[3],
                nhwc: layout == Layout::Nhwc,
                table: table.into_boxed_slice(),
            }),
            vec![xi, gi],
            vec![y],
            vec![xi],
        );
        Ok(true)
    }

    /// Nearest `Resize` by integer factors of an 8-bit tensor (the QDQ pass
    /// keeps it on integers when its input and output parameters are
    /// equal): NHWC byte copies.
    fn lower_resize8(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let (Some((xs, xdt)), Some((ys, _))) = (self.q8_shape(&node.inputs[0]), self.q8_shape(out)) else {
            return Ok(false);
        };
        let Some((fy, fx)) = self.nearest_factors(node, &xs, &ys)? else {
            return Ok(false);
        };
        let xi = self.use_val8(&node.inputs[0], Layout::Nhwc)?;
        let y = self.out_val8(out, ys.clone(), xdt, Layout::Nhwc);
        let info = self.info(node, format!("upsample_nearest_nhwc_u8_{fy}x{fx}"), &ys, 0);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Upsample {
                x: xi,
                y,
                n: xs[0],
                h: xs[2],
                w: xs[3],
                c: xs[1],
                fy,
                fx,
            }),
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_qgap(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((xs, xdt)) = self.q8_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        let Some((ydt, qo)) = out_params(node)? else {
            return Ok(false);
        };
        if xs.len() != 4 {
            return Ok(false);
        }
        let (n, c, hw) = (xs[0], xs[1], xs[2] * xs[3]);
        let sx = node.attr_float("x_scale", 0.0)? as f64;
        let sy = node.attr_float("y_scale", 0.0)? as f64;
        let Ok((m, e)) = quantize_multiplier(sx / (sy * hw.max(1) as f64)) else {
            return Ok(false);
        };
        let zx = attr_i(node, "x_zero_point", 0)? + shift(xdt).unwrap_or(0);
        let xi = self.use_val8(&node.inputs[0], Layout::Nhwc)?;
        let ys = vec![n, c, 1, 1];
        let y = self.out_val8(out, ys.clone(), ydt, Layout::Nchw);
        let info = self.info(node, "global_avg_pool_u8".into(), &ys, (n * c * hw) as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Gap {
                x: xi,
                y,
                n,
                hw,
                c,
                zx,
                rq: Box::new(Requant::new(c, &[m], &[e], qo)),
            }),
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_qlut(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((xs, _)) = self.q8_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        let Some((ydt, _)) = out_params(node)? else {
            return Ok(false);
        };
        let Some(t) = node.attr_ints_opt("table")? else {
            return Ok(false);
        };
        let s = shift(ydt).unwrap_or(0) as i64;
        if t.len() != 256 || t.iter().any(|&v| !(0..=255).contains(&(v + s))) {
            return Ok(false);
        }
        let mut table = Box::new([0u8; 256]);
        for (d, &v) in table.iter_mut().zip(&t) {
            *d = (v + s) as u8;
        }
        let xi = self.use_val(&node.inputs[0], None)?;
        let layout = self.vals[xi].layout;
        let y = self.out_val8(out, xs.clone(), ydt, layout);
        let len = xs.iter().product();
        let info = self.info(node, "lut_u8".into(), &xs, len as u64);
        self.push_step(
            info,
            Kernel::Q8(QKernel::Lut { x: xi, y, len, table }),
            vec![xi],
            vec![y],
            vec![xi],
        );
        Ok(true)
    }

    /// `QAdd` / `QMul` of an 8-bit tensor and an 8-bit constant with one
    /// element (e.g. the learnable scale and bias after PP-LCNet's
    /// activations) or one per channel of a 4-D tensor (a BatchNormalization
    /// exported as Mul and Add): each output byte is a function of the input
    /// byte and its channel, so the op is a 256-entry table (per channel).
    /// The tables are made by running the reference op on every input code,
    /// so the step equals the reference bit for bit.
    fn lower_qconst_lut(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        if node.inputs.len() != 2 {
            return Ok(false);
        }
        let xpos = if self.q8_shape(&node.inputs[0]).is_some() {
            0
        } else {
            1
        };
        let Some((xs, xdt)) = self.q8_shape(&node.inputs[xpos]) else {
            return Ok(false);
        };
        let Some(c) = self.const_tensor(&node.inputs[1 - xpos]) else {
            return Ok(false);
        };
        if shift(c.dtype()).is_none() {
            return Ok(false);
        }
        // One element, or one per channel: shape [C, 1, 1] / [1, C, 1, 1] against NCHW.
        let per_channel = c.len() > 1 && xs.len() == 4 && c.shape().len() <= 4 && {
            let mut cd = vec![1usize; 4 - c.shape().len()];
            cd.extend_from_slice(c.shape());
            cd == [1, xs[1], 1, 1]
        };
        if c.len() != 1 && !per_channel {
            return Ok(false);
        }
        // The constant only broadcasts: the output has the tensor's shape.
        if self.types.get(out).and_then(|t| t.known_dims()).as_deref() != Some(xs.as_slice()) {
            return Ok(false);
        }
        let Some((ydt, _)) = out_params(node)? else {
            return Ok(false);
        };
        let nt = c.len();
        // Every stored byte k in order (uint8 k; int8 k - 128, stored + 128),
        // once per channel: shape [1, C, 256, 1] against the constant's [.., C, 1, 1].
        let shape = if per_channel {
            vec![1, nt, 256, 1]
        } else {
            vec![256]
        };
        let codes = match xdt {
            DType::U8 => Tensor::from_vec(shape, (0..nt).flat_map(|_| 0..=255u8).collect::<Vec<u8>>())?,
            DType::I8 => Tensor::from_vec(shape, (0..nt).flat_map(|_| -128..=127i8).collect::<Vec<i8>>())?,
            _ => return Ok(false),
        };
        let args: Vec<Option<&Tensor>> = if xpos == 0 {
            vec![Some(&codes), Some(&*c)]
        } else {
            vec![Some(&*c), Some(&codes)]
        };
        let def = ops::lookup_node(node, self.cm.opset)?;
        let ctx = OpCtx {
            node,
            opset: self.cm.opset,
        };
        let res = (def.eval)(&ctx, &args).map_err(|e| e.at_node(&node.name, &node.op_type))?;
        let Some(t) = res.first().filter(|t| t.len() == 256 * nt && t.dtype() == ydt) else {
            return Ok(false);
        };
        let stored: Vec<u8> = match ydt {
            DType::U8 => t.as_slice::<u8>()?.to_vec(),
            _ => t.as_slice::<i8>()?.iter().map(|&v| (v as u8) ^ 0x80).collect(),
        };
        let mut tables = vec![[0u8; 256]; nt];
        for (d, s) in tables.iter_mut().zip(stored.chunks_exact(256)) {
            d.copy_from_slice(s);
        }
        let xi = self.use_val(&node.inputs[xpos], None)?;
        let layout = self.vals[xi].layout;
        let y = self.out_val8(out, xs.clone(), ydt, layout);
        let len = xs.iter().product();
        let kernel = if per_channel {
            QKernel::ChannelLut {
                x: xi,
                y,
                n: xs[0],
                c: xs[1],
                hw: xs[2] * xs[3],
                nhwc: layout == Layout::Nhwc,
                tables: tables.into_boxed_slice(),
            }
        } else {
            QKernel::Lut {
                x: xi,
                y,
                len,
                table: Box::new(tables[0]),
            }
        };
        let name = if per_channel { "lut_channel_u8" } else { "lut_u8" };
        let info = self.info(node, name.into(), &xs, len as u64);
        self.push_step(info, Kernel::Q8(kernel), vec![xi], vec![y], vec![xi]);
        Ok(true)
    }

    fn lower_maxpool8(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((xs, xdt)) = self.q8_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        if xs.len() != 4 || node.outputs.len() > 1 && !node.outputs[1].is_empty() {
            return Ok(false);
        }
        let Some(ps) = pool2d_shape(node, self.cm.opset, &xs)? else {
            return Ok(false);
        };
        if !ps.max {
            return Ok(false);
        }
        let g = pool_geom(&xs, &ps);
        let xi = self.use_val8(&node.inputs[0], Layout::Nhwc)?;
        let ys = vec![xs[0], xs[1], g.oh, g.ow];
        let y = self.out_val8(out, ys.clone(), xdt, Layout::Nhwc);
        let info = self.info(node, "maxpool_u8".into(), &ys, 0);
        self.push_step(
            info,
            Kernel::Q8(QKernel::MaxPool { g, x: xi, y }),
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_concat8(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some(ys) = self.types.get(out).and_then(|t| t.known_dims()) else {
            return Ok(false);
        };
        let mut axis = node.attr_int("axis", 1)?;
        if axis < 0 {
            axis += ys.len() as i64;
        }
        if ys.len() != 4 || axis != 1 {
            return Ok(false);
        }
        let mut parts = Vec::new();
        let mut dt = None;
        for i in &node.inputs {
            let Some((s, d)) = self.q8_shape(i) else {
                return Ok(false);
            };
            if s.len() != 4 || s[0] != ys[0] || s[2] != ys[2] || s[3] != ys[3] || *dt.get_or_insert(d) != d {
                return Ok(false);
            }
            parts.push((i.clone(), s[1]));
        }
        let mut xs = Vec::new();
        let mut reads = Vec::new();
        for (i, c) in parts {
            let v = self.use_val8(&i, Layout::Nhwc)?;
            xs.push((v, c));
            reads.push(v);
        }
        let y = self.out_val8(out, ys.clone(), dt.unwrap_or(DType::U8), Layout::Nhwc);
        let info = self.info(node, "concat_channels_nhwc_u8".into(), &ys, 0);
        self.push_step(
            info,
            Kernel::Q8(QKernel::ConcatC {
                xs,
                y,
                pixels: ys[0] * ys[2] * ys[3],
                c: ys[1],
            }),
            reads,
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_alias8(&mut self, node: &Node, out: &str) -> Result<bool, RuntimeError> {
        let Some((xs, xdt)) = self.q8_shape(&node.inputs[0]) else {
            return Ok(false);
        };
        let Some(ys) = self.types.get(out).and_then(|t| t.known_dims()) else {
            return Ok(false);
        };
        if xs.iter().product::<usize>() != ys.iter().product::<usize>() {
            return Ok(false);
        }
        let xi = self.use_val8(&node.inputs[0], Layout::Nchw)?;
        let root = self.vals[xi].alias.unwrap_or(xi);
        let loc = self.vals[root].loc;
        let y = self.push_val(out, Some(ys), xdt, Layout::Nchw, loc);
        self.vals[y].alias = Some(root);
        self.by_name.insert(out.to_string(), y);
        Ok(true)
    }
}

/// Rows of an im2col tile (a multiple of every int8 GEMM's tile rows).
const IM2COL_ROWS: usize = 96;

/// Rows per block of a fused GEMM + add (a multiple of every tile height).
const GEMM_ADD_ROWS: usize = 96;

/// Fuses each pointwise int8 GEMM step whose output is read only by the
/// next step, a same-length `QAdd` (the residual of an inverted residual
/// block), into one [`QKernel::GemmAdd`]: one step and no pass over the
/// GEMM output in memory. Bit-identical (the same integer ops).
pub(super) fn fuse_gemm_add(vals: &[Val], steps: Vec<Step>, outputs: &[usize]) -> Vec<Step> {
    let (readers, aliased) = readers_and_aliased(vals, &steps, outputs);
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut it = steps.into_iter().peekable();
    while let Some(st) = it.next() {
        let fused = match (&st.kernel, it.peek().map(|n| &n.kernel)) {
            (
                Kernel::Q8(QKernel::Gemm { m, w, a, lda, y: t }),
                Some(Kernel::Q8(QKernel::Add {
                    a: aa,
                    b: bb,
                    y,
                    len,
                    p,
                })),
            ) if (aa == t) != (bb == t)
                && readers[*t] == 1
                && !aliased.contains(t)
                && *len == m * w.n
                && !matches!(vals[*t].loc, Loc::Output(_)) =>
            {
                let gemm_first = aa == t;
                Some(QKernel::GemmAdd {
                    m: *m,
                    w: w.clone(),
                    a: *a,
                    lda: *lda,
                    skip: if gemm_first { *bb } else { *aa },
                    gemm_first,
                    y: *y,
                    p: *p,
                })
            }
            _ => None,
        };
        let Some(k) = fused else {
            out.push(st);
            continue;
        };
        let next = it.next().expect("peeked");
        let (a, skip, y) = match &k {
            QKernel::GemmAdd { a, skip, y, .. } => (*a, *skip, *y),
            _ => unreachable!("built above"),
        };
        out.push(Step {
            info: StepInfo {
                node: format!("{} + {}", st.info.node, next.info.node),
                op_type: "QConv+QAdd".into(),
                kernel: format!("{}+add_u8", st.info.kernel),
                shape: next.info.shape.clone(),
                flops: st.info.flops + next.info.flops,
                bytes: 0,
            },
            kernel: Kernel::Q8(k),
            reads: vec![a, skip],
            writes: vec![y],
            inplace: vec![skip],
        });
    }
    out
}

/// Scratch words (f32 units) an int8 step needs per thread.
pub(super) fn scratch_words(k: &QKernel) -> usize {
    match k {
        QKernel::Im2col { g, .. } => IM2COL_ROWS * im2col_seg(g) * g.kh / 4 + 16,
        QKernel::GemmAdd { w, .. } => (GEMM_ADD_ROWS * w.n).div_ceil(4) + 16,
        _ => 0,
    }
}

/// Packed bytes held by an int8 step, with a key to count shared ones once.
pub(super) fn packed_bytes(k: &QKernel) -> Option<(usize, usize)> {
    match k {
        QKernel::Gemm { w, .. } | QKernel::Im2col { w, .. } | QKernel::GemmAdd { w, .. } => {
            Some((Arc::as_ptr(w) as usize, w.bytes()))
        }
        QKernel::Dw { w, .. } => Some((Arc::as_ptr(w) as usize, w.bytes())),
        _ => None,
    }
}

impl CompiledModel {
    pub(super) fn exec_q8(&self, st: &mut RunState, k: &QKernel, flops: u64) {
        let p8 = |v: usize| st.ptrs[v] as *mut u8;
        let pool = &st.pool;
        let threads = pool.threads();
        match k {
            QKernel::Quantize {
                x,
                y,
                len,
                scale,
                zp,
                lo,
                hi,
            } => {
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let parts = if *len < 65_536 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    quantize_f32_u8(
                        isa,
                        px.get(),
                        py.get() as *mut u8,
                        split_range(*len, parts, i),
                        *scale,
                        *zp,
                        *lo,
                        *hi,
                    )
                });
            }
            QKernel::QuantizeNhwc {
                x,
                y,
                n,
                c,
                hw,
                scale,
                zp,
                lo,
                hi,
            } => {
                let (px, py) = (st.ptrs[*x] as *const f32, p8(*y));
                // Blocks of 64 pixels: quantize each channel's run (SIMD
                // kernel), then interleave the channels.
                let mut t = [0u8; 64];
                let isa = self.isa;
                for b in 0..*n {
                    for q0 in (0..*hw).step_by(64) {
                        let len = 64.min(hw - q0);
                        for ci in 0..*c {
                            unsafe {
                                quantize_f32_u8(
                                    isa,
                                    px.add((b * c + ci) * hw + q0),
                                    t.as_mut_ptr(),
                                    0..len,
                                    *scale,
                                    *zp,
                                    *lo,
                                    *hi,
                                )
                            };
                            for (q, &v) in t[..len].iter().enumerate() {
                                unsafe { *py.add((b * hw + q0 + q) * c + ci) = v };
                            }
                        }
                    }
                }
            }
            QKernel::Dequantize { x, y, len, scale, zp } => {
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let parts = if *len < 65_536 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    dequantize_u8_f32(
                        isa,
                        px.get() as *const u8,
                        py.get(),
                        split_range(*len, parts, i),
                        *scale,
                        *zp,
                    )
                });
            }
            QKernel::Gemm { m, w, a, lda, y } => {
                let args = QGemmArgs {
                    m: *m,
                    a: p8(*a),
                    lda: *lda,
                    c: p8(*y),
                    ldc: w.n,
                };
                let mr = qtile_rows(w.isa);
                let panels = w.panels();
                let parts = if flops < 200_000 {
                    1
                } else {
                    threads.min(m.div_ceil(mr).max(panels))
                };
                let by_rows = *m >= 2 * mr * parts || panels < parts;
                pool.run(parts, &|i| unsafe {
                    if by_rows {
                        qgemm_u8_raw(&args, w, split_range(*m, parts, i), 0..panels);
                    } else {
                        qgemm_u8_raw(&args, w, 0..*m, split_range(panels, parts, i));
                    }
                });
            }
            QKernel::GemmAdd {
                m,
                w,
                a,
                lda,
                skip,
                gemm_first,
                y,
                p,
            } => {
                let blocks = m.div_ceil(GEMM_ADD_ROWS);
                let parts = if flops < 200_000 { 1 } else { threads.min(blocks) };
                let scratch = ScratchPtrs {
                    base: st.scratch.as_mut_ptr() as usize,
                };
                let (pa, ps, py) = (
                    SendPtr(st.ptrs[*a]),
                    SendPtr(st.ptrs[*skip]),
                    SendPtr(st.ptrs[*y]),
                );
                let words = scratch_words(k);
                let n = w.n;
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    let t = scratch.get(i % threads, words).as_mut_ptr() as *mut u8;
                    let rb = split_range(blocks, parts, i);
                    for blk in rb {
                        let r0 = blk * GEMM_ADD_ROWS;
                        let r1 = (r0 + GEMM_ADD_ROWS).min(*m);
                        let args = QGemmArgs {
                            m: r1 - r0,
                            a: (pa.get() as *const u8).add(r0 * lda),
                            lda: *lda,
                            c: t,
                            ldc: n,
                        };
                        qgemm_u8_raw(&args, w, 0..r1 - r0, 0..w.panels());
                        let s = (ps.get() as *const u8).add(r0 * n);
                        let (x0, x1) = if *gemm_first {
                            (t as *const u8, s)
                        } else {
                            (s, t as *const u8)
                        };
                        add_u8(
                            isa,
                            p,
                            x0,
                            x1,
                            (py.get() as *mut u8).add(r0 * n),
                            0..(r1 - r0) * n,
                        );
                    }
                });
            }
            QKernel::Im2col { g, zx, w, x, y } => {
                let pix = g.pixels();
                let parts = if flops < 200_000 {
                    1
                } else {
                    threads.min(pix.div_ceil(IM2COL_ROWS))
                };
                let scratch = ScratchPtrs {
                    base: st.scratch.as_mut_ptr() as usize,
                };
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let words = scratch_words(k);
                pool.run(parts, &|i| unsafe {
                    let s = scratch.get(i % threads, words);
                    let s8 = s.as_mut_ptr() as *mut u8;
                    let r = split_range(pix, parts, i);
                    let kk = im2col_seg(g) * g.kh;
                    let mut p0 = r.start;
                    while p0 < r.end {
                        let p1 = (p0 + IM2COL_ROWS).min(r.end);
                        im2col_u8(g, px.get() as *const u8, s8, p0..p1, *zx);
                        let args = QGemmArgs {
                            m: p1 - p0,
                            a: s8,
                            lda: kk,
                            c: (py.get() as *mut u8).add(p0 * g.co),
                            ldc: g.co,
                        };
                        qgemm_u8_raw(&args, w, 0..p1 - p0, 0..w.panels());
                        p0 = p1;
                    }
                });
            }
            QKernel::Dw { g, w, x, y } => {
                let rows = g.rows();
                let parts = if flops < 100_000 { 1 } else { threads.min(rows) };
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                pool.run(parts, &|i| unsafe {
                    qdwconv_u8_raw(
                        g,
                        w,
                        px.get() as *const u8,
                        py.get() as *mut u8,
                        split_range(rows, parts, i),
                    );
                });
            }
            QKernel::Add { a, b, y, len, p } => {
                let (pa, pb, py) = (SendPtr(st.ptrs[*a]), SendPtr(st.ptrs[*b]), SendPtr(st.ptrs[*y]));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    add_u8(
                        isa,
                        p,
                        pa.get() as *const u8,
                        pb.get() as *const u8,
                        py.get() as *mut u8,
                        split_range(*len, parts, i),
                    )
                });
            }
            QKernel::Mul { a, b, y, len, p } => {
                let (pa, pb, py) = (SendPtr(st.ptrs[*a]), SendPtr(st.ptrs[*b]), SendPtr(st.ptrs[*y]));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    mul_u8(
                        isa,
                        p,
                        pa.get() as *const u8,
                        pb.get() as *const u8,
                        py.get() as *mut u8,
                        split_range(*len, parts, i),
                    )
                });
            }
            QKernel::Upsample {
                x,
                y,
                n,
                h,
                w,
                c,
                fy,
                fx,
            } => {
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let rows = n * h * fy;
                let parts = threads.min(rows);
                pool.run(parts, &|i| unsafe {
                    kiln_kernels::layout::upsample_nearest_nhwc(
                        px.get() as *const u8,
                        py.get() as *mut u8,
                        (*h, *w, *c),
                        (*fy, *fx),
                        split_range(rows, parts, i),
                    );
                });
            }
            QKernel::Gap {
                x,
                y,
                n,
                hw,
                c,
                zx,
                rq,
            } => unsafe { global_avg_pool_u8(self.isa, p8(*x), p8(*y), *hw, *c, *zx, rq, 0..*n) },
            QKernel::Lut { x, y, len, table } => {
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let parts = if *len < 65_536 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    lut_u8(
                        isa,
                        table,
                        px.get() as *const u8,
                        py.get() as *mut u8,
                        split_range(*len, parts, i),
                    )
                });
            }
            QKernel::ChannelLut {
                x,
                y,
                n,
                c,
                hw,
                nhwc,
                tables,
            } => {
                let len = n * c * hw;
                // SAFETY: x and y are arena values of n * c * hw bytes (y may be x: in place).
                let (px, py) = (st.ptrs[*x] as *const u8, st.ptrs[*y] as *mut u8);
                if *nhwc {
                    for p in (0..len).step_by(*c) {
                        for (ch, t) in tables.iter().enumerate() {
                            unsafe { *py.add(p + ch) = t[*px.add(p + ch) as usize] };
                        }
                    }
                } else {
                    for (b, t) in (0..n * c).map(|b| (b, &tables[b % c])) {
                        unsafe { lut_u8(self.isa, t, px, py, b * hw..(b + 1) * hw) };
                    }
                }
            }
            QKernel::GateLut {
                x,
                g,
                y,
                n,
                c,
                hw,
                nhwc,
                table,
            } => {
                // SAFETY: x and y are arena values of n * c * hw bytes (y may
                // be x: in place), g of n * c bytes.
                let (px, pg, py) = (
                    st.ptrs[*x] as *const u8,
                    st.ptrs[*g] as *const u8,
                    st.ptrs[*y] as *mut u8,
                );
                for b in 0..*n {
                    let rows: Vec<&[u8; 256]> = (0..*c)
                        .map(|ch| &table[unsafe { *pg.add(b * c + ch) } as usize])
                        .collect();
                    let base = b * c * hw;
                    if *nhwc {
                        for p in (base..base + c * hw).step_by(*c) {
                            for (ch, t) in rows.iter().enumerate() {
                                unsafe { *py.add(p + ch) = t[*px.add(p + ch) as usize] };
                            }
                        }
                    } else {
                        for (ch, t) in rows.iter().enumerate() {
                            let r = base + ch * hw;
                            unsafe { lut_u8(self.isa, t, px, py, r..r + hw) };
                        }
                    }
                }
            }
            QKernel::ConcatC { xs, y, pixels, c } => {
                let py = p8(*y);
                let mut off = 0;
                for &(x, ci) in xs {
                    let px = p8(x) as *const u8;
                    for q in 0..*pixels {
                        unsafe { std::ptr::copy_nonoverlapping(px.add(q * ci), py.add(q * c + off), ci) };
                    }
                    off += ci;
                }
            }
            QKernel::MaxPool { g, x, y } => {
                let rows = g.n * g.oh;
                let (px, py) = (SendPtr(st.ptrs[*x]), SendPtr(st.ptrs[*y]));
                let parts = threads.min(rows);
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    maxpool_u8(
                        isa,
                        g,
                        px.get() as *const u8,
                        py.get() as *mut u8,
                        split_range(rows, parts, i),
                    )
                });
            }
            QKernel::Transpose {
                x,
                y,
                n,
                c,
                hw,
                to_nhwc,
            } => {
                let (px, py) = (p8(*x) as *const u8, p8(*y));
                for b in 0..*n {
                    for ci in 0..*c {
                        for q in 0..*hw {
                            unsafe {
                                let (src, dst) = if *to_nhwc {
                                    ((b * c + ci) * hw + q, (b * hw + q) * c + ci)
                                } else {
                                    ((b * hw + q) * c + ci, (b * c + ci) * hw + q)
                                };
                                *py.add(dst) = *px.add(src);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Bytes of one kernel row of an im2col row: `kw * ci` rounded up to 4.
fn im2col_seg(g: &ConvGeom) -> usize {
    (g.kw * g.ci).next_multiple_of(4)
}

/// im2col of output pixels `pix` into rows of `kh` segments of
/// [`im2col_seg`] bytes, each the `(kx, c)` taps of one kernel row (pad
/// bytes are don't-care: their weights are zero); taps outside the image
/// read the zero point `zx`. The buffer needs 16 bytes of slack at the end.
unsafe fn im2col_u8(g: &ConvGeom, x: *const u8, out: *mut u8, pix: Range<usize>, zx: u8) {
    let seg = im2col_seg(g);
    let k = seg * g.kh;
    let run = g.kw * g.ci;
    let total = g.n * g.h * g.w * g.ci;
    let (mut b, mut oy, mut ox) = (
        pix.start / (g.oh * g.ow),
        (pix.start / g.ow) % g.oh,
        pix.start % g.ow,
    );
    let (h, w) = (g.h as isize, g.w as isize);
    for r in 0..pix.len() {
        let row = out.add(r * k);
        let iy0 = (oy * g.sh) as isize - g.pt as isize;
        let ix0 = (ox * g.sw) as isize - g.pl as isize;
        let x_inside = ix0 >= 0 && ix0 + (((g.kw - 1) * g.dw) as isize) < w;
        let base = (b * g.h) as isize;
        for ky in 0..g.kh {
            let iy = iy0 + (ky * g.dh) as isize;
            let dst = row.add(ky * seg);
            if iy < 0 || iy >= h {
                std::ptr::write_bytes(dst, zx, run);
                continue;
            }
            let start = (((base + iy) * w + ix0.max(0)) as usize) * g.ci;
            if x_inside && g.dw == 1 {
                // One contiguous run of kw pixels.
                if run <= 16 && start + 16 <= total {
                    let v = (x.add(start) as *const [u8; 16]).read_unaligned();
                    (dst as *mut [u8; 16]).write_unaligned(v);
                } else {
                    std::ptr::copy_nonoverlapping(x.add(start), dst, run);
                }
                continue;
            }
            for kx in 0..g.kw {
                let ix = ix0 + (kx * g.dw) as isize;
                let d = dst.add(kx * g.ci);
                if ix < 0 || ix >= w {
                    std::ptr::write_bytes(d, zx, g.ci);
                } else {
                    let q = (((base + iy) * w + ix) as usize) * g.ci;
                    std::ptr::copy_nonoverlapping(x.add(q), d, g.ci);
                }
            }
        }
        ox += 1;
        if ox == g.ow {
            ox = 0;
            oy += 1;
            if oy == g.oh {
                oy = 0;
                b += 1;
            }
        }
    }
}
