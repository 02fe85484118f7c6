"""Seeded generator for the owlet-shapes task (issue 12).

An image: a plain background (white, light grey or black) with 1 to 3 filled, non-overlapping
shapes (circle, square, triangle, star) in six colours, each in its own region (left, right,
top, bottom, center) and at least 1/8 of the image side. A question about it, of one of six
types, with its exact answer.

    python3 gen.py --out DIR --n-images 60 --seed 12345   # writes DIR/NNNN.png + DIR/questions.jsonl

Only Pillow is needed. `sample(rng)` is what train.py draws from.
"""
import argparse
import json
import math
import os
import random

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star"]
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 20),
    "purple": (140, 50, 180),
    "orange": (255, 140, 0),
}
BACKGROUNDS = [(255, 255, 255), (211, 211, 211), (0, 0, 0)]
REGIONS = ["left", "right", "top", "bottom", "center"]
# Zone of the shape centre per region, as fractions of width and height: (x0, x1, y0, y1).
ZONES = {
    "left": (0.14, 0.24, 0.38, 0.62),
    "right": (0.76, 0.86, 0.38, 0.62),
    "top": (0.38, 0.62, 0.14, 0.24),
    "bottom": (0.38, 0.62, 0.76, 0.86),
    "center": (0.43, 0.57, 0.43, 0.57),
}
NUMBERS = ["one", "two", "three"]
QTYPES = ["color", "shape", "count", "exists", "where", "describe"]


def draw_shape(d, kind, cx, cy, r, fill):
    """Filled shape of 'radius' r (half its bounding box side) centred at (cx, cy)."""
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        s = r * 0.9
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    else:  # star: five points, inner radius 0.45 r
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=fill)


def scene(rng):
    """Random scene: (width, height, background, [(shape, color, region, cx, cy, r)])."""
    w = rng.randint(112, 320)
    h = w if rng.random() < 0.5 else int(w * rng.uniform(0.7, 1.4))
    h = max(112, min(448, h))
    bg = rng.choice(BACKGROUNDS)
    n = rng.randint(1, 3)
    while True:
        regions = rng.sample(REGIONS, n)
        objs = []
        for reg in regions:
            shape = rng.choice(SHAPES)
            color = rng.choice(list(COLORS))
            # Side (2r) between 1/6 and 1/4 of the shorter image side (>= 1/8 as the task asks).
            side = min(w, h) * rng.uniform(1 / 6, 1 / 4)
            x0, x1, y0, y1 = ZONES[reg]
            objs.append([shape, color, reg, rng.uniform(x0, x1) * w, rng.uniform(y0, y1) * h, side / 2])
        ok = True
        for i in range(n):
            for j in range(i + 1, n):
                a, b = objs[i], objs[j]
                if math.hypot(a[3] - b[3], a[4] - b[4]) < (a[5] + b[5]) * 1.15:
                    ok = False  # overlap
                if abs(a[3] - b[3]) < 0.08 * w:
                    ok = False  # left-to-right order must be visible
        # "What color is the X" / "Is there a C X" need distinct (shape, color) pairs.
        if len({(o[0], o[1]) for o in objs}) < n:
            ok = False
        if ok:
            return w, h, bg, [tuple(o) for o in objs]


def render(w, h, bg, objs):
    # Draw at 2x and downsample for smooth edges.
    img = Image.new("RGB", (w * 2, h * 2), bg)
    d = ImageDraw.Draw(img)
    for shape, color, _reg, cx, cy, r in objs:
        draw_shape(d, shape, cx * 2, cy * 2, r * 2, COLORS[color])
    return img.resize((w, h), Image.LANCZOS)


def describe(objs):
    parts = ["a %s %s" % (o[1], o[0]) for o in sorted(objs, key=lambda o: o[3])]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def question(rng, objs, qtype=None):
    """(type, question, answer) about the scene; the type is drawn when not given or not askable."""
    shapes = [o[0] for o in objs]
    colors = [o[1] for o in objs]
    while True:
        t = qtype or rng.choice(QTYPES)
        qtype = None
        if t == "color":
            uniq = [o for o in objs if shapes.count(o[0]) == 1]
            if not uniq:
                continue
            o = rng.choice(uniq)
            return t, "What color is the %s?" % o[0], o[1]
        if t == "shape":
            uniq = [o for o in objs if colors.count(o[1]) == 1]
            if not uniq:
                continue
            o = rng.choice(uniq)
            return t, "What shape is %s?" % o[1], o[0]
        if t == "count":
            return t, "How many shapes are there?", NUMBERS[len(objs) - 1]
        if t == "exists":
            if rng.random() < 0.5:
                o = rng.choice(objs)
                return t, "Is there a %s %s?" % (o[1], o[0]), "yes"
            present = {(o[0], o[1]) for o in objs}
            # Hard negatives half the time: the right colour or the right shape, not both.
            while True:
                if rng.random() < 0.5:
                    o = rng.choice(objs)
                    s, c = (o[0], rng.choice(list(COLORS))) if rng.random() < 0.5 else (rng.choice(SHAPES), o[1])
                else:
                    s, c = rng.choice(SHAPES), rng.choice(list(COLORS))
                if (s, c) not in present:
                    return t, "Is there a %s %s?" % (c, s), "no"
        if t == "where":
            o = rng.choice(objs)
            return t, "Where is the %s %s?" % (o[1], o[0]), o[2]
        return "describe", "Describe the image.", describe(objs)


def sample(rng, qtype=None):
    """One training example: (PIL image, type, question, answer)."""
    w, h, bg, objs = scene(rng)
    t, q, a = question(rng, objs, qtype)
    return render(w, h, bg, objs), t, q, a


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-images", type=int, default=60)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "questions.jsonl"), "w") as f:
        for i in range(args.n_images):
            w, h, bg, objs = scene(rng)
            name = "%04d.png" % i
            render(w, h, bg, objs).save(os.path.join(args.out, name), optimize=True)
            # Every type that can be asked about this image, once each.
            for t in QTYPES:
                if t == "color" and all([o[0] for o in objs].count(o[0]) > 1 for o in objs):
                    continue
                if t == "shape" and all([o[1] for o in objs].count(o[1]) > 1 for o in objs):
                    continue
                qt, q, a = question(rng, objs, t)
                f.write(json.dumps({"image": name, "type": qt, "question": q, "answer": a}) + "\n")


if __name__ == "__main__":
    main()
