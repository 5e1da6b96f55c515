"""A visual Turing test: a blinded real-vs-synthetic reading set, a local page to read it, and its scores.

    cytoray turing build --generator syncgan@champion --data data/herlev --n 40 --out reading/herlev
    cytoray turing serve reading/herlev --reader alice        # http://127.0.0.1:8765
    cytoray turing score reading/herlev --log                 # per reader + pooled, to the generator's run

Layout. `build` writes the served folder `<out>/` (`images/<opaque id>.png` and `set.json`: the ids
in reading order, the classes, nothing about where an image came from) and the key as a sibling
file `<out>.key.json`, outside the served folder, so a reader browsing the folder never meets it.
`serve` never opens the key at all; answers go to `<out>/answers/<reader>.json`. `score` joins the
answers with the key.
"""

from __future__ import annotations

from pathlib import Path

SET_FILE = "set.json"  # in the served folder: ids and classes only
IMAGES = "images"
ANSWERS = "answers"
SOURCES = ("real", "synthetic")
CONFIDENCE = (1, 2, 3)  # 1 = guessing, 2 = leaning, 3 = sure


def key_path(reading_dir: str | Path) -> Path:
    """The key of a reading set: a sibling of the served folder (`<out>.key.json`), never inside it."""
    d = Path(reading_dir).resolve()
    return d.with_name(f"{d.name}.key.json")
