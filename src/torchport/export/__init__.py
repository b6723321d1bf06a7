"""Turn a trained run into deployable artifacts: ONNX (any runtime) and an AOTInductor package (C++)."""
