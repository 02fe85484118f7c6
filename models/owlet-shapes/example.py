"""Draws `example.png`, the image `owlet run` asks about when given no image and no prompt.

    python3 example.py            # writes example.png next to this file

A fixed scene (no randomness), drawn with gen.py's renderer: a white 224x160 background with a
red circle on the left, a yellow star at the top and a blue square on the right. The answer
to "Describe the image." is printed.
"""
import os

import gen

W, H = 224, 160
OBJS = [
    # (shape, colour, region, centre x, centre y, radius)
    ("circle", "red", "left", 0.19 * W, 0.5 * H, 0.11 * H),
    ("star", "yellow", "top", 0.5 * W, 0.2 * H, 0.11 * H),
    ("square", "blue", "right", 0.81 * W, 0.5 * H, 0.11 * H),
]

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "example.png")
    gen.render(W, H, (255, 255, 255), OBJS).save(out, optimize=True)
    print(out, "->", gen.describe(OBJS))
