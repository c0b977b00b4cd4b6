"""Example inputs for the Edit tab, written once into a cache folder at startup.

Three kinds, labelled as such in the UI because the bundled `mini` set knows only two of them:
- SynthEdit scenes (`pipeline.synthedit`, test split): the procedural shapes-on-textures
  domain `mini` is trained on, one example per instruction family;
- looks on real photos bundled with scikit-image (never in any training batch), for sets whose
  `photo_looks` include the look (mini: its look model, measured on held-out photos at 4K);
- real photos bundled with scikit-image, each with a free-form instruction (for the Hub set).
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


LOOK_PHOTOS = (  # scikit-image loader, PhotoEdit look (its first phrasing is the instruction)
    ("astronaut", "black and white"),
    ("coffee", "sepia"),
    ("chelsea", "night"),
    ("rocket", "warmer"),
)


@dataclass(frozen=True)
class Example:
    path: Path
    instruction: str
    kind: str  # "synthedit", "look" (a PhotoEdit look on a photo) or "photo"
    look: str | None = None


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


def _skimage_photo(folder: Path, loader: str, stem: str) -> Path:
    import skimage.data

    path = folder / f"photo-{stem}.png"
    if not path.is_file():
        Image.fromarray(getattr(skimage.data, loader)()).convert("RGB").save(path)
    return path


def look_examples(folder: Path) -> list[Example]:
    from pipeline.photoedit import PHRASES

    return [Example(_skimage_photo(folder, loader, loader), PHRASES[look][0], "look", look)
            for loader, look in LOOK_PHOTOS]


def photo_examples(folder: Path) -> list[Example]:
    return [Example(_skimage_photo(folder, loader, stem), instruction, "photo") for loader, stem, instruction in PHOTOS]


def write_examples(folder: str | Path) -> list[Example]:
    """SynthEdit scenes first, then looks on photos, then photos; a source that cannot be produced is skipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples: list[Example] = []
    for make in (synthedit_examples, look_examples, photo_examples):
        try:
            examples += make(folder)
        except Exception as err:  # an optional source must not stop the app
            print(f"warning: {make.__name__} skipped: {err}")
    return examples
