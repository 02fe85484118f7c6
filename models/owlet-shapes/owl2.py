"""A compact PyTorch re-implementation of the mPLUG-Owl2 forward (development tool only).

Same computation and the same parameter names as the upstream `MPLUGOwl2LlamaForCausalLM`
(see ../../../shared/spec/mplug-owl2.md, or the project's spec), so `state_dict()` is a
release-layout checkpoint. Verified against the upstream goldens of the owl2-tiny-a fixture by
`python3 verify_fixture.py`. Also: the task's tokenizer (a SentencePiece BPE `tokenizer.model`
written by hand) and the image preprocessing (`resize` mode, PIL bicubic, CLIP mean/std).
"""
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

IMAGE = -200  # placeholder id of an image in a token sequence
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


# ---------------------------------------------------------------- vision encoder (ViT, CLS)
class VitAttention(nn.Module):
    def __init__(s, d, heads):
        super().__init__()
        s.heads = heads
        # Fused QKV, interleaved per head: channel h*3*hd + t*hd + j (t = 0 q, 1 k, 2 v).
        s.query_key_value = nn.Linear(d, 3 * d)
        s.dense = nn.Linear(d, d)

    def forward(s, x):  # [B, N, d]
        B, N, d = x.shape
        hd = d // s.heads
        qkv = s.query_key_value(x).view(B, N, s.heads, 3, hd).permute(3, 0, 2, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, hd]
        a = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5, dim=-1) @ v
        return s.dense(a.transpose(1, 2).reshape(B, N, d))


class VitMlp(nn.Module):
    def __init__(s, d, f):
        super().__init__()
        s.fc1, s.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(s, x):
        h = s.fc1(x)
        return s.fc2(h * torch.sigmoid(1.702 * h))  # QuickGELU


class VitLayer(nn.Module):
    def __init__(s, d, f, heads, eps):
        super().__init__()
        s.input_layernorm = nn.LayerNorm(d, eps=eps)
        s.self_attn = VitAttention(d, heads)
        s.post_attention_layernorm = nn.LayerNorm(d, eps=eps)
        s.mlp = VitMlp(d, f)

    def forward(s, x):  # pre-LN block
        x = x + s.self_attn(s.input_layernorm(x))
        return x + s.mlp(s.post_attention_layernorm(x))


class VitEmbeddings(nn.Module):
    def __init__(s, d, image, patch, eps):
        super().__init__()
        n = (image // patch) ** 2
        s.patch = patch
        s.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        s.patch_embed = nn.Conv2d(3, d, patch, patch, bias=False)
        s.position_embedding = nn.Parameter(torch.zeros(1, n + 1, d))
        s.pre_layernorm = nn.LayerNorm(d, eps=eps)

    def forward(s, px):  # [B, 3, S, S]
        x = s.patch_embed(px).flatten(2).transpose(1, 2)  # [B, grid*grid, d], row-major
        x = torch.cat([s.cls_token.expand(x.shape[0], -1, -1), x], 1) + s.position_embedding
        return s.pre_layernorm(x)


class VitEncoder(nn.Module):
    def __init__(s, vc):
        super().__init__()
        s.layers = nn.ModuleList(
            VitLayer(vc["hidden_size"], vc["intermediate_size"], vc["num_attention_heads"], vc["layer_norm_eps"])
            for _ in range(vc["num_hidden_layers"])
        )


class VisionModel(nn.Module):
    def __init__(s, vc):
        super().__init__()
        d, eps = vc["hidden_size"], vc["layer_norm_eps"]
        s.embeddings = VitEmbeddings(d, vc["image_size"], vc["patch_size"], eps)
        s.encoder = VitEncoder(vc)
        s.post_layernorm = nn.LayerNorm(d, eps=eps)

    def forward(s, px):
        x = s.embeddings(px)
        for l in s.encoder.layers:
            x = l(x)
        return s.post_layernorm(x)  # all rows, CLS included


# ---------------------------------------------------------------- visual abstractor
def sincos_1d(d, pos):
    """[len(pos), d]: sines in the first half, cosines in the second (float32 like upstream)."""
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum("m,d->md", np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)


def sincos_2d(d, grid):
    """[1 + grid*grid, d]: zero CLS row, then per patch (row i, col j) [col half, row half]."""
    ii, jj = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32), indexing="ij")
    emb = np.concatenate([sincos_1d(d // 2, jj.reshape(-1)), sincos_1d(d // 2, ii.reshape(-1))], axis=1)
    return np.concatenate([np.zeros((1, d), np.float32), emb], axis=0)


class AbsAttention(nn.Module):
    def __init__(s, d, heads, nq, grid):
        super().__init__()
        s.heads = heads
        s.query, s.key, s.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        # Stored in the checkpoint as upstream's save_pretrained does; not trained.
        s.register_buffer("q_pos_embed", torch.from_numpy(sincos_1d(d, np.arange(nq))))
        s.register_buffer("k_pos_embed", torch.from_numpy(sincos_2d(d, grid)))

    def forward(s, xn, fn):  # xn [B, Q, d] normalized queries, fn [B, N, d] normalized image
        B, Q, d = xn.shape
        hd = d // s.heads
        src = torch.cat([xn, fn], 1)  # keys/values include the queries themselves
        pos = torch.cat([s.q_pos_embed, s.k_pos_embed], 0)
        q = s.query(xn + s.q_pos_embed)
        k = s.key(src + pos)
        v = s.value(src)  # no position on V
        sp = lambda t: t.view(B, -1, s.heads, hd).transpose(1, 2)
        a = torch.softmax(sp(q) @ sp(k).transpose(-1, -2) / math.sqrt(hd), -1) @ sp(v)
        return a.transpose(1, 2).reshape(B, Q, d)


class AbsMlp(nn.Module):
    def __init__(s, d, f, eps):
        super().__init__()
        s.w1, s.w2, s.w3 = nn.Linear(d, f), nn.Linear(f, d), nn.Linear(d, f)
        s.ffn_ln = nn.LayerNorm(f, eps=eps)  # config eps (1e-6)

    def forward(s, z):
        return s.w2(s.ffn_ln(F.silu(s.w1(z)) * s.w3(z)))


class AbsOutput(nn.Module):
    def __init__(s, d, f, eps):
        super().__init__()
        s.out_proj = nn.Linear(d, d)
        s.norm2 = nn.LayerNorm(d)  # PyTorch default eps 1e-5
        s.mlp = AbsMlp(d, f, eps)


class CrossAttention(nn.Module):
    def __init__(s, ac, nq, grid):
        super().__init__()
        d = ac["hidden_size"]
        s.norm1 = nn.LayerNorm(d)  # eps 1e-5
        s.normk = nn.LayerNorm(d)  # eps 1e-5
        s.attention = AbsAttention(d, ac["num_attention_heads"], nq, grid)
        s.output = AbsOutput(d, ac["intermediate_size"], ac["layer_norm_eps"])

    def forward(s, x, f):
        xn = s.norm1(x)
        y = xn + s.output.out_proj(s.attention(xn, s.normk(f)))  # residual from normalized queries
        return y + s.output.mlp(s.output.norm2(y))


class AbsLayer(nn.Module):
    def __init__(s, ac, nq, grid):
        super().__init__()
        s.crossattention = CrossAttention(ac, nq, grid)


class AbsEncoder(nn.Module):
    def __init__(s, ac, nq, grid):
        super().__init__()
        s.layers = nn.ModuleList(AbsLayer(ac, nq, grid) for _ in range(ac["num_hidden_layers"]))


class Abstractor(nn.Module):
    def __init__(s, ac, d_llm):
        super().__init__()
        d, nq, grid = ac["hidden_size"], ac["num_learnable_queries"], ac["grid_size"]
        s.query_embeds = nn.Parameter(torch.zeros(1, nq, d))
        s.encoder = AbsEncoder(ac, nq, grid)
        s.visual_fc = nn.Linear(d, d_llm)
        s.vit_eos = nn.Parameter(torch.zeros(1, 1, d_llm))

    def forward(s, f):  # [B, N, d] -> [B, Q + 1, d_llm]
        x = s.query_embeds.expand(f.shape[0], -1, -1)
        for l in s.encoder.layers:
            x = l.crossattention(x, f)
        x = s.visual_fc(x)
        return torch.cat([x, s.vit_eos.expand(f.shape[0], -1, -1)], 1)


# ---------------------------------------------------------------- LLaMA with the MAM
class RMSNorm(nn.Module):
    def __init__(s, d, eps):
        super().__init__()
        s.weight, s.eps = nn.Parameter(torch.ones(d)), eps

    def forward(s, x):
        return s.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s.eps))


class Multiway(nn.Module):
    """Two copies (0 = text, 1 = visual); each position goes through the copy of its modality."""

    def __init__(s, make):
        super().__init__()
        s.multiway = nn.ModuleList([make(), make()])

    def forward(s, x, vis):  # vis: [B, T, 1] bool
        return torch.where(vis, s.multiway[1](x), s.multiway[0](x))


def rope(x, pos, theta):  # x [B, H, T, hd], rotate-half pairs (i, i + hd/2)
    hd = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = pos.float()[:, None] * inv[None]  # [T, hd/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class LlamaAttention(nn.Module):
    def __init__(s, c):
        super().__init__()
        d = c["hidden_size"]
        s.heads, s.theta = c["num_attention_heads"], c["rope_theta"]
        s.q_proj = nn.Linear(d, d, bias=False)
        s.k_proj = Multiway(lambda: nn.Linear(d, d, bias=False))
        s.v_proj = Multiway(lambda: nn.Linear(d, d, bias=False))
        s.o_proj = nn.Linear(d, d, bias=False)

    def forward(s, x, vis, pos, mask):
        B, T, d = x.shape
        hd = d // s.heads
        sp = lambda t: t.view(B, T, s.heads, hd).transpose(1, 2)
        q = rope(sp(s.q_proj(x)), pos, s.theta)
        k = rope(sp(s.k_proj(x, vis)), pos, s.theta)
        v = sp(s.v_proj(x, vis))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        return s.o_proj(a.transpose(1, 2).reshape(B, T, d))


class LlamaMlp(nn.Module):
    def __init__(s, d, f):
        super().__init__()
        s.gate_proj = nn.Linear(d, f, bias=False)
        s.up_proj = nn.Linear(d, f, bias=False)
        s.down_proj = nn.Linear(f, d, bias=False)

    def forward(s, x):
        return s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(s, c):
        super().__init__()
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        s.input_layernorm = Multiway(lambda: RMSNorm(d, eps))
        s.self_attn = LlamaAttention(c)
        s.post_attention_layernorm = Multiway(lambda: RMSNorm(d, eps))
        s.mlp = LlamaMlp(d, c["intermediate_size"])

    def forward(s, x, vis, pos, mask):
        x = x + s.self_attn(s.input_layernorm(x, vis), vis, pos, mask)
        return x + s.mlp(s.post_attention_layernorm(x, vis))


class Inner(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c["num_hidden_layers"]))
        s.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        s.vision_model = VisionModel(c["visual_config"]["visual_model"])
        s.visual_abstractor = Abstractor(c["visual_config"]["visual_abstractor"], c["hidden_size"])


class Owl2(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.config = c
        s.model = Inner(c)
        s.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def encode_images(s, px):  # [B, 3, S, S] -> [B, Q + 1, d]
        return s.model.visual_abstractor(s.model.vision_model(px))

    def splice(s, ids, img):
        """ids [B, N] with IMAGE at one place per row (same place in every row), img [B, K, d]
        -> embeddings [B, T, d], visual mask [B, T, 1]."""
        B, N = ids.shape
        at = (ids[0] == IMAGE).nonzero()
        if len(at) == 0:
            e = s.model.embed_tokens(ids)
            return e, torch.zeros(B, N, 1, dtype=torch.bool)
        p = int(at[0])
        e0 = s.model.embed_tokens(ids[:, :p])
        e1 = s.model.embed_tokens(ids[:, p + 1 :])
        K = img.shape[1]
        vis = torch.zeros(B, N - 1 + K, 1, dtype=torch.bool)
        vis[:, p : p + K] = True
        return torch.cat([e0, img, e1], 1), vis

    def forward(s, ids, px=None, hidden=False):
        """Logits [B, T, V] for ids [B, N] (one IMAGE placeholder per row when px is given)."""
        img = s.encode_images(px) if px is not None else None
        return s.decode(ids, img, hidden)

    def decode(s, ids, img, hidden=False):
        """The LLM over ids with the image features img [B, K, d] spliced in."""
        x, vis = s.splice(ids, img)
        T = x.shape[1]
        pos = torch.arange(T)
        mask = torch.full((T, T), float("-inf")).triu(1)
        outs = []
        for l in s.model.layers:
            x = l(x, vis, pos, mask)
            outs.append(x)
        y = s.model.norm(x)
        logits = s.lm_head(y)
        return (logits, outs, y) if hidden else logits


# ---------------------------------------------------------------- image preprocessing
def preprocess(img, size):
    """Owl2 `resize` mode: stretch to a max(w, h) square (PIL bicubic), then CLIP: shortest
    edge to `size` (bicubic), centre crop, /255, (x - mean) / std -> float32 [3, size, size]."""
    img = img.convert("RGB")
    m = max(img.size)
    if img.size != (m, m):
        img = img.resize((m, m), Image.BICUBIC)
    if m != size:
        img = img.resize((size, size), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


# ---------------------------------------------------------------- tokenizer
class Tokenizer:
    """SentencePiece-style BPE: merge the adjacent pair whose concatenation is a piece of
    highest score (leftmost on ties) until none; unknown characters fall back to bytes."""

    def __init__(s, pieces, scores, types):
        s.pieces, s.scores, s.types = pieces, scores, types
        s.id = {p: i for i, p in enumerate(pieces) if types[i] in (1, 4)}

    def encode(s, text):  # with the dummy prefix, no BOS
        syms = list("\u2581" + text.replace(" ", "\u2581"))
        while True:
            best = None
            for i in range(len(syms) - 1):
                m = syms[i] + syms[i + 1]
                if m in s.id and (best is None or s.scores[s.id[m]] > s.scores[s.id[best[1]]]):
                    best = (i, m)
            if best is None:
                break
            i, m = best
            syms[i : i + 2] = [m]
        out = []
        for p in syms:
            if p in s.id:
                out.append(s.id[p])
            else:
                out.extend(3 + b for b in p.encode("utf-8"))
        return out

    def decode(s, ids):
        return "".join(s.pieces[i] for i in ids if s.types[i] == 1).replace("\u2581", " ").lstrip(" ")

    def prompt(s, question):
        """`USER: <|image|>{question} ASSISTANT:` the way upstream/owlet tokenize it:
        each chunk around the image on its own (own dummy prefix), one BOS."""
        return [1] + s.encode("USER: ") + [IMAGE] + s.encode(question + " ASSISTANT:")


WORDS = (
    "USER ASSISTANT What How Is Where Describe color shape shapes is are the there many a and "
    "image yes no one two three left right top bottom center circle square triangle star "
    "red green blue yellow purple orange"
).split()


def build_vocab():
    """(pieces, scores, types): <unk> <s> </s>, 256 bytes, '▁', characters, then every
    prefix of every '▁word' so that BPE merges reach each whole word."""
    pieces, types = ["<unk>", "<s>", "</s>"], [2, 3, 3]
    pieces += ["<0x%02X>" % b for b in range(256)]
    types += [6] * 256
    chars = sorted(set("".join(WORDS)) | set("?.,:"))
    normal = ["\u2581"] + chars
    for w in WORDS:
        w = "\u2581" + w
        for k in range(2, len(w) + 1):
            if w[:k] not in normal:
                normal.append(w[:k])
    pieces += normal
    types += [1] * len(normal)
    scores = [0.0] * (259) + [-float(i) for i in range(len(normal))]
    return pieces, scores, types


def _varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    key = _varint((num << 3) | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def spm_model_proto(pieces, scores, types):
    """Serialized sentencepiece ModelProto (BPE, byte fallback, identity normalizer)."""
    out = bytearray()
    for p, sc, t in zip(pieces, scores, types):
        msg = _field(1, 2, p.encode("utf-8")) + _field(2, 5, struct.pack("<f", sc)) + _field(3, 0, _varint(t))
        out += _field(1, 2, msg)
    trainer = (
        _field(3, 0, _varint(2))  # model_type BPE
        + _field(4, 0, _varint(len(pieces)))  # vocab_size
        + _field(35, 0, _varint(1))  # byte_fallback
        + _field(40, 0, _varint(0))
        + _field(41, 0, _varint(1))
        + _field(42, 0, _varint(2))
        + _field(43, 0, _varint(-1))  # no pad piece
        + _field(45, 2, b"<unk>")
    )
    out += _field(2, 2, trainer)
    norm = (
        _field(1, 2, b"identity")
        + _field(3, 0, _varint(1))  # add_dummy_prefix
        + _field(4, 0, _varint(0))  # remove_extra_whitespaces off
        + _field(5, 0, _varint(1))  # escape_whitespaces
    )
    out += _field(3, 2, norm)
    return bytes(out)
