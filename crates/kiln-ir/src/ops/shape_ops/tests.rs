//! Hand-computed cases for every shape op and per-opset form.

use crate::ops::{eval_node, lookup_node, InferInput, OpCtx};
use crate::{f16, Attribute, DType, Dim, Elem, ErrorKind, IrError, Node, Result, Tensor, ValueType};

fn t<T: Elem>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}
fn i64s(v: &[i64]) -> Tensor {
    t(&[v.len()], v.to_vec())
}
fn f32r(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    t(shape, (0..n).map(|i| i as f32).collect())
}
fn ints(v: &[i64]) -> Attribute {
    Attribute::Ints(v.to_vec())
}
fn int(v: i64) -> Attribute {
    Attribute::Int(v)
}
fn sym(s: &str) -> Dim {
    Dim::Sym(s.to_string())
}
fn k(n: usize) -> Dim {
    Dim::Known(n)
}

/// A node `n` of `op` with `nin` inputs (empty names where `skip`), `nout` outputs.
fn node(op: &str, nin: usize, nout: usize, attrs: &[(&str, Attribute)]) -> Node {
    let ins: Vec<String> = (0..nin).map(|i| format!("i{i}")).collect();
    let outs: Vec<String> = (0..nout).map(|i| format!("o{i}")).collect();
    let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
    let outs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
    let mut n = Node::new("n", op, &ins, &outs);
    for (a, v) in attrs {
        n = n.with_attr(a, v.clone());
    }
    n
}

fn run(n: &Node, opset: i64, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_node(n, opset, ins)
}
fn run1(n: &Node, opset: i64, ins: &[&Tensor]) -> Tensor {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
    run(n, opset, &ins).unwrap().remove(0)
}
fn err(n: &Node, opset: i64, ins: &[&Tensor]) -> IrError {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
    run(n, opset, &ins).unwrap_err()
}
fn infer(n: &Node, opset: i64, ins: &[Option<InferInput>]) -> Result<Vec<ValueType>> {
    let def = lookup_node(n, opset)?;
    let ctx = OpCtx { node: n, opset };
    let refs: Vec<Option<&InferInput>> = ins.iter().map(|i| i.as_ref()).collect();
    (def.infer)(&ctx, &refs)
}
fn infer1(n: &Node, opset: i64, ins: &[Option<InferInput>]) -> ValueType {
    infer(n, opset, ins).unwrap().remove(0)
}
/// A non-constant input of this type.
fn dynamic(dtype: DType, dims: Vec<Dim>) -> Option<InferInput> {
    Some(InferInput {
        ty: ValueType::new(dtype, dims),
        value: None,
    })
}
/// A constant input.
fn cst(t: &Tensor) -> Option<InferInput> {
    Some(InferInput {
        ty: ValueType::known(t.dtype(), t.shape()),
        value: Some(t.clone()),
    })
}
fn v<T: Elem>(t: &Tensor) -> Vec<T> {
    t.as_slice::<T>().unwrap().to_vec()
}
fn unknown(d: &Dim) -> bool {
    matches!(d, Dim::Sym(s) if s.starts_with("n:"))
}

// ---------------------------------------------------------------------------
// Registry

#[test]
fn all_ops_registered() {
    for (op, since) in [
        ("Reshape", 1),
        ("Transpose", 1),
        ("Concat", 1),
        ("Split", 1),
        ("Slice", 1),
        ("Squeeze", 1),
        ("Unsqueeze", 1),
        ("Flatten", 1),
        ("Shape", 1),
        ("Gather", 1),
        ("Cast", 1),
        ("CastLike", 15),
        ("Constant", 1),
        ("Identity", 1),
        ("Dropout", 1),
        ("Pad", 1),
        ("ConstantOfShape", 9),
        ("Expand", 8),
        ("Tile", 1),
        ("Range", 11),
    ] {
        let d = crate::ops::lookup(op, "").unwrap_or_else(|| panic!("{op} missing"));
        assert_eq!(d.since, since, "{op}");
    }
}

// ---------------------------------------------------------------------------
// Reshape

#[test]
fn reshape_zero_copies_and_minus_one() {
    let n = node("Reshape", 2, 1, &[]);
    let x = f32r(&[2, 3, 4]);
    let y = run1(&n, 13, &[&x, &i64s(&[4, 0, -1])]);
    assert_eq!(y.shape(), &[4, 3, 2]);
    assert_eq!(v::<f32>(&y), v::<f32>(&x));
    let y = run1(&n, 7, &[&x, &i64s(&[-1])]);
    assert_eq!(y.shape(), &[24]);
    // Works for every dtype.
    let b = t(&[2, 2], vec![true, false, false, true]);
    assert_eq!(run1(&n, 13, &[&b, &i64s(&[4])]).shape(), &[4]);
}

#[test]
fn reshape_allowzero() {
    let x = t(&[0, 2], Vec::<i8>::new());
    let n = node("Reshape", 2, 1, &[("allowzero", int(1))]);
    // allowzero = 1: 0 is a real zero.
    assert_eq!(run1(&n, 14, &[&x, &i64s(&[2, 0])]).shape(), &[2, 0]);
    // Before opset 14 the attribute does not exist: 0 copies dim 1 (= 2) -> 4 elements.
    assert_eq!(err(&n, 13, &[&x, &i64s(&[2, 0])]).kind, ErrorKind::ShapeMismatch);
    let n0 = node("Reshape", 2, 1, &[]);
    assert_eq!(err(&n0, 14, &[&x, &i64s(&[2, 0])]).kind, ErrorKind::ShapeMismatch);
    // 0 and -1 together with allowzero are invalid.
    assert_eq!(err(&n, 14, &[&x, &i64s(&[0, -1])]).kind, ErrorKind::ShapeMismatch);
}

#[test]
fn reshape_errors() {
    let n = node("Reshape", 2, 1, &[]);
    let x = f32r(&[2, 3]);
    assert_eq!(
        err(&n, 13, &[&x, &i64s(&[-1, -1])]).kind,
        ErrorKind::ShapeMismatch
    );
    assert_eq!(err(&n, 13, &[&x, &i64s(&[4, -1])]).kind, ErrorKind::ShapeMismatch);
    assert_eq!(err(&n, 13, &[&x, &i64s(&[5])]).kind, ErrorKind::ShapeMismatch);
    assert_eq!(err(&n, 13, &[&x, &i64s(&[2, -2])]).kind, ErrorKind::ShapeMismatch);
    assert_eq!(
        err(&n, 13, &[&x, &i64s(&[0, 0, 0])]).kind,
        ErrorKind::ShapeMismatch
    );
    let e = err(&n, 13, &[&x, &i64s(&[1 << 40, 1 << 40, 0])]);
    assert_eq!(e.node.as_deref(), Some("n"));
}

#[test]
fn reshape_infer_symbolic() {
    let n = node("Reshape", 2, 1, &[]);
    let x = dynamic(DType::F32, vec![sym("batch"), k(3), k(4)]);
    let ty = infer1(&n, 13, &[x.clone(), cst(&i64s(&[0, -1]))]);
    assert_eq!(ty.shape, Some(vec![sym("batch"), k(12)]));
    let x2 = dynamic(DType::F32, vec![sym("batch"), k(12)]);
    let ty = infer1(&n, 13, &[x2.clone(), cst(&i64s(&[-1, 3, 4]))]);
    assert_eq!(ty.shape, Some(vec![sym("batch"), k(3), k(4)]));
    let ty = infer1(&n, 13, &[x2, cst(&i64s(&[2, -1]))]);
    let s = ty.shape.unwrap();
    assert_eq!(s[0], k(2));
    assert!(unknown(&s[1]));
    let kx = dynamic(DType::F32, vec![k(2), k(3), k(4)]);
    assert_eq!(
        infer1(&n, 13, &[kx.clone(), cst(&i64s(&[-1, 4]))]).shape,
        Some(vec![k(6), k(4)])
    );
    assert!(infer(&n, 13, &[kx.clone(), cst(&i64s(&[5, -1]))]).is_err());
    // Computed shape input: rank from its static length.
    let ty = infer1(&n, 13, &[kx.clone(), dynamic(DType::I64, vec![k(3)])]);
    assert_eq!(ty.rank(), Some(3));
    assert!(ty.shape.unwrap().iter().all(unknown));
    let ty = infer1(&n, 13, &[kx, dynamic(DType::I64, vec![sym("r")])]);
    assert_eq!(ty.shape, None);
}

// ---------------------------------------------------------------------------
// Transpose

#[test]
fn transpose_default_and_perm() {
    let n = node("Transpose", 1, 1, &[]);
    let x = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
    let y = run1(&n, 13, &[&x]);
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(v::<i32>(&y), vec![1, 4, 2, 5, 3, 6]);
    let n = node("Transpose", 1, 1, &[("perm", ints(&[1, 2, 0]))]);
    let x = f32r(&[2, 3, 4]);
    let y = run1(&n, 13, &[&x]);
    assert_eq!(y.shape(), &[3, 4, 2]);
    let want: Vec<f32> = [
        0, 12, 1, 13, 2, 14, 3, 15, 4, 16, 5, 17, 6, 18, 7, 19, 8, 20, 9, 21, 10, 22, 11, 23,
    ]
    .iter()
    .map(|&i| i as f32)
    .collect();
    assert_eq!(v::<f32>(&y), want);
    // Scalar: identity.
    let s = Tensor::scalar(5u8);
    assert_eq!(run1(&node("Transpose", 1, 1, &[]), 13, &[&s]), s);
}

#[test]
fn transpose_bad_perm_and_infer() {
    let x = f32r(&[2, 3]);
    for p in [vec![0, 0], vec![0, 2], vec![0], vec![-1, 0]] {
        let n = node("Transpose", 1, 1, &[("perm", ints(&p))]);
        let e = err(&n, 13, &[&x]);
        assert_eq!(e.kind, ErrorKind::InvalidAttribute);
        assert_eq!(e.attr.as_deref(), Some("perm"));
    }
    let n = node("Transpose", 1, 1, &[("perm", ints(&[2, 0, 1]))]);
    let ty = infer1(&n, 13, &[dynamic(DType::F16, vec![sym("b"), k(3), sym("w")])]);
    assert_eq!(ty, ValueType::new(DType::F16, vec![sym("w"), sym("b"), k(3)]));
}

// ---------------------------------------------------------------------------
// Concat

#[test]
fn concat_axes() {
    let a = t(&[2, 1], vec![1i64, 2]);
    let b = t(&[2, 2], vec![3i64, 4, 5, 6]);
    let n = node("Concat", 2, 1, &[("axis", int(1))]);
    let y = run1(&n, 7, &[&a, &b]);
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(v::<i64>(&y), vec![1, 3, 4, 2, 5, 6]);
    let n = node("Concat", 2, 1, &[("axis", int(-1))]);
    assert_eq!(run1(&n, 11, &[&a, &b]), y);
    // Negative axis before opset 11 is invalid.
    assert_eq!(err(&n, 10, &[&a, &b]).attr.as_deref(), Some("axis"));
    let n0 = node("Concat", 2, 1, &[("axis", int(0))]);
    let y = run1(&n0, 13, &[&t(&[1, 2], vec![1i64, 2]), &b]);
    assert_eq!(v::<i64>(&y), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(err(&n0, 13, &[&a, &b]).kind, ErrorKind::ShapeMismatch);
    assert_eq!(err(&n0, 13, &[&a, &f32r(&[1, 1])]).kind, ErrorKind::TypeMismatch);
    // Empty inputs take part.
    let e = t(&[2, 0], Vec::<i64>::new());
    assert_eq!(run1(&n, 13, &[&e, &a]), a);
}

#[test]
fn concat_infer_keeps_symbols() {
    let n = node("Concat", 2, 1, &[("axis", int(1))]);
    let ty = infer1(
        &n,
        13,
        &[
            dynamic(DType::F32, vec![sym("b"), k(3)]),
            dynamic(DType::F32, vec![k(4), k(5)]),
        ],
    );
    assert_eq!(ty.shape, Some(vec![k(4), k(8)]));
    let ty = infer1(
        &n,
        13,
        &[
            dynamic(DType::F32, vec![sym("b"), k(3)]),
            dynamic(DType::F32, vec![sym("b"), sym("c")]),
        ],
    );
    let s = ty.shape.unwrap();
    assert_eq!(s[0], sym("b"));
    assert!(unknown(&s[1]));
}

// ---------------------------------------------------------------------------
// Split

#[test]
fn split_attribute_form() {
    let x = t(&[6], vec![1u8, 2, 3, 4, 5, 6]);
    let n = node("Split", 1, 2, &[("split", ints(&[2, 4]))]);
    let ys = run(&n, 11, &[Some(&x)]).unwrap();
    assert_eq!(v::<u8>(&ys[0]), vec![1, 2]);
    assert_eq!(v::<u8>(&ys[1]), vec![3, 4, 5, 6]);
    let n = node("Split", 1, 2, &[("split", ints(&[2, 3]))]);
    assert_eq!(err(&n, 11, &[&x]).attr.as_deref(), Some("split"));
    // Default: equal parts over the outputs.
    let n = node("Split", 1, 3, &[]);
    let ys = run(&n, 7, &[Some(&x)]).unwrap();
    assert_eq!(
        ys.iter().map(v::<u8>).collect::<Vec<_>>(),
        vec![vec![1, 2], vec![3, 4], vec![5, 6]]
    );
    let n = node("Split", 1, 4, &[]);
    assert_eq!(err(&n, 13, &[&x]).kind, ErrorKind::ShapeMismatch);
}

#[test]
fn split_input_form_and_axis() {
    let x = f32r(&[2, 3]);
    let n = node("Split", 2, 2, &[("axis", int(-1))]);
    let ys = run(&n, 13, &[Some(&x), Some(&i64s(&[1, 2]))]).unwrap();
    assert_eq!(ys[0].shape(), &[2, 1]);
    assert_eq!(v::<f32>(&ys[0]), vec![0., 3.]);
    assert_eq!(v::<f32>(&ys[1]), vec![1., 2., 4., 5.]);
    // Omitted optional split input: equal split.
    let n = node("Split", 1, 2, &[("axis", int(0))]);
    let ys = run(&n, 13, &[Some(&x), None]).unwrap();
    assert_eq!(v::<f32>(&ys[1]), vec![3., 4., 5.]);
    // Negative axis needs opset 11.
    let n = node("Split", 1, 3, &[("axis", int(-1))]);
    assert!(run(&n, 10, &[Some(&x)]).is_err());
    assert_eq!(run(&n, 11, &[Some(&x)]).unwrap().len(), 3);
}

#[test]
fn split_num_outputs_uneven() {
    let x = t(&[10], (0..10).collect::<Vec<i32>>());
    let n = node("Split", 1, 3, &[("num_outputs", int(3))]);
    let ys = run(&n, 18, &[Some(&x)]).unwrap();
    assert_eq!(ys.iter().map(|y| y.shape()[0]).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(v::<i32>(&ys[2]), vec![8, 9]);
    let x8 = f32r(&[2, 8]);
    let n = node("Split", 1, 3, &[("axis", int(1)), ("num_outputs", int(3))]);
    let ys = run(&n, 18, &[Some(&x8)]).unwrap();
    assert_eq!(v::<f32>(&ys[2]), vec![6., 7., 14., 15.]);
    // num_outputs must match the outputs; 5 into 4 chunks of 2 is impossible.
    let n = node("Split", 1, 2, &[("num_outputs", int(3))]);
    assert_eq!(err(&n, 18, &[&x]).attr.as_deref(), Some("num_outputs"));
    let n = node("Split", 1, 4, &[("num_outputs", int(4))]);
    assert_eq!(
        err(&n, 18, &[&t(&[5], vec![0i32; 5])]).kind,
        ErrorKind::ShapeMismatch
    );
    // Both split and num_outputs: invalid.
    let n = node("Split", 2, 3, &[("num_outputs", int(3))]);
    assert!(run(&n, 18, &[Some(&x), Some(&i64s(&[4, 4, 2]))]).is_err());
}

#[test]
fn split_infer() {
    let n = node("Split", 1, 3, &[("axis", int(1)), ("num_outputs", int(3))]);
    let tys = infer(&n, 18, &[dynamic(DType::F32, vec![sym("b"), k(10)])]).unwrap();
    assert_eq!(tys[0].shape, Some(vec![sym("b"), k(4)]));
    assert_eq!(tys[2].shape, Some(vec![sym("b"), k(2)]));
    let n = node("Split", 2, 2, &[]);
    let tys = infer(
        &n,
        13,
        &[dynamic(DType::F32, vec![sym("b")]), cst(&i64s(&[1, 2]))],
    )
    .unwrap();
    assert_eq!(tys[1].shape, Some(vec![k(2)]));
    let tys = infer(&n, 13, &[dynamic(DType::F32, vec![sym("b")]), None]).unwrap();
    assert!(unknown(&tys[0].shape.as_ref().unwrap()[0]));
}

// ---------------------------------------------------------------------------
// Slice

fn arange(n: i64) -> Tensor {
    t(&[n as usize], (0..n).collect::<Vec<i64>>())
}

#[test]
fn slice_inputs_clamp_and_steps() {
    let n = node("Slice", 5, 1, &[]);
    let x = arange(10);
    let go = |s: i64, e: i64, step: i64| {
        let y = run(
            &n,
            13,
            &[
                Some(&x),
                Some(&i64s(&[s])),
                Some(&i64s(&[e])),
                Some(&i64s(&[0])),
                Some(&i64s(&[step])),
            ],
        )
        .unwrap()
        .remove(0);
        v::<i64>(&y)
    };
    assert_eq!(go(-100, 1000, 3), vec![0, 3, 6, 9]);
    assert_eq!(go(100, -1000, -1), vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(go(8, 2, -2), vec![8, 6, 4]);
    assert_eq!(go(5, 3, 1), Vec::<i64>::new());
    assert_eq!(go(-1, i64::MIN, -1), (0..10).rev().collect::<Vec<_>>());
    assert_eq!(go(0, i64::MAX, 1), (0..10).collect::<Vec<_>>());
    assert_eq!(go(-3, -1, 1), vec![7, 8]);
    assert_eq!(go(i64::MIN, i64::MAX, i64::MAX), vec![0]);
    assert_eq!(go(i64::MAX, i64::MIN, i64::MIN), vec![9]);
    // INT64_MAX / INT32_MAX as end is "to the end", also when stepping back.
    assert_eq!(go(4, i64::MAX, -1), vec![4, 3, 2, 1, 0]);
    assert_eq!(go(-20, i64::MAX, -1), vec![0]);
    assert_eq!(go(9, i32::MAX as i64, -4), vec![9, 5, 1]);
    assert_eq!(go(2, i32::MAX as i64, 4), vec![2, 6]);
    // Other large ends are clamped per the spec.
    assert_eq!(go(4, 1 << 40, -1), Vec::<i64>::new());
    // step 0 is invalid.
    assert!(run(
        &n,
        13,
        &[
            Some(&x),
            Some(&i64s(&[0])),
            Some(&i64s(&[5])),
            None,
            Some(&i64s(&[0]))
        ]
    )
    .is_err());
}

#[test]
fn slice_multi_axis_negative_axes() {
    let x = f32r(&[3, 4]);
    let n = node("Slice", 4, 1, &[]);
    // axes [-1, 0]: columns 1..3, rows 2 down to 0 (step default 1 -> rows 0..2).
    let y = run(
        &n,
        11,
        &[
            Some(&x),
            Some(&i64s(&[1, 0])),
            Some(&i64s(&[3, 2])),
            Some(&i64s(&[-1, 0])),
        ],
    )
    .unwrap()
    .remove(0);
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(v::<f32>(&y), vec![1., 2., 5., 6.]);
    // Reverse both axes with steps.
    let n = node("Slice", 5, 1, &[]);
    let y = run(
        &n,
        13,
        &[
            Some(&x),
            Some(&i64s(&[-1, -1])),
            Some(&i64s(&[i64::MIN, i64::MIN])),
            None,
            Some(&i64s(&[-2, -3])),
        ],
    )
    .unwrap()
    .remove(0);
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(v::<f32>(&y), vec![11., 8., 3., 0.]);
    // Repeated axes are invalid.
    assert!(run(
        &n,
        13,
        &[
            Some(&x),
            Some(&i64s(&[0, 0])),
            Some(&i64s(&[1, 1])),
            Some(&i64s(&[1, -1]))
        ]
    )
    .is_err());
}

#[test]
fn slice_attribute_form_opset9() {
    let x = t(&[2, 4], vec![true, false, true, false, false, false, true, true]);
    let n = node(
        "Slice",
        1,
        1,
        &[
            ("starts", ints(&[1, 2])),
            ("ends", ints(&[1000, 4])),
            ("axes", ints(&[0, 1])),
        ],
    );
    let y = run1(&n, 9, &[&x]);
    assert_eq!(y.shape(), &[1, 2]);
    assert_eq!(v::<bool>(&y), vec![true, true]);
    // Without axes: the first len(starts) axes.
    let n = node("Slice", 1, 1, &[("starts", ints(&[0])), ("ends", ints(&[-1]))]);
    assert_eq!(run1(&n, 7, &[&x]).shape(), &[1, 4]);
    let n = node("Slice", 1, 1, &[("starts", ints(&[0]))]);
    assert_eq!(err(&n, 9, &[&x]).attr.as_deref(), Some("ends"));
}

#[test]
fn slice_infer() {
    let n = node("Slice", 3, 1, &[]);
    let x = dynamic(DType::F32, vec![sym("b"), k(10)]);
    let ty = infer1(
        &n,
        13,
        &[x.clone(), cst(&i64s(&[0, 2])), cst(&i64s(&[i64::MAX, -2]))],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), k(6)]));
    let n4 = node("Slice", 4, 1, &[]);
    let ty = infer1(
        &n4,
        13,
        &[
            x.clone(),
            dynamic(DType::I64, vec![k(1)]),
            dynamic(DType::I64, vec![k(1)]),
            cst(&i64s(&[1])),
        ],
    );
    let s = ty.shape.unwrap();
    assert_eq!(s[0], sym("b"));
    assert!(unknown(&s[1]));
    let ty = infer1(&n, 13, &[x, cst(&i64s(&[1])), cst(&i64s(&[2]))]);
    let s = ty.shape.unwrap();
    assert!(unknown(&s[0]));
    assert_eq!(s[1], k(10));
}

// ---------------------------------------------------------------------------
// Squeeze / Unsqueeze

#[test]
fn squeeze_forms() {
    let x = f32r(&[1, 3, 1, 2]);
    let n = node("Squeeze", 1, 1, &[("axes", ints(&[0, -2]))]);
    assert_eq!(run1(&n, 11, &[&x]).shape(), &[3, 2]);
    assert_eq!(err(&n, 10, &[&x]).attr.as_deref(), Some("axes"));
    let n = node("Squeeze", 1, 1, &[("axes", ints(&[2]))]);
    assert_eq!(run1(&n, 7, &[&x]).shape(), &[1, 3, 2]);
    let n = node("Squeeze", 1, 1, &[]);
    assert_eq!(run1(&n, 7, &[&x]).shape(), &[3, 2]);
    assert_eq!(run1(&n, 13, &[&x]).shape(), &[3, 2]);
    let n = node("Squeeze", 2, 1, &[]);
    assert_eq!(run1(&n, 13, &[&x, &i64s(&[2])]).shape(), &[1, 3, 2]);
    assert_eq!(err(&n, 13, &[&x, &i64s(&[1])]).kind, ErrorKind::ShapeMismatch);
    let ty = infer1(
        &n,
        13,
        &[dynamic(DType::F32, vec![sym("b"), k(1)]), cst(&i64s(&[1]))],
    );
    assert_eq!(ty.shape, Some(vec![sym("b")]));
    let n = node("Squeeze", 1, 1, &[]);
    assert_eq!(
        infer1(&n, 13, &[dynamic(DType::F32, vec![sym("b"), k(1)])]).shape,
        None
    );
    assert_eq!(
        infer1(&n, 13, &[dynamic(DType::F32, vec![k(1), k(4), k(1)])]).shape,
        Some(vec![k(4)])
    );
}

#[test]
fn unsqueeze_forms() {
    let x = t(&[3], vec![f16::from_f32(1.0); 3]);
    let n = node("Unsqueeze", 1, 1, &[("axes", ints(&[0, -1]))]);
    assert_eq!(run1(&n, 11, &[&x]).shape(), &[1, 3, 1]);
    assert!(run(&n, 10, &[Some(&x)]).is_err());
    let n = node("Unsqueeze", 1, 1, &[("axes", ints(&[2, 0]))]);
    assert_eq!(run1(&n, 7, &[&x]).shape(), &[1, 3, 1]);
    let n = node("Unsqueeze", 2, 1, &[]);
    assert_eq!(run1(&n, 13, &[&x, &i64s(&[1])]).shape(), &[3, 1]);
    assert_eq!(run1(&n, 13, &[&Tensor::scalar(1i64), &i64s(&[0])]).shape(), &[1]);
    assert!(run(&n, 13, &[Some(&x), Some(&i64s(&[0, 0]))]).is_err());
    assert!(run(&n, 13, &[Some(&x), Some(&i64s(&[3]))]).is_err());
    assert!(run(&n, 13, &[Some(&x), None]).is_err());
    let ty = infer1(
        &n,
        13,
        &[dynamic(DType::F32, vec![sym("b"), k(3)]), cst(&i64s(&[0, 2]))],
    );
    assert_eq!(ty.shape, Some(vec![k(1), sym("b"), k(1), k(3)]));
}

// ---------------------------------------------------------------------------
// Flatten, Shape, Identity

#[test]
fn flatten_axes() {
    let x = f32r(&[2, 3, 4]);
    let f = |a: i64, opset: i64| {
        run(&node("Flatten", 1, 1, &[("axis", int(a))]), opset, &[Some(&x)])
            .map(|mut y| y.remove(0).shape().to_vec())
    };
    assert_eq!(f(0, 9).unwrap(), vec![1, 24]);
    assert_eq!(f(2, 9).unwrap(), vec![6, 4]);
    assert_eq!(f(3, 9).unwrap(), vec![24, 1]);
    assert_eq!(f(-1, 11).unwrap(), vec![6, 4]);
    assert_eq!(f(-3, 13).unwrap(), vec![1, 24]);
    assert!(f(-1, 9).is_err());
    assert!(f(4, 13).is_err());
    assert_eq!(run1(&node("Flatten", 1, 1, &[]), 7, &[&x]).shape(), &[2, 12]);
    let ty = infer1(
        &node("Flatten", 1, 1, &[]),
        13,
        &[dynamic(DType::F32, vec![sym("b"), k(3), k(4)])],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), k(12)]));
}

#[test]
fn shape_start_end() {
    let x = f32r(&[2, 3, 4, 5]);
    let y = run1(&node("Shape", 1, 1, &[]), 13, &[&x]);
    assert_eq!(v::<i64>(&y), vec![2, 3, 4, 5]);
    let n = node("Shape", 1, 1, &[("start", int(1)), ("end", int(-1))]);
    assert_eq!(v::<i64>(&run1(&n, 15, &[&x])), vec![3, 4]);
    // Before 15 the attributes do not exist.
    assert_eq!(v::<i64>(&run1(&n, 14, &[&x])), vec![2, 3, 4, 5]);
    let n = node("Shape", 1, 1, &[("start", int(-10)), ("end", int(10))]);
    assert_eq!(v::<i64>(&run1(&n, 15, &[&x])), vec![2, 3, 4, 5]);
    let n = node("Shape", 1, 1, &[("start", int(3)), ("end", int(1))]);
    assert_eq!(run1(&n, 15, &[&x]).shape(), &[0]);
    let ty = infer1(
        &node("Shape", 1, 1, &[]),
        13,
        &[dynamic(DType::F32, vec![sym("b"), k(3)])],
    );
    assert_eq!(ty, ValueType::known(DType::I64, &[2]));
}

#[test]
fn identity_any_dtype() {
    let x = t(&[2], vec![-1i8, 7]);
    assert_eq!(run1(&node("Identity", 1, 1, &[]), 13, &[&x]), x);
}

// ---------------------------------------------------------------------------
// Gather

#[test]
fn gather_axis0_and_2d_indices() {
    let x = t(&[3, 2], vec![1.0f32, 1.2, 2.3, 3.4, 4.5, 5.7]);
    let idx = t(&[2, 2], vec![0i64, 1, 1, 2]);
    let y = run1(&node("Gather", 2, 1, &[]), 13, &[&x, &idx]);
    assert_eq!(y.shape(), &[2, 2, 2]);
    assert_eq!(v::<f32>(&y), vec![1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7]);
}

#[test]
fn gather_axis1_negative_indices() {
    let x = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
    let idx = t(&[2], vec![-1i32, 0]);
    let n = node("Gather", 2, 1, &[("axis", int(-1))]);
    let y = run1(&n, 13, &[&x, &idx]);
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(v::<i64>(&y), vec![3, 1, 6, 4]);
    // Scalar index drops the axis.
    let y = run1(
        &node("Gather", 2, 1, &[("axis", int(1))]),
        13,
        &[&x, &Tensor::scalar(1i64)],
    );
    assert_eq!(y.shape(), &[2]);
    assert_eq!(v::<i64>(&y), vec![2, 5]);
}

#[test]
fn gather_out_of_range_is_an_error() {
    let x = t(&[2, 3], vec![true; 6]);
    let n = node("Gather", 2, 1, &[("axis", int(1))]);
    for bad in [3i64, -4, i64::MAX, i64::MIN] {
        let e = err(&n, 13, &[&x, &t(&[1], vec![bad])]);
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}");
    }
    assert_eq!(
        err(&n, 13, &[&x, &t(&[1], vec![0f32])]).kind,
        ErrorKind::TypeMismatch
    );
    let n = node("Gather", 2, 1, &[("axis", int(2))]);
    assert_eq!(
        err(&n, 13, &[&x, &t(&[1], vec![0i64])]).kind,
        ErrorKind::InvalidAttribute
    );
    let n = node("Gather", 2, 1, &[("axis", int(1))]);
    assert!(infer(&n, 13, &[cst(&x), cst(&t(&[1], vec![3i64]))]).is_err());
}

#[test]
fn gather_infer() {
    let n = node("Gather", 2, 1, &[("axis", int(1))]);
    let ty = infer1(
        &n,
        13,
        &[
            dynamic(DType::F32, vec![sym("b"), k(5), k(7)]),
            dynamic(DType::I64, vec![sym("q"), k(2)]),
        ],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), sym("q"), k(2), k(7)]));
}

// ---------------------------------------------------------------------------
// Cast, CastLike

#[test]
fn cast_codes() {
    let x = t(&[4], vec![1.7f32, -1.7, 0.0, 300.0]);
    let c = |to: i64| run1(&node("Cast", 1, 1, &[("to", int(to))]), 13, &[&x]);
    assert_eq!(v::<i64>(&c(7)), vec![1, -1, 0, 300]);
    assert_eq!(v::<i32>(&c(6)), vec![1, -1, 0, 300]);
    assert_eq!(v::<bool>(&c(9)), vec![true, true, false, true]);
    assert_eq!(c(10).dtype(), DType::F16);
    assert_eq!(v::<f16>(&c(10))[3], f16::from_f32(300.0));
    assert_eq!(c(1), x);
    assert_eq!(c(3).dtype(), DType::I8);
    assert_eq!(c(2).dtype(), DType::U8);
    let b = t(&[2], vec![true, false]);
    assert_eq!(
        v::<f32>(&run1(&node("Cast", 1, 1, &[("to", int(1))]), 13, &[&b])),
        vec![1.0, 0.0]
    );
}

#[test]
fn cast_unsupported_codes_name_to() {
    let x = f32r(&[2]);
    for (code, kind) in [
        (8, ErrorKind::UnsupportedOp),
        (11, ErrorKind::UnsupportedOp),
        (16, ErrorKind::UnsupportedOp),
        (0, ErrorKind::InvalidAttribute),
        (99, ErrorKind::InvalidAttribute),
    ] {
        let n = node("Cast", 1, 1, &[("to", int(code))]);
        let e = err(&n, 13, &[&x]);
        assert_eq!(e.kind, kind, "{code}");
        assert_eq!(e.attr.as_deref(), Some("to"));
        let e = infer(&n, 13, &[cst(&x)]).unwrap_err();
        assert_eq!(e.attr.as_deref(), Some("to"));
    }
    assert_eq!(
        err(&node("Cast", 1, 1, &[]), 13, &[&x]).attr.as_deref(),
        Some("to")
    );
    let ty = infer1(
        &node("Cast", 1, 1, &[("to", int(7))]),
        13,
        &[dynamic(DType::F32, vec![sym("b")])],
    );
    assert_eq!(ty, ValueType::new(DType::I64, vec![sym("b")]));
}

#[test]
fn cast_like() {
    let x = t(&[2], vec![2.5f32, -0.5]);
    let y = run1(
        &node("CastLike", 2, 1, &[]),
        15,
        &[&x, &t(&[0], Vec::<i32>::new())],
    );
    assert_eq!(v::<i32>(&y), vec![2, 0]);
    assert!(lookup_node(&node("CastLike", 2, 1, &[]), 14).is_err());
}

// ---------------------------------------------------------------------------
// Constant

#[test]
fn constant_forms() {
    let c = |a: &str, v: Attribute| run(&node("Constant", 0, 1, &[(a, v)]), 13, &[]);
    let tv = t(&[2], vec![3u8, 4]);
    assert_eq!(c("value", Attribute::Tensor(tv.clone())).unwrap()[0], tv);
    assert_eq!(
        c("value_float", Attribute::Float(1.5)).unwrap()[0],
        Tensor::scalar(1.5f32)
    );
    assert_eq!(
        c("value_floats", Attribute::Floats(vec![1.0, 2.0])).unwrap()[0],
        t(&[2], vec![1f32, 2.0])
    );
    assert_eq!(c("value_int", int(7)).unwrap()[0], Tensor::scalar(7i64));
    assert_eq!(c("value_ints", ints(&[1, 2, 3])).unwrap()[0], i64s(&[1, 2, 3]));
    let e = c("value_string", Attribute::String(b"hi".to_vec())).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedOp);
    assert_eq!(e.attr.as_deref(), Some("value_string"));
    let e = c("sparse_value", int(0)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedOp);
    assert_eq!(c("value", int(1)).unwrap_err().kind, ErrorKind::InvalidAttribute);
    assert!(run(&node("Constant", 0, 1, &[]), 13, &[]).is_err());
    let two = node(
        "Constant",
        0,
        1,
        &[("value_int", int(1)), ("value_float", Attribute::Float(1.0))],
    );
    assert!(run(&two, 13, &[]).is_err());
    let ty = infer1(&node("Constant", 0, 1, &[("value_ints", ints(&[1, 2]))]), 13, &[]);
    assert_eq!(ty, ValueType::known(DType::I64, &[2]));
}

// ---------------------------------------------------------------------------
// Dropout

#[test]
fn dropout_inference() {
    let x = t(&[2], vec![0.5f32, -1.0]);
    let n = node("Dropout", 1, 2, &[("ratio", Attribute::Float(0.3))]);
    let ys = run(&n, 7, &[Some(&x)]).unwrap();
    assert_eq!(ys[0], x);
    assert_eq!(ys[1], t(&[2], vec![1f32, 1.0]));
    let ys = run(&n, 10, &[Some(&x)]).unwrap();
    assert_eq!(ys[1], t(&[2], vec![true, true]));
    let n = node("Dropout", 3, 2, &[]);
    let ys = run(
        &n,
        13,
        &[
            Some(&x),
            Some(&Tensor::scalar(0.5f32)),
            Some(&Tensor::scalar(false)),
        ],
    )
    .unwrap();
    assert_eq!(ys[0], x);
    assert_eq!(ys[1].dtype(), DType::Bool);
    let e = run(&n, 13, &[Some(&x), None, Some(&Tensor::scalar(true))]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedOp);
    assert!(infer(&n, 13, &[cst(&x), None, cst(&Tensor::scalar(true))]).is_err());
    let tys = infer(&n, 12, &[dynamic(DType::F16, vec![sym("b")]), None, None]).unwrap();
    assert_eq!(tys[1], ValueType::new(DType::Bool, vec![sym("b")]));
    assert_eq!(
        run(&node("Dropout", 1, 1, &[]), 13, &[Some(&x)]).unwrap().len(),
        1
    );
}

// ---------------------------------------------------------------------------
// Pad

fn x23() -> Tensor {
    t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6])
}

#[test]
fn pad_constant_input_form() {
    let n = node("Pad", 3, 1, &[]);
    let y = run1(&n, 11, &[&x23(), &i64s(&[1, 0, 1, 0]), &Tensor::scalar(9i32)]);
    assert_eq!(y.shape(), &[4, 3]);
    assert_eq!(v::<i32>(&y), vec![9, 9, 9, 1, 2, 3, 4, 5, 6, 9, 9, 9]);
    // Omitted constant_value: zero.
    let y = run(&n, 13, &[Some(&x23()), Some(&i64s(&[0, 1, 0, 0])), None])
        .unwrap()
        .remove(0);
    assert_eq!(v::<i32>(&y), vec![0, 1, 2, 3, 0, 4, 5, 6]);
    // constant_value of another type.
    assert_eq!(
        err(&n, 13, &[&x23(), &i64s(&[0, 1, 0, 0]), &Tensor::scalar(1f32)]).kind,
        ErrorKind::TypeMismatch
    );
    assert_eq!(
        err(&n, 13, &[&x23(), &i64s(&[0, 1]), &Tensor::scalar(1i32)]).kind,
        ErrorKind::ShapeMismatch
    );
}

#[test]
fn pad_attribute_form_opset7() {
    let x = t(&[1, 2], vec![1.0f32, 2.0]);
    let n = node(
        "Pad",
        1,
        1,
        &[("pads", ints(&[0, 1, 0, 2])), ("value", Attribute::Float(-1.0))],
    );
    let y = run1(&n, 7, &[&x]);
    assert_eq!(v::<f32>(&y), vec![-1.0, 1.0, 2.0, -1.0, -1.0]);
    let n = node("Pad", 1, 1, &[("value", Attribute::Float(-1.0))]);
    assert_eq!(err(&n, 7, &[&x]).attr.as_deref(), Some("pads"));
}

#[test]
fn pad_reflect_edge_wrap() {
    let pads = i64s(&[0, 2, 0, 1]);
    let r = |mode: &str, opset: i64, pads: &Tensor| {
        let n = node(
            "Pad",
            2,
            1,
            &[("mode", Attribute::String(mode.as_bytes().to_vec()))],
        );
        run(&n, opset, &[Some(&x23()), Some(pads)]).map(|mut y| y.remove(0))
    };
    let y = r("reflect", 11, &pads).unwrap();
    assert_eq!(y.shape(), &[2, 6]);
    assert_eq!(v::<i32>(&y), vec![3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5]);
    let y = r("edge", 11, &i64s(&[1, 1, 0, 1])).unwrap();
    assert_eq!(v::<i32>(&y), vec![1, 1, 2, 3, 3, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6]);
    let y = r("wrap", 19, &i64s(&[0, 2, 0, 3])).unwrap();
    assert_eq!(v::<i32>(&y), vec![2, 3, 1, 2, 3, 1, 2, 3, 5, 6, 4, 5, 6, 4, 5, 6]);
    assert_eq!(r("wrap", 18, &pads).unwrap_err().attr.as_deref(), Some("mode"));
    assert_eq!(r("mirror", 18, &pads).unwrap_err().attr.as_deref(), Some("mode"));
    // Reflect pads may not exceed dim - 1.
    assert!(r("reflect", 11, &i64s(&[0, 3, 0, 0])).is_err());
    assert!(r("reflect", 11, &i64s(&[2, 0, 0, 0])).is_err());
}

#[test]
fn pad_negative_crops() {
    let n = node("Pad", 2, 1, &[]);
    let y = run1(&n, 11, &[&x23(), &i64s(&[0, -1, -1, 1])]);
    assert_eq!(y.shape(), &[1, 3]);
    assert_eq!(v::<i32>(&y), vec![2, 3, 0]);
    // Crop then reflect on the cropped data.
    let n = node("Pad", 2, 1, &[("mode", Attribute::String(b"reflect".to_vec()))]);
    let y = run1(&n, 11, &[&x23(), &i64s(&[0, -1, 0, 1])]);
    assert_eq!(v::<i32>(&y), vec![2, 3, 2, 5, 6, 5]);
    let n = node("Pad", 2, 1, &[]);
    assert_eq!(
        err(&n, 11, &[&x23(), &i64s(&[0, -2, 0, -2])]).kind,
        ErrorKind::ShapeMismatch
    );
}

#[test]
fn pad_axes_opset18() {
    let n = node("Pad", 4, 1, &[]);
    let y = run(
        &n,
        18,
        &[
            Some(&x23()),
            Some(&i64s(&[1, 0])),
            Some(&Tensor::scalar(7i32)),
            Some(&i64s(&[-1])),
        ],
    )
    .unwrap()
    .remove(0);
    assert_eq!(y.shape(), &[2, 4]);
    assert_eq!(v::<i32>(&y), vec![7, 1, 2, 3, 7, 4, 5, 6]);
    let ty = infer1(
        &n,
        18,
        &[
            dynamic(DType::I32, vec![sym("b"), k(3)]),
            cst(&i64s(&[1, 0])),
            None,
            cst(&i64s(&[1])),
        ],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), k(4)]));
}

#[test]
fn pad_limits() {
    let n = node("Pad", 2, 1, &[]);
    let e = err(&n, 11, &[&x23(), &i64s(&[0, 0, 1 << 40, 1 << 40])]);
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    let e = err(&n, 11, &[&x23(), &i64s(&[0, 0, i64::MAX, i64::MAX])]);
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
}

// ---------------------------------------------------------------------------
// ConstantOfShape, Expand, Tile, Range

#[test]
fn constant_of_shape() {
    let n = node("ConstantOfShape", 1, 1, &[]);
    let y = run1(&n, 9, &[&i64s(&[2, 3])]);
    assert_eq!(y, Tensor::zeros(DType::F32, vec![2, 3]).unwrap());
    let n = node(
        "ConstantOfShape",
        1,
        1,
        &[("value", Attribute::Tensor(t(&[1], vec![5i64])))],
    );
    let y = run1(&n, 9, &[&i64s(&[2])]);
    assert_eq!(v::<i64>(&y), vec![5, 5]);
    let y = run1(&n, 9, &[&t(&[0], Vec::<i64>::new())]);
    assert_eq!(y.shape(), &[] as &[usize]);
    assert_eq!(v::<i64>(&y), vec![5]);
    assert_eq!(
        err(&n, 9, &[&i64s(&[1 << 20, 1 << 20])]).kind,
        ErrorKind::LimitExceeded
    );
    assert_eq!(err(&n, 9, &[&i64s(&[-1])]).kind, ErrorKind::ShapeMismatch);
    let n2 = node(
        "ConstantOfShape",
        1,
        1,
        &[("value", Attribute::Tensor(t(&[2], vec![1i64, 2])))],
    );
    assert_eq!(err(&n2, 9, &[&i64s(&[2])]).attr.as_deref(), Some("value"));
    let ty = infer1(&n, 9, &[dynamic(DType::I64, vec![k(3)])]);
    assert_eq!(ty.dtype, DType::I64);
    assert_eq!(ty.rank(), Some(3));
}

#[test]
fn expand() {
    let n = node("Expand", 2, 1, &[]);
    let x = t(&[3, 1], vec![1u8, 2, 3]);
    let y = run1(&n, 13, &[&x, &i64s(&[2, 1, 2])]);
    assert_eq!(y.shape(), &[2, 3, 2]);
    assert_eq!(v::<u8>(&y), vec![1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
    // Shape smaller than the input keeps the input's dims.
    let y = run1(&n, 13, &[&x, &i64s(&[1])]);
    assert_eq!(y.shape(), &[3, 1]);
    assert_eq!(err(&n, 13, &[&x, &i64s(&[2, 2])]).kind, ErrorKind::ShapeMismatch);
    assert_eq!(
        err(&n, 13, &[&x, &i64s(&[1 << 30, 3, 4])]).kind,
        ErrorKind::LimitExceeded
    );
    let ty = infer1(
        &n,
        13,
        &[dynamic(DType::U8, vec![sym("b"), k(1)]), cst(&i64s(&[1, 4]))],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), k(4)]));
}

#[test]
fn tile() {
    let n = node("Tile", 2, 1, &[]);
    let x = t(&[2, 2], vec![1i64, 2, 3, 4]);
    let y = run1(&n, 13, &[&x, &i64s(&[2, 1])]);
    assert_eq!(y.shape(), &[4, 2]);
    assert_eq!(v::<i64>(&y), vec![1, 2, 3, 4, 1, 2, 3, 4]);
    let y = run1(&n, 7, &[&x, &i64s(&[1, 2])]);
    assert_eq!(v::<i64>(&y), vec![1, 2, 1, 2, 3, 4, 3, 4]);
    assert_eq!(run1(&n, 7, &[&x, &i64s(&[0, 2])]).shape(), &[0, 4]);
    assert_eq!(err(&n, 13, &[&x, &i64s(&[2])]).kind, ErrorKind::ShapeMismatch);
    assert!(run(&n, 13, &[Some(&x), Some(&i64s(&[-1, 1]))]).is_err());
    assert_eq!(
        err(&n, 13, &[&x, &i64s(&[1 << 31, 1 << 31])]).kind,
        ErrorKind::LimitExceeded
    );
    let ty = infer1(
        &n,
        13,
        &[dynamic(DType::I64, vec![sym("b"), k(2)]), cst(&i64s(&[1, 3]))],
    );
    assert_eq!(ty.shape, Some(vec![sym("b"), k(6)]));
}

#[test]
fn range() {
    let n = node("Range", 3, 1, &[]);
    let r = |a: Tensor, b: Tensor, c: Tensor| run(&n, 11, &[Some(&a), Some(&b), Some(&c)]);
    let y = r(Tensor::scalar(3i64), Tensor::scalar(9i64), Tensor::scalar(3i64))
        .unwrap()
        .remove(0);
    assert_eq!(v::<i64>(&y), vec![3, 6]);
    let y = r(Tensor::scalar(10i32), Tensor::scalar(4i32), Tensor::scalar(-3i32))
        .unwrap()
        .remove(0);
    assert_eq!(v::<i32>(&y), vec![10, 7]);
    let y = r(
        Tensor::scalar(1.0f32),
        Tensor::scalar(2.0f32),
        Tensor::scalar(0.25f32),
    )
    .unwrap()
    .remove(0);
    assert_eq!(v::<f32>(&y), vec![1.0, 1.25, 1.5, 1.75]);
    let y = r(Tensor::scalar(5i64), Tensor::scalar(1i64), Tensor::scalar(1i64))
        .unwrap()
        .remove(0);
    assert_eq!(y.shape(), &[0]);
    assert!(r(Tensor::scalar(0i64), Tensor::scalar(5i64), Tensor::scalar(0i64)).is_err());
    let e = r(
        Tensor::scalar(0i64),
        Tensor::scalar(i64::MAX),
        Tensor::scalar(1i64),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert!(r(Tensor::scalar(0i64), Tensor::scalar(5i32), Tensor::scalar(1i64)).is_err());
    let ty = infer1(
        &n,
        11,
        &[
            cst(&Tensor::scalar(0i64)),
            cst(&Tensor::scalar(10i64)),
            cst(&Tensor::scalar(4i64)),
        ],
    );
    assert_eq!(ty, ValueType::known(DType::I64, &[3]));
    assert!(lookup_node(&n, 10).is_err());
}

// ---------------------------------------------------------------------------
// Adversarial values: errors, never panics.

const EXTREMES: [i64; 11] = [
    i64::MIN,
    i64::MIN + 1,
    -(1 << 40),
    -7,
    -2,
    -1,
    0,
    1,
    3,
    1 << 40,
    i64::MAX,
];

#[test]
fn extreme_integer_inputs_never_panic() {
    let x = f32r(&[2, 3]);
    let empty = t(&[0, 3], Vec::<f32>::new());
    let sym_x = dynamic(DType::F32, vec![sym("b"), k(3)]);
    let cases: Vec<(&str, usize, i64)> = vec![
        ("Reshape", 2, 14),
        ("Slice", 5, 13),
        ("Pad", 2, 19),
        ("Tile", 2, 13),
        ("Expand", 2, 13),
        ("Gather", 2, 13),
        ("Squeeze", 2, 13),
        ("Unsqueeze", 2, 13),
        ("Split", 2, 13),
        ("ConstantOfShape", 1, 20),
    ];
    for (op, nin, opset) in cases {
        for &a in &EXTREMES {
            for &b in &EXTREMES {
                for input in [&x, &empty] {
                    let pair = i64s(&[a, b]);
                    let quad = i64s(&[a, b, b, a]);
                    let one = i64s(&[a]);
                    let oneb = i64s(&[b]);
                    let n = node(op, nin, if op == "Split" { 2 } else { 1 }, &[]);
                    let ins: Vec<Option<&Tensor>> = match op {
                        "Slice" => vec![Some(input), Some(&one), Some(&oneb), Some(&oneb), Some(&one)],
                        "Pad" => vec![Some(input), Some(&quad)],
                        "ConstantOfShape" => vec![Some(&pair)],
                        "Gather" => vec![Some(input), Some(&pair)],
                        "Squeeze" | "Unsqueeze" => vec![Some(input), Some(&one)],
                        _ => vec![Some(input), Some(&pair)],
                    };
                    let _ = run(&n, opset, &ins);
                    let iins: Vec<Option<InferInput>> = ins.iter().map(|t| t.and_then(cst)).collect();
                    let _ = infer(&n, opset, &iins);
                    let mut iins2 = iins.clone();
                    if op != "ConstantOfShape" {
                        iins2[0] = sym_x.clone();
                    }
                    let _ = infer(&n, opset, &iins2);
                }
            }
            // Attribute forms.
            for (op, attr, val) in [
                ("Transpose", "perm", ints(&[a, 0])),
                ("Concat", "axis", int(a)),
                ("Flatten", "axis", int(a)),
                ("Gather", "axis", int(a)),
                ("Split", "axis", int(a)),
                ("Split", "split", ints(&[a, 3i64.wrapping_sub(a)])),
                ("Shape", "start", int(a)),
                ("Shape", "end", int(a)),
                ("Cast", "to", int(a)),
                ("Squeeze", "axes", ints(&[a])),
                ("Unsqueeze", "axes", ints(&[a])),
                ("Slice", "starts", ints(&[a])),
            ] {
                let n = node(
                    op,
                    1,
                    1,
                    &[(attr, val.clone()), ("ends", ints(&[a])), ("num_outputs", int(a))],
                );
                let _ = run(&n, 11, &[Some(&x), Some(&x)]);
                let _ = run(&n, 18, &[Some(&x)]);
                let _ = infer(&n, 11, &[sym_x.clone(), sym_x.clone()]);
            }
        }
    }
    for mode in ["reflect", "edge", "wrap"] {
        let n = node(
            "Pad",
            2,
            1,
            &[("mode", Attribute::String(mode.as_bytes().to_vec()))],
        );
        for &a in &EXTREMES {
            for &b in &EXTREMES {
                for input in [&x, &empty] {
                    for p in [i64s(&[a, b, b, a]), i64s(&[0, a, 0, b]), i64s(&[a, 0, b, 0])] {
                        let _ = run(&n, 19, &[Some(input), Some(&p)]);
                    }
                }
            }
        }
    }
    let n = node("Range", 3, 1, &[]);
    for &a in &EXTREMES {
        for &b in &EXTREMES {
            for &c in &EXTREMES {
                let (a, b, c) = (Tensor::scalar(a), Tensor::scalar(b), Tensor::scalar(c));
                if let Ok(y) = run(&n, 11, &[Some(&a), Some(&b), Some(&c)]) {
                    assert!(y[0].len() <= super::MAX_ELEMS);
                }
            }
        }
    }
}
