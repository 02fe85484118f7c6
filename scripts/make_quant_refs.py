#!/usr/bin/env python3
"""Writes tests/data/quant_ref/: f32 rows and the bytes the Python `gguf` package's reference
quantizers (`gguf.quants.quantize`) make of them, for owlet's bit-exactness tests.

Files (all little-endian, row-major, ROWS rows of ROW_LEN values):
  input.f32.bin       the rows, float32
  <type>.bin          gguf.quants.quantize(rows, <TYPE>) for q4_0, q4_1, q5_0, q5_1, q8_0, f16, bf16

The rows mix distributions and edge cases: normal, heavy-tailed, uniform, outliers, an all-zero
row, a constant row, a row of exact ties (values that land on x.5 after scaling), huge values
near the f16 limit and tiny ones. Deterministic (fixed seed); rerun to regenerate:

    python3 scripts/make_quant_refs.py
"""

from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROW_LEN = 256
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "quant_ref"
TYPES = {
    "q4_0": T.Q4_0,
    "q4_1": T.Q4_1,
    "q5_0": T.Q5_0,
    "q5_1": T.Q5_1,
    "q8_0": T.Q8_0,
    "f16": T.F16,
    "bf16": T.BF16,
}


def make_rows() -> np.ndarray:
    rng = np.random.default_rng(20240611)
    n = ROW_LEN
    outliers = rng.normal(0, 0.02, n)
    outliers[rng.choice(n, 6, replace=False)] *= 40
    # Multiples of 1/4 with block maxima of ±2: x/d hits exact halves for Q4_0 and Q8_0.
    ties = rng.integers(-8, 9, n) * 0.25
    ties[::32] = 2.0
    ties[5::64] = -2.0
    rows = [
        rng.normal(0, 1, n),
        rng.standard_t(2.5, n) * 0.05,
        rng.uniform(-0.3, 0.7, n),
        outliers,
        np.zeros(n),
        np.full(n, 0.37),
        ties,
        rng.uniform(-65000, 65000, n),
        rng.normal(0, 1e-5, n),
        np.abs(rng.normal(1, 0.5, n)),  # all positive
    ]
    return np.stack(rows).astype(np.float32)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = make_rows()
    (OUT / "input.f32.bin").write_bytes(rows.astype("<f4").tobytes())
    for name, qtype in TYPES.items():
        q = gguf.quants.quantize(rows, qtype)
        (OUT / f"{name}.bin").write_bytes(np.ascontiguousarray(q).view(np.uint8).tobytes())
        print(f"{name}: {q.nbytes} bytes")


if __name__ == "__main__":
    main()
