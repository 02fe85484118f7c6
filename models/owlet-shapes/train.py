"""Trains owlet-shapes from scratch and writes the release-layout checkpoint.

    nice -n 10 python3 train.py --out checkpoint --steps 3000      # ~35 min on 2 cores

Everything (ViT, abstractor, MAM LLaMA, embeddings) is trained end to end on examples drawn on
the fly from gen.py (seeded), with the loss on the answer tokens and the EOS only. The weights
are rounded to float16 and written as `model.safetensors` with config.json, tokenizer.model
and the small HF files; `owlet-convert` reads that folder like the release.
"""
import argparse
import json
import math
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import gen
from owl2 import IMAGE, Owl2, Tokenizer, build_vocab, preprocess, spm_model_proto

SIZE = 112


def make_config(vocab):
    return {
        "architectures": ["MPLUGOwl2LlamaForCausalLM"],
        "model_type": "mplug_owl2",
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "image_aspect_ratio": "resize",
        "vocab_size": vocab,
        "visual_config": {
            "visual_model": {
                "hidden_size": 128,
                "intermediate_size": 512,
                "projection_dim": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_channels": 3,
                "image_size": SIZE,
                "patch_size": 14,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": 1e-6,
                "use_cls_token": True,
                "use_post_layernorm": True,
                "use_flash_attn": False,
            },
            "visual_abstractor": {
                "hidden_size": 128,
                "encoder_hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 256,
                "num_learnable_queries": 12,
                "layer_norm_eps": 1e-6,
                "grid_size": SIZE // 14,
                "use_cls_token": True,
                "add_v2t_pos_emb": False,
            },
        },
    }


def init_weights(m, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in m.named_parameters():
        if name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif p.dim() == 1:  # norm gains
            torch.nn.init.ones_(p)
        else:
            with torch.no_grad():
                p.normal_(0.0, 0.02, generator=g)
    # Residual output projections start small (GPT-2 style).
    for name, p in m.named_parameters():
        if name.endswith(("o_proj.weight", "down_proj.weight", "dense.weight", "fc2.weight", "out_proj.weight", "w2.weight")):
            with torch.no_grad():
                p.mul_(0.5)


def batch(rng, tok, n_img, q_per):
    """n_img images, q_per questions about each (rows of one image are adjacent)."""
    pxs, rows, tgts, labs = [], [], [], []
    for _ in range(n_img):
        w, h, bg, objs = gen.scene(rng)
        pxs.append(preprocess(gen.render(w, h, bg, objs), SIZE))
        labs.append(scene_labels(bg, objs))
        for _ in range(q_per):
            _t, q, a = gen.question(rng, objs)
            p = tok.prompt(q)
            ans = tok.encode(a) + [2]
            rows.append(p + ans)
            tgts.append(len(p))
    L = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    lab = torch.full((len(rows), L), -100, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, tgts)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, s : len(r)] = torch.tensor(r[s:])
    return torch.stack(pxs), ids, lab, torch.tensor(labs)


# ---------------------------------------------------------------- stage 1: vision pretraining
# Trained end to end from the start, the LLM fits the answer prior long before the much smaller
# gradient reaching the ViT makes the image features informative (the features collapsed to a
# constant in three runs; see README.md). So the vision tower, the abstractor and `visual_fc`
# are first trained alone, LLaVA-style, through a throwaway probe that is not part of the model
# and is not saved. A probe on all the abstractor's rows at once does not learn (the queries'
# attention has no reason to become spatial); what works is giving each of the first queries a
# region: query r must tell region r's shape and colour (or none), query 5 the count and the
# background. Each query's attention then has to learn to look at its region.
N_SHAPE = len(gen.SHAPES) + 1
N_COLOR = len(gen.COLORS) + 1


def scene_labels(bg, objs):
    """[5 regions x (shape, colour)] + count + background as class indices (0 = none)."""
    lab = []
    by_region = {o[2]: o for o in objs}
    for reg in gen.REGIONS:
        o = by_region.get(reg)
        lab.append(0 if o is None else 1 + gen.SHAPES.index(o[0]))
        lab.append(0 if o is None else 1 + list(gen.COLORS).index(o[1]))
    lab.append(len(objs) - 1)
    lab.append(gen.BACKGROUNDS.index(bg))
    return lab


class SceneProbe(torch.nn.Module):
    """Per-query scene readout: rows 0-4 (one head shared by the regions), row 5 (count, bg)."""

    def __init__(s, d):
        super().__init__()
        s.region = torch.nn.Linear(d, N_SHAPE + N_COLOR)
        s.scene = torch.nn.Linear(d, 3 + len(gen.BACKGROUNDS))


def probe_loss(probe, feats, labs):
    """Mean cross-entropy over the 12 scene labels, and their mean accuracy. feats [B, Q+1, d]."""
    parts = []
    for r in range(len(gen.REGIONS)):
        z = probe.region(feats[:, r])
        parts += [(z[:, :N_SHAPE], labs[:, 2 * r]), (z[:, N_SHAPE:], labs[:, 2 * r + 1])]
    z = probe.scene(feats[:, len(gen.REGIONS)])
    parts += [(z[:, :3], labs[:, 10]), (z[:, 3:], labs[:, 11])]
    loss = sum(F.cross_entropy(zi, li) for zi, li in parts) / len(parts)
    acc = sum((zi.argmax(1) == li).float().mean().item() for zi, li in parts) / len(parts)
    return loss, acc


def vision_batch(rng, n):
    pxs, labs = [], []
    for _ in range(n):
        w, h, bg, objs = gen.scene(rng)
        pxs.append(preprocess(gen.render(w, h, bg, objs), SIZE))
        labs.append(scene_labels(bg, objs))
    return torch.stack(pxs), torch.tensor(labs)


def pretrain_vision(m, cfg, args):
    probe = SceneProbe(cfg["hidden_size"])
    params = [p for n, p in m.named_parameters() if n.startswith(("model.vision_model", "model.visual_abstractor"))]
    opt = torch.optim.AdamW([{"params": params}, {"params": probe.parameters()}], lr=args.vision_lr, weight_decay=0.01)
    rng = random.Random(5000 + args.seed)
    t0, ema = time.time(), None
    for step in range(1, args.vision_steps + 1):
        lr = args.vision_lr * min(1.0, step / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vision_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        px, labs = vision_batch(rng, args.vision_batch)
        loss, acc = probe_loss(probe, m.encode_images(px), labs)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = acc if ema is None else 0.95 * ema + 0.05 * acc
        if step % 25 == 0:
            print("vision step %d loss %.4f label-acc %.3f (ema %.3f) lr %.2e  %.0fs" % (step, loss.item(), acc, ema, lr, time.time() - t0), flush=True)
    return probe


def loss_fn(m, px, ids, lab, keep=False):
    # Each image is encoded once and its features shared by its q_per question rows.
    img = m.encode_images(px)
    feats = img.repeat_interleave(ids.shape[0] // px.shape[0], 0)
    logits = m.decode(ids, feats)  # [B, T, V] over the spliced sequence
    k = m.config["visual_config"]["visual_abstractor"]["num_learnable_queries"] + 1
    # Map token labels onto spliced positions: the image (1 id) becomes k positions.
    p = int((ids[0] == IMAGE).nonzero()[0])
    lab_s = torch.cat([lab[:, :p], torch.full((lab.shape[0], k), -100), lab[:, p + 1 :]], 1)
    # Position t predicts token t + 1.
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab_s[:, 1:].reshape(-1), ignore_index=-100)
    return (loss, img) if keep else loss


@torch.no_grad()
def greedy(m, tok, img_px, questions, max_new=16):
    """Greedy answers for a list of (pixel tensor, question) (no KV cache; short answers)."""
    outs = []
    for px, q in zip(img_px, questions):
        ids = tok.prompt(q)
        px = px[None]
        feats = m.encode_images(px)
        new = []
        for _ in range(max_new):
            x = torch.tensor([ids + new])
            e, vis = m.splice(x, feats)
            T = e.shape[1]
            mask = torch.full((T, T), float("-inf")).triu(1)
            h = e
            for l in m.model.layers:
                h = l(h, vis, torch.arange(T), mask)
            nxt = int(m.lm_head(m.model.norm(h[:, -1])).argmax())
            if nxt == 2:
                break
            new.append(nxt)
        outs.append(tok.decode(new))
    return outs


def evaluate(m, tok, n, seed):
    rng = random.Random(seed)
    per = {}
    pxs, qs, ans, ts = [], [], [], []
    for _ in range(n):
        img, t, q, a = gen.sample(rng)
        pxs.append(preprocess(img, SIZE))
        qs.append(q)
        ans.append(a)
        ts.append(t)
    got = greedy(m, tok, pxs, qs)
    for t, a, g in zip(ts, ans, got):
        c = per.setdefault(t, [0, 0])
        c[0] += a == g
        c[1] += 1
    tot = sum(c[0] for c in per.values()) / n
    return tot, {t: c[0] / c[1] for t, c in sorted(per.items())}


def save(m, cfg, pieces, scores, types, out):
    os.makedirs(out, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(spm_model_proto(pieces, scores, types))
    json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    json.dump(
        {
            "crop_size": {"height": SIZE, "width": SIZE},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": SIZE},
        },
        open(os.path.join(out, "preprocessor_config.json"), "w"),
        indent=2,
    )
    json.dump(
        {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "pad_token": "<unk>", "legacy": False, "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": False},
        open(os.path.join(out, "tokenizer_config.json"), "w"),
        indent=2,
    )
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
              open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checkpoint")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--images", type=int, default=16, help="images per step")
    ap.add_argument("--q-per", type=int, default=2, help="questions per image")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vision-lr-mult", type=float, default=1.0, help="lr factor for ViT + abstractor")
    ap.add_argument("--query-std", type=float, default=0.0, help="init std of the abstractor queries (0: 0.02)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=0, help="stop (and save) after this much wall time")
    ap.add_argument("--vision-steps", type=int, default=0, help="stage 1: vision + abstractor alone through a scene probe")
    ap.add_argument("--vision-batch", type=int, default=32)
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--fanin-init", action="store_true", help="vision + abstractor matrices N(0, 1/fan_in), queries N(0, 1)")
    ap.add_argument("--probe-weight", type=float, default=0.0, help="stage 2: keep the scene probe's loss at this weight")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pieces, scores, types = build_vocab()
    tok = Tokenizer(pieces, scores, types)
    cfg = make_config(len(pieces))
    m = Owl2(cfg)
    init_weights(m, args.seed)
    n = sum(p.numel() for p in m.parameters())
    print("parameters", n, "vocab", len(pieces), flush=True)
    if args.query_std:
        with torch.no_grad():
            m.model.visual_abstractor.query_embeds.normal_(0.0, args.query_std)
    if args.fanin_init:
        # With the 0.02 init the abstractor's attention is uniform over the 77 key rows and its
        # output hardly depends on the image (spread 0.005 against 0.17).
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith(("model.vision_model", "model.visual_abstractor")) and p.dim() == 2:
                    p.normal_(0.0, p.shape[1] ** -0.5)
            m.model.visual_abstractor.query_embeds.normal_(0.0, 1.0)
    probe = pretrain_vision(m, cfg, args) if args.vision_steps else None
    vis = lambda n: n.startswith(("model.vision_model", "model.visual_abstractor"))
    groups = []
    for is_vis in (False, True):
        mult = args.vision_lr_mult if is_vis else 1.0
        ps = [(n, p) for n, p in m.named_parameters() if vis(n) == is_vis]
        groups.append({"params": [p for n, p in ps if p.dim() >= 2], "weight_decay": 0.05, "mult": mult})
        groups.append({"params": [p for n, p in ps if p.dim() < 2], "weight_decay": 0.0, "mult": mult})
    if probe is not None and args.probe_weight:
        groups.append({"params": list(probe.parameters()), "weight_decay": 0.0, "mult": 1.0})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))
    rng = random.Random(1000 + args.seed)
    t0 = time.time()
    warm = 150
    ema = None
    for step in range(1, args.steps + 1):
        # Cosine decay over the step count or the wall-time budget, whichever ends first.
        prog = step / args.steps
        if args.minutes:
            prog = max(prog, (time.time() - t0) / (args.minutes * 60))
        lr = args.lr * min(1.0, step / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        px, ids, lab, labs = batch(rng, tok, args.images, args.q_per)
        if probe is not None and args.probe_weight:
            loss, feats = loss_fn(m, px, ids, lab, keep=True)
            loss = loss + args.probe_weight * probe_loss(probe, feats, labs)[0]
        else:
            loss = loss_fn(m, px, ids, lab)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 25 == 0:
            print("step %d loss %.4f ema %.4f lr %.2e  %.0fs" % (step, loss.item(), ema, lr, time.time() - t0), flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            m.eval()
            acc, per = evaluate(m, tok, 120, 777)
            m.train()
            print("eval step %d acc %.3f %s" % (step, acc, per), flush=True)
            save(m, cfg, pieces, scores, types, args.out)
        if args.minutes and time.time() - t0 > args.minutes * 60:
            print("time budget reached at step", step, flush=True)
            break
    save(m, cfg, pieces, scores, types, args.out)
    print("saved", args.out, "in %.0fs" % (time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
