#!/usr/bin/env python3
"""Generates the Pillow reference arrays in tests/data/image_refs/ (development only; the
Rust tests read the .npy files and never need Python).

Usage: python3 scripts/gen_image_refs.py   (needs pillow and numpy)

Source images are synthetic and deterministic: `pattern(w, h)` below is reimplemented in
tests/image_preprocess.rs. Every resize is done as Pillow's classic horizontal-first two-pass
bicubic: one `Image.resize` per axis (width first, then height), which is exactly what Pillow
before 10.x did internally and what spec/preprocessing.md §2 prescribes (newer Pillow may run
the vertical pass first when both axes shrink by different factors).

Preprocessing follows upstream: `resize` = stretch to a max(W,H) square, `pad` = expand2square
on (122, 116, 104), `crop` = nothing; then transformers 4.31's CLIP processor: shortest edge to
S with long edge int(S * long / short), then centre crop top = (h - S) // 2, left = (w - S) // 2.
"""
import os
import sys

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "image_refs")
PAD = (122, 116, 104)


def pattern(w, h):
    """Deterministic pseudo-random RGB pixels: a 32-bit integer hash of (x, y, c)."""
    x = np.arange(w, dtype=np.uint64)[None, :, None]
    y = np.arange(h, dtype=np.uint64)[:, None, None]
    c = np.arange(3, dtype=np.uint64)[None, None, :]
    m = np.uint64(0xFFFFFFFF)
    v = ((x * np.uint64(73856093)) ^ (y * np.uint64(19349663)) ^ (c * np.uint64(83492791))) & m
    v = (v * np.uint64(2654435761)) & m
    v = v ^ (v >> np.uint64(15))
    return Image.fromarray(((v >> np.uint64(8)) & np.uint64(255)).astype(np.uint8), "RGB")


def resize_hfirst(im, w, h):
    """Pillow bicubic resize, horizontal pass first (a pass only where the size changes)."""
    if w != im.width:
        im = im.resize((w, im.height), Image.BICUBIC)
    if h != im.height:
        im = im.resize((w, h), Image.BICUBIC)
    return im


def expand2square(im, color):
    w, h = im.size
    if w == h:
        return im
    if w > h:
        res = Image.new(im.mode, (w, w), color)
        res.paste(im, (0, (w - h) // 2))
    else:
        res = Image.new(im.mode, (h, h), color)
        res.paste(im, ((h - w) // 2, 0))
    return res


def preprocess_u8(im, size, mode):
    if mode == "resize":
        m = max(im.size)
        im = resize_hfirst(im, m, m)
    elif mode == "pad":
        im = expand2square(im, PAD)
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    im = resize_hfirst(im, nw, nh)
    a = np.asarray(im)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(a[top:top + size, left:left + size])


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), arr)
    print(name, arr.shape, file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    print("Pillow", PIL.__version__, file=sys.stderr)
    # Direct resizes of one 37x23 image (up, down, mixed, identity axis, to 1 pixel).
    src = pattern(37, 23)
    for w, h in [(112, 112), (20, 60), (5, 3), (1, 1), (37, 100), (200, 23), (13, 29)]:
        save(f"resize_37x23_to_{w}x{h}", np.asarray(resize_hfirst(src, w, h)))
    # Preprocessing: degenerate shapes at S = 112, other thin or odd shapes at S = 32.
    # (A 1x1 image is square, so all three modes give the same pixels: one file.)
    save("pre_1x1_s112", preprocess_u8(pattern(1, 1), 112, "crop"))
    cases = [(1, 10000, 112), (10000, 1, 112), (3, 500, 32), (500, 3, 32), (45, 31, 32)]
    for w, h, s in cases:
        im = pattern(w, h)
        for mode in ("resize", "pad", "crop"):
            save(f"pre_{w}x{h}_s{s}_{mode}", preprocess_u8(im, s, mode))


if __name__ == "__main__":
    main()
