"""The real CLIP BPE tokenizer built offline from the vocabulary that ships in `open-clip-torch`.

Only needed to (re)build a model set: the bundled set stores the resulting `tokenizer/` folder.
The derivation follows CLIP's `SimpleTokenizer`: 256 byte characters, the same with `</w>`, the
first 48,894 merges, then the two special tokens: 49,408 tokens, ids identical to open_clip's.
"""
from __future__ import annotations

import gzip
import json
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer(out_dir: str | Path) -> CLIPTokenizer:
    """Write vocab/merges from open_clip's BPE file and return a `CLIPTokenizer` saved in `out_dir`."""
    spec = importlib.util.find_spec("open_clip")  # located, not imported: open_clip imports torchvision
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building the tokenizer needs `pip install --no-deps open-clip-torch`")
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    text = gzip.decompress(bpe.read_bytes()).decode("utf-8")
    merges = text.split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    raw = out / "_bpe"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(raw, model_max_length=77)
    tokenizer.save_pretrained(out)
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    return tokenizer
