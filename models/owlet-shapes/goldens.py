"""Writes the reference logits convert/tests/owlet_shapes.rs compares owlet with.

    python3 goldens.py --ckpt checkpoint --set heldout --n 6 --out ../../tests/data/owlet-shapes-goldens.json

Loads a release-layout checkpoint written by train.py (`model.safetensors` in float16 and
`config.json`) into owl2.py twice, upcast to float32 and to float64, and runs the forward on
the first `--n` held-out (image, question) pairs, taken one per image and cycling through the
question types. For each it records the prompt ids (owl2.Tokenizer, as owlet must tokenize
them), the last position's logits in float64 (the reference), how far PyTorch's own float32
forward is from them (for comparison), and the top token. Preprocessing is owl2.preprocess (`resize` mode).
With `--answers N` it also records train.py's greedy answers (float32) to the first N
questions of the set, which owlet's f32 answers must equal.
"""
import argparse
import hashlib
import json
import os

import torch
from PIL import Image
from safetensors.torch import load_file

from owl2 import Owl2, Tokenizer, build_vocab, preprocess
from train import greedy


def load(ckpt, dtype):
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    torch.set_default_dtype(dtype)  # masks and tables built inside the forward follow it
    m = Owl2(cfg).eval()
    sd = load_file(os.path.join(ckpt, "model.safetensors"))
    sd = {k: v.to(dtype) for k, v in sd.items() if "rotary_emb.inv_freq" not in k}
    m.load_state_dict(sd, strict=True)
    return m, cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint folder (model.safetensors, config.json)")
    ap.add_argument("--set", required=True, help="held-out folder (questions.jsonl + images)")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--answers", type=int, default=0, help="also the greedy answers to the first N questions")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    pieces, scores, types = build_vocab()
    tok = Tokenizer(pieces, scores, types)
    rows = [json.loads(l) for l in open(os.path.join(args.set, "questions.jsonl")) if l.strip()]
    # One question per image, the type cycling, so the cases cover every question type.
    picked, seen = [], set()
    order = ["color", "shape", "count", "exists", "where", "describe"]
    for r in rows:
        want = order[len(picked) % len(order)]
        if r["image"] not in seen and r["type"] == want:
            picked.append(r)
            seen.add(r["image"])
        if len(picked) == args.n:
            break

    models = {}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        models[name] = load(args.ckpt, dt)
    cfg = models["f32"][1]
    assert cfg["vocab_size"] == len(pieces), "the checkpoint's vocabulary is not owl2.build_vocab()'s"
    size = cfg["visual_config"]["visual_model"]["image_size"]

    cases = []
    worst32 = 0.0
    with torch.no_grad():
        for r in picked:
            img = Image.open(os.path.join(args.set, r["image"]))
            px = preprocess(img, size)[None]  # float32 [1, 3, S, S]
            ids = tok.prompt(r["question"])
            out = {}
            for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
                torch.set_default_dtype(dt)
                m = models[name][0]
                out[name] = m(torch.tensor([ids]), px.to(dt))[0, -1].double()
            d = (out["f32"] - out["f64"]).abs().max().item()
            worst32 = max(worst32, d)
            cases.append(
                {
                    "image": r["image"],
                    "type": r["type"],
                    "question": r["question"],
                    "answer": r["answer"],
                    "ids": ids,
                    "top": int(out["f64"].argmax()),
                    "torch_f32_vs_f64": d,
                    "logits_f64": out["f64"].tolist(),
                }
            )
    torch.set_default_dtype(torch.float32)
    answers = []
    if args.answers:
        qs = rows[: args.answers]
        px = [preprocess(Image.open(os.path.join(args.set, r["image"])), size) for r in qs]
        got = greedy(models["f32"][0], tok, px, [r["question"] for r in qs], max_new=32)
        answers = [{"image": r["image"], "question": r["question"], "torch_f32": g} for r, g in zip(qs, got)]
    st = open(os.path.join(args.ckpt, "model.safetensors"), "rb").read()
    doc = {
        "about": "last-position logits of owl2.py on the owlet-shapes checkpoint (goldens.py)",
        "checkpoint_sha256": hashlib.sha256(st).hexdigest(),
        "set": os.path.basename(os.path.normpath(args.set)),
        "cases": cases,
        "answers": answers,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print("%d cases -> %s; torch f32 vs f64 max |d| %.3e" % (len(cases), args.out, worst32))


if __name__ == "__main__":
    main()
