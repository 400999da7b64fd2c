"""Names of the weight formats, importable without torch (the CLI parses with them)."""

WEIGHTS = ("auto", "fp32")
"""auto: a GGUF's quantized matrices run as stored; fp32: every matrix dequantized."""
QK = 32
"""Weights per quantization block along a row; must match kernels.c."""
QUANT_TYPES = {"q8_0": 0, "q4_0": 1, "q4_1": 2}
"""Block formats the kernels read as stored, with their codes in kernels.c."""
