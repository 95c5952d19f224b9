"""Write loop_NN.svg, the "you are here" version of training_loop.svg, for chapters 1 to 9.

Run from anywhere: ``python book/figures/make_loop_figures.py``. Each figure is the
training-loop diagram with a red frame around the step the chapter teaches.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
# chapter -> the (x, y, width, height) of the step it highlights in training_loop.svg
BOXES = {1: (20, 30, 150, 70), 2: (240, 30, 150, 70), 3: (460, 30, 170, 70),
         4: (700, 30, 180, 70), 5: (700, 200, 180, 70), 6: (460, 200, 170, 70),
         7: (535, 137, 205, 60), 8: (240, 30, 150, 70), 9: (20, 200, 150, 70)}


def main() -> None:
    source = (HERE / "training_loop.svg").read_text(encoding="utf-8")
    for chapter, (x, y, w, h) in BOXES.items():
        label_y = y - 8 if y < 100 else y + h + 18
        if chapter == 7:  # the iterate note sits between rows: label above it
            label_y = y - 10
        frame = (
            f'  <rect x="{x - 5}" y="{y - 5}" width="{w + 10}" height="{h + 10}" rx="13" '
            f'fill="none" stroke="#d93025" stroke-width="4"/>\n'
            f'  <text x="{x + w / 2}" y="{label_y}" text-anchor="middle" font-weight="bold" '
            f'fill="#d93025">you are here (chapter {chapter})</text>\n'
        )
        out = source.replace("</svg>", frame + "</svg>")
        (HERE / f"loop_{chapter:02d}.svg").write_text(out, encoding="utf-8")


if __name__ == "__main__":
    main()
