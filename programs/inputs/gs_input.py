#!/usr/bin/env python3
"""Writes the PostScript document for the packaged-programs suite's gs program:
`DIR/doc.ps`.

Each page draws seeded random paths (lines, Bézier curves, arcs), fills and strokes them
in colours, clips, and sets text in the standard fonts at many sizes and rotations;
PostScript procedures build arrays, strings and dictionaries as they go. Ghostscript
renders it to a PPM file; the pixels are the check (the same under every allocator).

usage: gs_input.py DIR [pages=6] [shapes=1500]
"""

import os
import random
import sys

FONTS = ["Times-Roman", "Helvetica-Bold", "Courier", "Times-Italic", "Helvetica"]
WORDS = ["sheaf", "slab", "barn", "magazine", "object", "cache", "percpu", "rcu", "kmalloc"]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gs_input.py DIR [pages] [shapes]")
    directory = sys.argv[1]
    pages = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    shapes = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
    rng = random.Random(2718)
    out = [
        "%!PS-Adobe-3.0",
        f"%%Pages: {pages}",
        "%%BoundingBox: 0 0 612 792",
        "%%EndComments",
        # A procedure that allocates: a dictionary per call, an array of points, a string.
        "/blob { 6 dict begin /n exch def /cy exch def /cx exch def",
        "  /pts [ 0 1 n 1 sub { dup 360 mul n div dup cos exch sin",
        "    2 copy mul 20 mul 30 add 3 1 roll exch 40 mul 5 add exch } for ] def",
        "  newpath cx cy moveto",
        "  0 3 pts length 4 sub { /i exch def",
        "    cx pts i get add cy pts i 1 add get add",
        "    cx pts i 2 add get add cy pts i 3 add get add",
        "    cx pts i 1 add get sub cy pts i get sub curveto } for",
        "  closepath end } def",
    ]
    for page in range(1, pages + 1):
        out.append(f"%%Page: {page} {page}")
        out.append("gsave")
        for _ in range(shapes):
            kind = rng.randrange(5)
            r, g, b = (rng.randrange(1000) / 1000 for _ in range(3))
            out.append(f"{r} {g} {b} setrgbcolor {rng.randrange(1, 40) / 10} setlinewidth")
            x, y = rng.randrange(612), rng.randrange(792)
            if kind == 0:
                points = " ".join(f"{rng.randrange(612)} {rng.randrange(792)}"
                                  for _ in range(6))
                out.append(f"newpath {x} {y} moveto {points} curveto stroke")
            elif kind == 1:
                out.append(f"newpath {x} {y} {rng.randrange(5, 80)} 0 360 arc fill")
            elif kind == 2:
                out.append(f"{x} {y} {rng.randrange(4, 24)} blob"
                           f" {'fill' if rng.randrange(2) else 'stroke'}")
            elif kind == 3:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 5)))
                out.append(f"gsave {x} {y} translate {rng.randrange(360)} rotate"
                           f" /{rng.choice(FONTS)} findfont {rng.randrange(6, 60)} scalefont"
                           f" setfont 0 0 moveto ({text}) show grestore")
            else:
                out.append(f"gsave newpath {x} {y} 60 0 360 arc clip"
                           f" 0 4 120 {{ dup {x - 60} add {y - 60} moveto"
                           f" {x - 60} add {y + 60} lineto }} for stroke grestore")
        out.append("grestore showpage")
    out.append("%%EOF")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "doc.ps"), "w", encoding="ascii") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
