"""Checks owl2.py against the upstream goldens of the owl2-tiny-a fixture (run before training).

    python3 verify_fixture.py [FIXTURE_DIR]   # default ../../tests/data/owl2-tiny-a (+ ../shared)
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

from owl2 import Owl2

here = os.path.dirname(os.path.abspath(__file__))
fx = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../../../shared/fixtures/owl2-tiny-a")
ck = os.path.join(fx, "checkpoint-f32-safetensors")
cfg = json.load(open(os.path.join(ck, "config.json")))
m = Owl2(cfg).eval()
sd = load_file(os.path.join(ck, "model.safetensors"))
sd = {k: v for k, v in sd.items() if "rotary_emb.inv_freq" not in k}
missing, unexpected = m.load_state_dict(sd, strict=True), None
g = lambda n: np.load(os.path.join(fx, "golden", n))
worst = 0.0
with torch.no_grad():
    for case in ["text", "mm", "pad"]:
        ids = torch.from_numpy(g(case + "_input_ids.npy"))
        px = torch.from_numpy(g(case + "_pixel_values_f32.npy")) if case != "text" else None
        logits, outs, y = m(ids, px, hidden=True)
        if px is not None:
            vit = m.model.vision_model(px)
            d = (vit - torch.from_numpy(g(case + "_vit_last_hidden_f32.npy"))).abs().max().item()
            print(case, "vit max |d|", d)
            feats = m.encode_images(px)
            d = (feats - torch.from_numpy(g(case + "_image_features_f32.npy")).reshape(feats.shape)).abs().max().item()
            print(case, "abstractor max |d|", d)
        ref = torch.from_numpy(g(case + "_logits_last4_f64.npy")).float()
        d = (logits[0, -4:] - ref).abs().max().item()
        worst = max(worst, d)
        print(case, "logits last4 max |d| vs f64 golden", d)
print("worst", worst)
assert worst < 1e-4, "forward does not match the upstream goldens"
print("OK: owl2.py reproduces the upstream forward")
