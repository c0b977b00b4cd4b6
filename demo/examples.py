"""Example inputs for the Edit tab, written once into a cache folder at startup.

Two kinds, labelled as such in the UI because the bundled `mini` set only knows one of them:
- SynthEdit scenes (`pipeline.synthedit`, test split): the procedural shapes-on-textures
  domain `mini` is trained on, one example per instruction family;
- real photos bundled with scikit-image, each with a fitting instruction (for the Hub set).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

SYNTHEDIT_LONG_SIDE = 768
PHOTOS = (  # scikit-image loader, file stem, instruction
    ("astronaut", "astronaut", "put a red knitted scarf around her neck"),
    ("chelsea", "cat", "turn the cat's fur black and white"),
    ("coffee", "coffee", "replace the coffee with green tea"),
    ("rocket", "rocket", "make it a night launch with a starry sky"),
)


@dataclass(frozen=True)
class Example:
    path: Path
    instruction: str
    kind: str  # "synthedit" or "photo"


def synthedit_examples(folder: Path, families: tuple[str, ...] = ("recolour", "remove", "add", "background", "global"),
                       ) -> list[Example]:
    """The first test-split scene of each family, rendered at its native aspect."""
    from pipeline import synthedit

    found: dict[str, Example] = {}
    for seed in synthedit.split_seeds("test", 200):
        example = synthedit.sample(seed)
        if example.family not in families or example.family in found:
            continue
        path = folder / f"synthedit-{seed}.png"
        if not path.is_file():
            example.source(*example.size(SYNTHEDIT_LONG_SIDE)).save(path)
        found[example.family] = Example(path, example.instruction, "synthedit")
        if len(found) == len(families):
            break
    return [found[f] for f in families if f in found]


def photo_examples(folder: Path) -> list[Example]:
    import skimage.data

    out = []
    for loader, stem, instruction in PHOTOS:
        path = folder / f"photo-{stem}.png"
        if not path.is_file():
            Image.fromarray(getattr(skimage.data, loader)()).convert("RGB").save(path)
        out.append(Example(path, instruction, "photo"))
    return out


def write_examples(folder: str | Path) -> list[Example]:
    """SynthEdit scenes first, then photos; a source that cannot be produced is skipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples: list[Example] = []
    for make in (synthedit_examples, photo_examples):
        try:
            examples += make(folder)
        except Exception as err:  # an optional source must not stop the app
            print(f"warning: {make.__name__} skipped: {err}")
    return examples
