#!/usr/bin/env python3
"""Writes the C file for the packaged-programs suite's gcc program: `DIR/big.c`.

The file holds seeded random functions: arithmetic over locals, loops that the optimiser
unrolls and vectorises, switches, calls between static functions (inlining candidates),
structs passed by value, and a table of function pointers so that nothing is dead. `gcc -O2
-c` builds and frees many trees, RTL and bitmaps per function; the object file must be
byte-identical under every allocator.

usage: gcc_input.py DIR [functions=120]
"""

import os
import random
import sys


def expression(rng, names, depth):
    if depth == 0 or rng.randrange(3) == 0:
        return rng.choice(names) if rng.randrange(4) else str(rng.randrange(1, 1000))
    op = rng.choice(["+", "-", "*", "^", "&", "|", ">>", "<<"])
    left = expression(rng, names, depth - 1)
    right = expression(rng, names, depth - 1)
    if op in (">>", "<<"):
        right = f"({right} & 15)"
    return f"({left} {op} {right})"


def function(rng, index):
    names = ["a", "b", "c", "s.x", "s.y"]
    body = [f"static unsigned f{index}(unsigned a, unsigned b, struct pair s) {{",
            "    unsigned c = a ^ b;",
            "    unsigned acc[16] = {0};"]
    for step in range(rng.randrange(4, 12)):
        kind = rng.randrange(4)
        if kind == 0:
            body.append(f"    for (int i = 0; i < 16; i++) acc[i] += {expression(rng, names, 2)}"
                        f" + (unsigned)i * {rng.randrange(1, 50)}u;")
        elif kind == 1:
            cases = " ".join(f"case {k}: c += {expression(rng, names, 2)}; break;"
                             for k in range(rng.randrange(3, 10)))
            body.append(f"    switch (c % 11u) {{ {cases} default: c ^= {rng.randrange(99)}u; }}")
        elif kind == 2 and index > 0:
            callee = rng.randrange(index)
            body.append(f"    c += f{callee}({expression(rng, names, 1)}, c + {step}u, s);")
        else:
            body.append(f"    if (({expression(rng, names, 2)}) & 1u) a = {expression(rng, names, 3)};"
                        f" else b = {expression(rng, names, 3)};")
    body.append("    for (int i = 0; i < 16; i++) c += acc[i] * (unsigned)(i + 1);")
    body.append(f"    return c + {expression(rng, names, 3)};")
    body.append("}")
    return "\n".join(body)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gcc_input.py DIR [functions]")
    directory = sys.argv[1]
    functions = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    rng = random.Random(1618)
    out = ["struct pair { unsigned x, y; };"]
    out += [function(rng, i) for i in range(functions)]
    table = ", ".join(f"f{i}" for i in range(functions))
    out.append(f"unsigned (*const table[{functions}])(unsigned, unsigned, struct pair)"
               f" = {{ {table} }};")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "big.c"), "w", encoding="ascii") as f:
        f.write("\n\n".join(out) + "\n")


if __name__ == "__main__":
    main()
