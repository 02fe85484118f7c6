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
import multiprocessing as mp
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


def render_fast(w, h, bg, objs):
    """gen.render with a box filter for the 2x downsample instead of Lanczos: 17x faster, and
    after the model's own preprocessing the pixels differ by 0.05 % of their mean magnitude.
    Training only; every evaluation draws with gen.render."""
    img = gen.Image.new("RGB", (w * 2, h * 2), bg)
    d = gen.ImageDraw.Draw(img)
    for shape, color, _reg, cx, cy, r in objs:
        gen.draw_shape(d, shape, cx * 2, cy * 2, r * 2, gen.COLORS[color])
    return img.reduce(2)


VIT_LAYERS = 2
LLM_LAYERS = 2
# Abstractor queries: 0-4 regions, 5 the scene, 6-8 the objects from left to right, and with
# --keyed-slots 9-12 one per shape and 13-18 one per colour (see SceneProbe); else 9-11 unused.
N_QUERIES = 12


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
        "num_hidden_layers": LLM_LAYERS,
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
                "num_hidden_layers": VIT_LAYERS,
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
                "num_learnable_queries": N_QUERIES,
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


MIX = {}  # question type -> sampling weight (default 1 each); --mix


def batch(rng, tok, n_img, q_per):
    """n_img images, q_per questions about each (rows of one image are adjacent)."""
    pxs, rows, tgts, labs = [], [], [], []
    for _ in range(n_img):
        w, h, bg, objs = gen.scene(rng)
        pxs.append(preprocess(render_fast(w, h, bg, objs), SIZE))
        labs.append(scene_labels(bg, objs, w) + (dense_labels(w, h, objs), keyed_labels(objs)))
        for _ in range(q_per):
            qt = rng.choices(gen.QTYPES, [MIX.get(t, 1.0) for t in gen.QTYPES])[0] if MIX else None
            _t, q, a = gen.question(rng, objs, qt)
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
    ints = torch.tensor([li for li, _, _, _ in labs])
    xs = torch.tensor([lx for _, lx, _, _ in labs])
    ds = torch.tensor([d for _, _, d, _ in labs])
    ks = torch.tensor([k for _, _, _, k in labs])
    return torch.stack(pxs), ids, lab, (ints, xs, ds, ks)


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


def scene_labels(bg, objs, w):
    """Class indices (0 = none): [5 regions x (shape, colour)], count, background, then the
    objects from left to right [3 slots x (shape, colour, region)]; and the regions' x centres."""
    lab, xs = [], []
    by_region = {o[2]: o for o in objs}
    for reg in gen.REGIONS:
        o = by_region.get(reg)
        lab.append(0 if o is None else 1 + gen.SHAPES.index(o[0]))
        lab.append(0 if o is None else 1 + list(gen.COLORS).index(o[1]))
        xs.append(-1.0 if o is None else o[3] / w)
    lab.append(len(objs) - 1)
    lab.append(gen.BACKGROUNDS.index(bg))
    ranked = sorted(objs, key=lambda o: o[3])
    for i in range(3):
        o = ranked[i] if i < len(ranked) else None
        lab.append(0 if o is None else 1 + gen.SHAPES.index(o[0]))
        lab.append(0 if o is None else 1 + list(gen.COLORS).index(o[1]))
        lab.append(0 if o is None else 1 + gen.REGIONS.index(o[2]))
    return lab, xs


def dense_labels(w, h, objs):
    """Per ViT patch (row-major, SIZE // 14 a side): the shape and colour of the object whose
    bounding circle holds the patch centre (0 = background), after the stretch to a square."""
    g = SIZE // 14
    shp, col = [0] * (g * g), [0] * (g * g)
    for i in range(g):
        for j in range(g):
            x, y = (j + 0.5) / g * w, (i + 0.5) / g * h
            for o in objs:
                if (x - o[3]) ** 2 + (y - o[4]) ** 2 < (o[5] * 0.9) ** 2:
                    shp[i * g + j] = 1 + gen.SHAPES.index(o[0])
                    col[i * g + j] = 1 + list(gen.COLORS).index(o[1])
    return [shp, col]


def keyed_labels(objs):
    """Multi-hot targets of the keyed queries: per shape, which colours and regions it has in
    the image; per colour, which shapes and regions. 4 x (6 + 5) + 6 x (4 + 5) = 98 values."""
    out = []
    for sh in gen.SHAPES:
        out += [float(any(o[0] == sh and o[1] == c for o in objs)) for c in gen.COLORS]
        out += [float(any(o[0] == sh and o[2] == r for o in objs)) for r in gen.REGIONS]
    for c in gen.COLORS:
        out += [float(any(o[1] == c and o[0] == sh for o in objs)) for sh in gen.SHAPES]
        out += [float(any(o[1] == c and o[2] == r for o in objs)) for r in gen.REGIONS]
    return out


N_REGION = len(gen.REGIONS) + 1
RANK0 = 2 * len(gen.REGIONS) + 2  # first ranked-slot label
SLOT0 = len(gen.REGIONS) + 1  # first query that holds a ranked slot
KEY0 = SLOT0 + 3  # first keyed query (--keyed-slots)
BY_SHAPE = len(gen.COLORS) + len(gen.REGIONS)  # targets of a shape's query
BY_COLOR = len(gen.SHAPES) + len(gen.REGIONS)  # targets of a colour's query


class SceneProbe(torch.nn.Module):
    """Per-query scene readout: queries 0-4 (one head shared by the regions: shape, colour, x),
    query 5 (count, background), queries 6-8 (one head: the i-th object from the left) and, with
    --keyed-slots, queries 9-12 (one head: which colours and regions the shape has) and 13-18
    (one head: which shapes and regions the colour has).

    The keyed queries are for the LLM's binding questions. With only region and ranked slots,
    "What color is the star?" needs an attention hop keyed on a *perceived* shape, which the
    2-layer LLM learned only to 0.78; a query that is the star's own slot turns it into a
    lookup keyed on the query's learned identity, which every image shares."""

    def __init__(s, d, d_vit):
        super().__init__()
        s.region = torch.nn.Linear(d, N_SHAPE + N_COLOR + 1)
        s.scene = torch.nn.Linear(d, 3 + len(gen.BACKGROUNDS))
        s.slot = torch.nn.Linear(d, N_SHAPE + N_COLOR + N_REGION)
        s.patch = torch.nn.Linear(d_vit, N_SHAPE + N_COLOR)
        if N_QUERIES >= KEY0 + len(gen.SHAPES) + len(gen.COLORS):
            s.by_shape = torch.nn.Linear(d, BY_SHAPE)
            s.by_color = torch.nn.Linear(d, BY_COLOR)


def probe_loss(probe, feats, labs, report=False, vit=None):
    """Mean loss over the scene labels (cross-entropy; squared error of 10 x for the x centres)
    and, with report, accuracies per group. feats [B, Q+1, d]; labs = (ints, xs, dense); with
    vit [B, 1 + N, d_vit] also each patch's shape and colour (weight 1)."""
    ints, xs, dense, keyed = labs
    parts, groups = [], {}
    xl = []
    for r in range(len(gen.REGIONS)):
        z = probe.region(feats[:, r])
        parts += [(z[:, :N_SHAPE], ints[:, 2 * r], "shape"), (z[:, N_SHAPE:-1], ints[:, 2 * r + 1], "colour")]
        have = xs[:, r] >= 0
        if have.any():
            xl.append(((z[:, -1] - 10 * xs[:, r]) ** 2)[have].mean())
    z = probe.scene(feats[:, len(gen.REGIONS)])
    parts += [(z[:, :3], ints[:, 10], "count"), (z[:, 3:], ints[:, 11], "bg")]
    for i in range(3):
        z = probe.slot(feats[:, SLOT0 + i])
        c = RANK0 + 3 * i
        parts += [(z[:, :N_SHAPE], ints[:, c], "slot"), (z[:, N_SHAPE : N_SHAPE + N_COLOR], ints[:, c + 1], "slot"),
                  (z[:, N_SHAPE + N_COLOR :], ints[:, c + 2], "slot")]
    # Shape is what the image path learns last (colour and count are solved within a few hundred
    # steps), so its terms count three times.
    wt = [3.0 if g == "shape" else 1.0 for _, _, g in parts]
    loss = sum(w * F.cross_entropy(zi, li) for w, (zi, li, _) in zip(wt, parts)) / sum(wt)
    if xl:
        loss = loss + 0.5 * sum(xl) / len(xl)
    kparts = []
    if hasattr(probe, "by_shape"):
        for i in range(len(gen.SHAPES)):
            kparts.append((probe.by_shape(feats[:, KEY0 + i]), keyed[:, i * BY_SHAPE : (i + 1) * BY_SHAPE], "by_shape"))
        o = len(gen.SHAPES) * BY_SHAPE
        for j in range(len(gen.COLORS)):
            q = KEY0 + len(gen.SHAPES) + j
            kparts.append((probe.by_color(feats[:, q]), keyed[:, o + j * BY_COLOR : o + (j + 1) * BY_COLOR], "by_color"))
        # Mean binary cross-entropy per target, weighted like the shape terms above.
        loss = loss + 3.0 * sum(F.binary_cross_entropy_with_logits(z, t) for z, t, _ in kparts) / len(kparts)
    if vit is not None:
        z = probe.patch(vit[:, 1:])  # [B, N, classes]
        ls = F.cross_entropy(z[..., :N_SHAPE].reshape(-1, N_SHAPE), dense[:, 0].reshape(-1))
        lc = F.cross_entropy(z[..., N_SHAPE:].reshape(-1, N_COLOR), dense[:, 1].reshape(-1))
        loss = loss + (ls + lc) / 2
        if report:
            on = dense[:, 0] > 0
            parts_acc = (z[..., :N_SHAPE].argmax(-1) == dense[:, 0])[on].float().mean().item()
    if not report:
        return loss, None
    for zi, li, g in parts:
        # Shape and colour accuracy only where an object is (the "none" class is easy).
        keep = li > 0 if g in ("shape", "colour", "slot") else torch.ones_like(li, dtype=torch.bool)
        a = groups.setdefault(g, [0, 0])
        a[0] += int((zi.argmax(1) == li)[keep].sum())
        a[1] += int(keep.sum())
    for z, t, g in kparts:
        # Exact-set accuracy: every target of the query right.
        a = groups.setdefault(g, [0, 0])
        a[0] += int(((z > 0).float() == t).all(1).sum())
        a[1] += t.shape[0]
    acc = {g: round(a[0] / max(1, a[1]), 3) for g, a in groups.items()}
    if vit is not None:
        acc["patch_shape"] = round(parts_acc, 3)
    acc["x_rmse"] = round(float(sum(xl).detach() / len(xl)) ** 0.5 / 10, 4) if xl else 0.0
    return loss, acc


def vision_batch(rng, n):
    pxs, ints, xs, ds, ks = [], [], [], [], []
    for _ in range(n):
        w, h, bg, objs = gen.scene(rng)
        pxs.append(preprocess(render_fast(w, h, bg, objs), SIZE))
        li, lx = scene_labels(bg, objs, w)
        ints.append(li)
        xs.append(lx)
        ds.append(dense_labels(w, h, objs))
        ks.append(keyed_labels(objs))
    return torch.stack(pxs), (torch.tensor(ints), torch.tensor(xs), torch.tensor(ds), torch.tensor(ks))


def _producer(q, make, seed, start):
    """Worker process: puts make(random.Random(seed + i)) for i = start, start + 1, ... on q."""
    torch.set_num_threads(1)
    i = start
    while True:
        q.put(make(random.Random(seed * 1_000_003 + i)))
        i += 1


class Batches:
    """Batches drawn by a worker process while the trainer computes (drawing and preprocessing
    a 16-image batch takes about as long as the step itself on one core). Batch i is drawn from
    its own seeded generator, so a run is reproducible whatever the timing."""

    def __init__(s, make, seed, workers=1):
        ctx = mp.get_context("fork")
        s.q = ctx.Queue(maxsize=6)
        s.ps = [ctx.Process(target=_producer, args=(s.q, make, seed + 7919 * w, 0), daemon=True) for w in range(workers)]
        for p in s.ps:
            p.start()

    def next(s):
        return s.q.get()

    def close(s):
        for p in s.ps:
            p.terminate()


def pretrain_vision(m, cfg, args):
    probe = SceneProbe(cfg["hidden_size"], cfg["visual_config"]["visual_model"]["hidden_size"])
    params = [p for n, p in m.named_parameters() if n.startswith(("model.vision_model", "model.visual_abstractor"))]
    opt = torch.optim.AdamW([{"params": params}, {"params": probe.parameters()}], lr=args.vision_lr, weight_decay=0.01)
    data = Batches(lambda rng: vision_batch(rng, args.vision_batch), 5000 + args.seed, args.workers)
    t0, ema = time.time(), None
    for step in range(1, args.vision_steps + 1):
        lr = args.vision_lr * min(1.0, step / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vision_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        px, labs = data.next()
        report = step % 25 == 0
        vit = m.model.vision_model(px)
        loss, acc = probe_loss(probe, m.model.visual_abstractor(vit), labs, report, vit)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if report:
            print("vision step %d loss %.4f (ema %.4f) %s lr %.2e  %.0fs" % (step, loss.item(), ema, acc, lr, time.time() - t0), flush=True)
    data.close()
    return probe


def loss_fn(m, img, ids, lab):
    # Each image is encoded once (img [n_img, Q+1, d]) and shared by its q_per question rows.
    feats = img.repeat_interleave(ids.shape[0] // img.shape[0], 0)
    logits = m.decode(ids, feats)  # [B, T, V] over the spliced sequence
    k = m.config["visual_config"]["visual_abstractor"]["num_learnable_queries"] + 1
    # Map token labels onto spliced positions: the image (1 id) becomes k positions.
    p = int((ids[0] == IMAGE).nonzero()[0])
    lab_s = torch.cat([lab[:, :p], torch.full((lab.shape[0], k), -100), lab[:, p + 1 :]], 1)
    # Position t predicts token t + 1.
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab_s[:, 1:].reshape(-1), ignore_index=-100)
    return loss


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
    global SIZE, VIT_LAYERS, LLM_LAYERS, N_QUERIES
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
    ap.add_argument("--init", help="continue training from this checkpoint folder")
    ap.add_argument("--mix", default="", help="question-type weights, e.g. color=2,exists=1.5")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--stage1", help="start stage 2 from this saved stage 1 (OUT.stage1.pt)")
    ap.add_argument("--vit-layers", type=int, default=VIT_LAYERS)
    ap.add_argument("--llm-layers", type=int, default=LLM_LAYERS)
    ap.add_argument("--workers", type=int, default=1, help="processes drawing batches")
    ap.add_argument("--size", type=int, default=SIZE, help="image side (multiple of 14)")
    ap.add_argument("--vision-only", action="store_true", help="stop after stage 1 (diagnostics)")
    ap.add_argument("--freeze-vision", type=int, default=0, help="stage 2: vision + abstractor frozen for this many steps")
    ap.add_argument("--keyed-slots", action="store_true", help="19 queries: add one per shape and one per colour (SceneProbe)")
    ap.add_argument("--probe-weight", type=float, default=0.0, help="stage 2: keep the scene probe's loss at this weight")
    args = ap.parse_args()
    SIZE, VIT_LAYERS, LLM_LAYERS = args.size, args.vit_layers, args.llm_layers
    if args.keyed_slots:
        N_QUERIES = KEY0 + len(gen.SHAPES) + len(gen.COLORS)
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
    for kv in filter(None, args.mix.split(",")):
        k, v = kv.split("=")
        MIX[k] = float(v)
    probe = None
    if args.init:
        # Continue from a saved checkpoint (its f16 weights), without the stage-1 probe.
        from safetensors.torch import load_file
        m.load_state_dict({k: v.float() for k, v in load_file(os.path.join(args.init, "model.safetensors")).items()})
    elif args.stage1:
        # Resume from a saved stage 1 (vision, abstractor and probe weights).
        # Stage 1 trains only the vision side, so a stage 1 saved with another LLM depth still
        # fits: the LLM layers it lacks keep their fresh initialisation.
        st = torch.load(args.stage1)
        missing, unexpected = m.load_state_dict(st["model"], strict=False)
        extra = [k for k in missing if not k.startswith("model.layers.")]
        if unexpected or extra:
            raise SystemExit(f"{args.stage1}: does not fit this configuration ({(unexpected + extra)[:3]})")
        probe = SceneProbe(cfg["hidden_size"], cfg["visual_config"]["visual_model"]["hidden_size"])
        probe.load_state_dict(st["probe"])
    elif args.vision_steps:
        probe = pretrain_vision(m, cfg, args)
        torch.save({"model": m.state_dict(), "probe": probe.state_dict()}, args.out.rstrip("/") + ".stage1.pt")
    if args.vision_only:
        return
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
    data = Batches(lambda rng: batch(rng, tok, args.images, args.q_per), 1000 + args.seed, args.workers)
    t0 = time.time()
    warm = args.warmup
    ema = None
    for step in range(1, args.steps + 1):
        # Cosine decay over the step count or the wall-time budget, whichever ends first.
        prog = step / args.steps
        if args.minutes:
            prog = max(prog, (time.time() - t0) / (args.minutes * 60))
        lr = args.lr * min(1.0, step / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        px, ids, lab, labs = data.next()
        frozen = step <= args.freeze_vision
        with torch.set_grad_enabled(not frozen):
            vit = m.model.vision_model(px)
            img = m.model.visual_abstractor(vit)
        loss = loss_fn(m, img, ids, lab)
        if probe is not None and args.probe_weight and not frozen:
            loss = loss + args.probe_weight * probe_loss(probe, img, labs, vit=vit)[0]
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
    data.close()
    save(m, cfg, pieces, scores, types, args.out)
    print("saved", args.out, "in %.0fs" % (time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
