//! Every op the foundation issue names is registered (the fixture models'
//! ops plus the listed extras), so a missing registration fails loudly.

/// Ops of the foundation issue: those EfficientNet-Lite0 and the three PP-OCR
/// models use, plus Flatten, LeakyRelu, PRelu, Tanh, Pad, ConstantOfShape, Dropout.
const REQUIRED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "MatMul",
    "Gemm",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Softmax",
    "ReduceMean",
    "Shape",
    "Gather",
    "Cast",
    "Constant",
    "Identity",
    "Flatten",
    "LeakyRelu",
    "PRelu",
    "Tanh",
    "Pad",
    "ConstantOfShape",
    "Dropout",
];

#[test]
fn every_required_op_is_registered() {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|op| kiln_ir::ops::lookup(op, "").is_none())
        .collect();
    assert!(missing.is_empty(), "ops not registered: {missing:?}");
    println!("{} ops registered in total", kiln_ir::ops::all_ops().count());
}
