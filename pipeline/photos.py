"""The photo pool: real photographs fetched from Debian wallpaper packages into a cache outside the repo.

`python -m pipeline.train photos` runs `apt-get download` + `dpkg-deb -x` for each package in
`PACKAGES` (nothing is installed), keeps the listed files (chosen by eye on contact sheets: real
photos, no renders or illustrations), reads each file's licence and copyright from the package's
machine-readable `debian/copyright` and writes `manifest.json` (package, version, path, licence,
copyright, size in pixels and bytes, split) next to them. Photos are never committed.

The split is by photo and fixed by the photo's name alone (a hash), so adding or removing packages
never moves a photo between train, validation and test.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

CACHE_ENV = "MOBILEPICASSO_PHOTOS"
SPLIT_BUCKETS = {"test": range(0, 2), "validation": range(2, 3), "train": range(3, 10)}  # of 10 hash buckets

_LOMIRI = "usr/share/backgrounds"
_MATE = "usr/share/backgrounds/mate/nature"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
PACKAGES: dict[str, tuple[str, ...]] = {
    "lomiri-wallpapers-16.04": tuple(f"{_LOMIRI}/{n}.jpg" for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
        "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")),
    "lomiri-wallpapers-20.04": (f"{_LOMIRI}/Kleiber_by_Lukas_Baubkus.jpg",),
    "mate-backgrounds": tuple(f"{_MATE}/{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower")),
    "plasma-workspace-wallpapers": tuple(_PLASMA.format(n) for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Kite",
        "OneStandsOut", "Path", "summer_1am")),
}


@dataclass(frozen=True)
class Photo:
    id: str            # "<package>:<stem>", stable
    package: str
    version: str
    path: str          # inside the package
    licence: str       # SPDX-style short name from debian/copyright
    copyright: str
    width: int
    height: int
    bytes: int
    split: str

    def file(self, cache: Path | None = None) -> Path:
        return photo_dir(cache) / self.package / self.path


def photo_dir(cache: str | Path | None = None) -> Path:
    """The cache folder: `cache`, else $MOBILEPICASSO_PHOTOS, else ~/.cache/mobilepicasso/photos."""
    return Path(cache or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mobilepicasso" / "photos")


def photo_id(package: str, path: str) -> str:
    stem = Path(path).stem if "/contents/images/" not in path else path.split("/")[3]
    return f"{package}:{stem}"


def split_of(pid: str) -> str:
    bucket = int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "little") % 10
    return next(name for name, r in SPLIT_BUCKETS.items() if bucket in r)


def parse_copyright(text: str) -> list[tuple[list[str], str, str]]:
    """DEP-5 `Files` paragraphs as (patterns, licence, copyright), in file order."""
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()]
        if "Files" in fields and "License" in fields:
            patterns = " ".join(fields["Files"]).split()
            out.append((patterns, fields["License"][0], " ".join(fields.get("Copyright", [""])).strip()))
    return out


def licence_of(path: str, paragraphs: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """(licence, copyright) of `path`: the last paragraph with a pattern matching the path's tail
    (DEP-5: the last match wins; packages list paths relative to their source tree, not the install)."""
    parts = path.split("/")
    found = None
    for patterns, licence, holder in paragraphs:
        for pat in patterns:
            k = pat.count("/") + 1
            if fnmatch.fnmatchcase("/".join(parts[-k:]), pat) or (
                    k > 1 and fnmatch.fnmatchcase(parts[-1], pat.split("/")[-1]) and "*" not in pat):
                found = (licence, holder)
    if found is None:
        raise ValueError(f"no licence recorded for {path}")
    return found


def fetch_package(package: str, cache: Path) -> tuple[Path, str]:
    """apt-get download + dpkg-deb -x into cache/<package>; returns (root, version)."""
    root = cache / package
    stamp = root / ".version"
    if stamp.is_file():
        return root, stamp.read_text().strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    stamp.write_text(version)
    return root, version


def build_pool(cache: str | Path | None = None) -> list[Photo]:
    """Fetch every package, record each listed photo, write manifest.json; returns the photos."""
    cache = photo_dir(cache)
    cache.mkdir(parents=True, exist_ok=True)
    photos = []
    for package, paths in PACKAGES.items():
        root, version = fetch_package(package, cache)
        paragraphs = parse_copyright((root / "usr/share/doc" / package / "copyright").read_text("utf-8"))
        for path in paths:
            f = root / path
            with Image.open(f) as im:
                w, h = im.size
            licence, holder = licence_of(path, paragraphs)
            pid = photo_id(package, path)
            photos.append(Photo(pid, package, version, path, licence, holder, w, h, f.stat().st_size, split_of(pid)))
    (cache / "manifest.json").write_text(json.dumps([asdict(p) for p in photos], indent=1))
    return photos


def load_pool(cache: str | Path | None = None, split: str | None = None) -> list[Photo]:
    """The photos of the manifest whose files are present (all splits or one); [] when there is no pool."""
    manifest = photo_dir(cache) / "manifest.json"
    if not manifest.is_file():
        return []
    photos = [Photo(**row) for row in json.loads(manifest.read_text())]
    return [p for p in photos if (split is None or p.split == split) and p.file(cache).is_file()]


@lru_cache(maxsize=40)
def open_photo(file: str) -> Image.Image:
    """The decoded photo (RGB), kept for reuse (the whole pool is a few hundred MB): crops at many scales
    are cut from one decode, and a 4K JPEG decode costs more than a training step."""
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(file) as im:
        return im.convert("RGB")
