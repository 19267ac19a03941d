//! Shared dense linear-algebra routines of the reference ops (GEMM used by
//! Conv, ConvTranspose, MatMul and Gemm).
