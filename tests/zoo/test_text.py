"""The built-in text dataset: blocks of token ids split into train / val / test, and its errors."""

import importlib.util
import sys

import pytest
import torch

from raysparse.config import with_absolute_paths
from raysparse.errors import ConfigError
from raysparse.zoo import make_loader
from raysparse.zoo.datasets import build_data, check_data_spec

TEXT = "".join(f"line {i}: héllo wörld\n" for i in range(200))  # non-ASCII: multi-byte UTF-8


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def text_data(path, seed=0, **options):
    return build_data({"name": "text", "path": str(path), "block_size": 16, **options}, seed=seed)


def indices(splits):
    return [split.source_index.tolist() for split in (splits.train, splits.val, splits.test)]


def test_splits_are_disjoint_cover_every_block_and_give_blocks_of_token_ids(text_file):
    splits = text_data(text_file)
    num_blocks = len(TEXT.encode()) // 16
    train, val, test = indices(splits)
    assert sorted(train + val + test) == list(range(num_blocks))  # disjoint, nothing lost
    assert (len(test), len(val)) == (round(num_blocks * 0.1), round((num_blocks - len(test)) * 0.1))
    assert splits.info == {"vocab_size": 256, "block_size": 16}
    example = splits.train[0]
    assert example.dtype == torch.long and example.shape == (16,)
    batch = next(iter(make_loader(splits.train, batch_size=4, shuffle=True, generator=torch.Generator())))
    assert batch.dtype == torch.long and batch.shape == (4, 16)


def test_same_seed_same_splits_other_seed_same_test_split_only(text_file):
    first, again, other = text_data(text_file, seed=0), text_data(text_file, seed=0), text_data(text_file, seed=1)
    assert indices(first) == indices(again)
    assert torch.equal(first.train.blocks, again.train.blocks)
    assert indices(other)[2] == indices(first)[2]  # test numbers compare across seeds
    assert indices(other)[0] != indices(first)[0] and indices(other)[1] != indices(first)[1]


def test_limit_cuts_train_and_val_but_not_test(text_file):
    full, limited = text_data(text_file), text_data(text_file, limit=20, val_fraction=0.25)
    assert (len(limited.train), len(limited.val)) == (15, 5)
    assert indices(limited)[2] == indices(full)[2]


def test_byte_blocks_are_the_files_utf8_bytes_in_order(text_file):
    splits = text_data(text_file)
    by_position = {}
    for split in (splits.train, splits.val, splits.test):
        by_position |= {int(k): split[i] for i, k in enumerate(split.source_index)}
    stream = torch.cat([by_position[k] for k in sorted(by_position)])
    encoded = TEXT.encode("utf-8")
    assert bytes(stream.tolist()) == encoded[: len(encoded) // 16 * 16]  # the tail is dropped
    assert bytes(stream.tolist()).decode("utf-8", errors="ignore").startswith("line 0: héllo wörld\nline 1")


def test_a_directory_is_its_txt_files_in_sorted_order_joined_by_blank_lines(tmp_path):
    (tmp_path / "b.txt").write_text("B" * 30)
    (tmp_path / "a.txt").write_text("A" * 30)
    (tmp_path / "c.md").write_text("not read")
    splits = build_data({"name": "text", "path": str(tmp_path), "block_size": 2}, seed=0)
    blocks = {int(k): bytes(split[i].tolist()) for split in (splits.train, splits.val, splits.test)
              for i, k in enumerate(split.source_index)}
    assert b"".join(blocks[k] for k in sorted(blocks)) == b"A" * 30 + b"\n\n" + b"B" * 30


def test_spec_checks_without_data_and_a_typo_gets_a_suggestion(text_file):
    check_data_spec({"name": "text", "path": str(text_file), "block_size": 16, "tokenizer": "bytes"})
    with pytest.raises(ConfigError) as excinfo:
        check_data_spec({"name": "text", "path": str(text_file), "block_sise": 16})
    assert excinfo.value.field == "data.block_sise" and "did you mean 'block_size'" in str(excinfo.value)


def test_a_relative_data_path_is_made_absolute_for_trials_that_run_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = with_absolute_paths({"data": {"name": "text", "path": "corpus.txt"}})
    assert resolved["data"]["path"] == str(tmp_path.resolve() / "corpus.txt")


@pytest.mark.parametrize(("write", "path", "message"), [
    (None, None, "missing; expected a UTF-8 text file or a directory of *.txt files"),
    (None, "absent.txt", "does not exist"),
    (b"caf\xe9 au lait", "latin1.txt", "is not UTF-8 text (byte 3"),
    (b"", "empty.txt", "holds no text"),
    (None, ".", "has no *.txt files"),
    (b"x" * 40, "short.txt", "too little text: 40 tokens make 2 blocks of block_size=16 (2 train, 0 val, 0 test"),
], ids=["missing", "absent", "not-utf8", "empty", "no-txt-in-directory", "too-short"])
def test_bad_text_raises_a_config_error_naming_data_path(tmp_path, write, path, message):
    if write is not None:
        (tmp_path / path).write_bytes(write)
    spec = {"name": "text", "block_size": 16}
    if path is not None:
        spec["path"] = str(tmp_path / path)
    with pytest.raises(ConfigError) as excinfo:
        build_data(spec, seed=0)
    assert excinfo.value.field == "data.path" and message in str(excinfo.value)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("block_size", 0, "expected a positive integer, got 0"),
    ("block_size", None, "got None; allowed: a positive integer"),
    ("test_fraction", 0, "got 0; allowed: a number in (0, 0.5]"),
    ("test_fraction", 0.9, "got 0.9; allowed: a number in (0, 0.5]"),
    ("tokenizer", 3, "got 3; allowed: 'bytes' or the directory of a local HuggingFace tokenizer"),
])
def test_bad_options_name_the_option(text_file, option, value, message):
    with pytest.raises(ConfigError) as excinfo:
        text_data(text_file, **{option: value})
    assert excinfo.value.field == f"data.{option}" and message in str(excinfo.value)


def test_a_tokenizer_path_needs_transformers_and_a_directory(text_file):
    with pytest.raises(ConfigError) as excinfo:
        text_data(text_file, tokenizer=str(text_file))  # a file, not a tokenizer directory
    assert excinfo.value.field == "data.tokenizer"
    if importlib.util.find_spec("transformers") is None:
        assert "pip install raysparse[hf]" in str(excinfo.value)
    else:
        assert "is not a directory" in str(excinfo.value)


def test_without_transformers_a_tokenizer_directory_asks_for_the_hf_extra(text_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an environment without it finds
    with pytest.raises(ConfigError) as excinfo:
        text_data(text_file, tokenizer=str(tmp_path))
    assert excinfo.value.field == "data.tokenizer" and "pip install raysparse[hf]" in str(excinfo.value)


def test_a_tokenizer_directory_and_other_evaluation_texts_are_made_absolute_but_bytes_stays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"name": "text", "path": "a.txt", "tokenizer": "tok"},
           "robustness": {"datasets": {"wiki": {"name": "text", "path": "wiki.txt"}}}}
    resolved = with_absolute_paths(raw)
    assert resolved["data"]["tokenizer"] == str(tmp_path / "tok")
    assert resolved["robustness"]["datasets"]["wiki"]["path"] == str(tmp_path / "wiki.txt")
    assert with_absolute_paths({"data": {"name": "text", "path": "a.txt"}})["data"].get("tokenizer") is None
    assert with_absolute_paths({"data": {"tokenizer": "bytes"}})["data"]["tokenizer"] == "bytes"


def test_a_local_huggingface_tokenizer_tokenizes_the_text_with_its_end_of_text_between_documents(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the cat sat on a mat dog ran".split()
    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the cat sat on a mat " * 20)
    (tmp_path / "docs" / "b.txt").write_text("the dog ran " * 20)
    data = build_data({"name": "text", "path": str(tmp_path / "docs"), "tokenizer": str(tmp_path / "tok"),
                       "block_size": 8, "test_fraction": 0.2}, seed=0)
    assert data.info == {"vocab_size": len(vocab), "block_size": 8}
    blocks = torch.cat([data.train[i] for i in range(len(data.train))])
    assert blocks.dtype == torch.long and int(blocks.max()) < len(vocab) and 0 not in blocks.tolist()  # no unknowns
    # 120 tokens of a.txt, <eos>, 60 of b.txt: 22 whole blocks; the <eos> opens block 15
    by_position = {int(k): split[i] for split in (data.train, data.val, data.test)
                   for i, k in enumerate(split.source_index)}
    assert sorted(by_position) == list(range(22))
    the, dog, ran = vocab["the"], vocab["dog"], vocab["ran"]
    assert by_position[15].tolist() == [1, the, dog, ran, the, dog, ran, the]
