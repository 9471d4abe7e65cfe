"""Plain text as a language-modelling dataset, registered as dataset ``text``.

The documents (one file, or a directory's ``*.txt`` files) are tokenized into one stream, cut into
blocks of ``block_size`` token ids, and the blocks are split into train / val / test. A causal LM
task shifts labels itself, so an example is just its block.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from raysparse.errors import ConfigError
from raysparse.zoo.datasets import (
    DATASETS,
    TEST_HOLDOUT_SEED,
    DataSplits,
    SplitOptions,
    optional_positive_int,
    train_val_indices,
)

BYTE_SEPARATOR = "\n\n"  # between documents with the byte tokenizer


class TokenBlocks(Dataset):
    """Blocks of token ids: example ``i`` is a LongTensor ``[block_size]``. ``source_index`` is
    each block's position in the token stream (block ``k`` holds tokens ``k * block_size ...``)."""

    def __init__(self, blocks: Tensor, source_index: Tensor):
        self.blocks, self.source_index = blocks, source_index

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Tensor:
        # stored in the stream's compact dtype (uint8 for bytes, int32 for HF): 8x or 2x less memory than int64
        return self.blocks[i].long()


@DATASETS.register("text")
def text(common: SplitOptions, *, path: str | None = None, tokenizer: str = "bytes",
         block_size: int = 128, test_fraction: float = 0.1) -> DataSplits:
    """Text from ``path`` (a UTF-8 file, or a directory whose ``*.txt`` files are read in sorted
    order), tokenized by ``tokenizer`` (``"bytes"``: UTF-8 bytes, vocabulary 256; or a local
    HuggingFace tokenizer directory, which needs ``pip install raysparse[hf]``).

    The test split is a ``test_fraction`` of the blocks chosen with a fixed seed, so test numbers
    compare across run seeds; val and train are split from the rest with the run seed (``limit``
    and ``val_fraction`` apply there). ``info`` is ``{"vocab_size", "block_size"}``.
    """
    field = common.field
    if block_size is None:  # optional_positive_int lets None through; a block needs a size
        raise ConfigError(f"{field}.block_size", "got None; allowed: a positive integer")
    block_size = optional_positive_int(block_size, f"{field}.block_size")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction <= 0.5:
        raise ConfigError(f"{field}.test_fraction", f"got {test_fraction!r}; allowed: a number in (0, 0.5]")
    documents = read_documents(path, f"{field}.path")
    if tokenizer == "bytes":
        stream = torch.frombuffer(bytearray(BYTE_SEPARATOR.join(documents).encode("utf-8")), dtype=torch.uint8)
        vocab_size = 256
    else:
        stream, vocab_size = _hf_tokenize(documents, tokenizer, f"{field}.tokenizer")
    num_blocks = len(stream) // block_size  # the tail that does not fill a block is dropped
    blocks = stream[: num_blocks * block_size].view(num_blocks, block_size)

    order = np.random.default_rng(TEST_HOLDOUT_SEED).permutation(num_blocks)
    num_test = round(num_blocks * test_fraction)
    pool, test_index = order[num_test:], order[:num_test]
    train_pos, val_pos = train_val_indices(len(pool), common)
    sizes = {"train": len(train_pos), "val": len(val_pos), "test": num_test}
    # an empty val split is what val_fraction=0 asks for; any other empty split is too little text
    if any(count == 0 and not (name == "val" and common.val_fraction == 0) for name, count in sizes.items()):
        counts = ", ".join(f"{count} {name}" for name, count in sizes.items())
        raise ConfigError(f"{field}.path", (
            f"too little text: {len(stream)} tokens make {num_blocks} blocks of block_size={block_size} "
            f"({counts} with test_fraction={test_fraction}, val_fraction={common.val_fraction}, "
            f"limit={common.limit}); every split needs at least one block: give more text or a smaller block_size"))

    def split(index: np.ndarray) -> TokenBlocks:
        index = torch.from_numpy(index)
        return TokenBlocks(blocks[index], index)

    return DataSplits(train=split(pool[train_pos]), val=split(pool[val_pos]), test=split(test_index),
                      info={"vocab_size": vocab_size, "block_size": block_size})


def read_documents(path: object, field: str) -> list[str]:
    """The non-empty documents at ``path``: the file's text, or each ``*.txt`` file's text in
    sorted order when ``path`` is a directory."""
    allowed = "a UTF-8 text file or a directory of *.txt files"
    if path is None:
        raise ConfigError(field, f"missing; expected {allowed}")
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(field, f"got {path!r}; allowed: {allowed}")
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(file for file in path.glob("*.txt") if file.is_file())
        if not files:
            raise ConfigError(field, f"{str(path)!r} has no *.txt files; expected {allowed}")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(field, f"{str(path)!r} does not exist; expected {allowed}")
    documents = []
    for file in files:
        try:
            documents.append(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ConfigError(field, f"{str(file)!r} is not UTF-8 text (byte {error.start}: "
                                     f"{error.reason}); expected {allowed}") from None
    documents = [document for document in documents if document]
    if not documents:
        raise ConfigError(field, f"{str(path)!r} holds no text; expected {allowed}")
    return documents


def _hf_tokenize(documents: list[str], tokenizer: object, field: str) -> tuple[Tensor, int]:
    """The token stream of ``documents`` under a local HuggingFace tokenizer, joined by its
    end-of-sequence token when it has one, and the tokenizer's vocabulary size."""
    allowed = "'bytes' or the directory of a local HuggingFace tokenizer"
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise ConfigError(field, f"got {tokenizer!r}; allowed: {allowed}")
    # transformers is optional and takes seconds to import: found first, imported after the cheap checks
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(field, f"got {str(tokenizer)!r}; a HuggingFace tokenizer needs transformers: "
                                 "pip install raysparse[hf] (or use tokenizer: bytes)")
    if not Path(tokenizer).expanduser().is_dir():
        raise ConfigError(field, f"{str(tokenizer)!r} is not a directory; allowed: {allowed}")
    from raysparse.zoo.hf import load_tokenizer

    hf = load_tokenizer(Path(tokenizer).expanduser(), field)
    separator = [] if hf.eos_token_id is None else [hf.eos_token_id]
    ids: list[int] = []
    for i, document in enumerate(documents):
        # verbose=False: a document longer than the model's context is fine, it is cut into blocks
        ids += (separator if i else []) + hf(document, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int32), len(hf)
