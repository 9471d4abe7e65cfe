"""The causal LM task: the shift, ignored labels, padding, token-weighted perplexity, batch forms."""

import math

import pytest
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.tasks import build_task
from raysparse.tasks.causal_lm import CausalLM, CausalLMOptions


class Bigram(nn.Module):
    """logits[t] depend on token t only: the loss is easy to compute by hand."""

    def __init__(self, vocab=7):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, input_ids, attention_mask=None):
        return self.table(input_ids)


@torch.no_grad()
def by_hand(model, ids, labels=None, ignore=-100):
    """Sum of -log p(label[t + 1] | token t) and the tokens it counts."""
    labels = ids if labels is None else labels
    logits = model(ids)
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == ignore:
                continue
            total -= float(torch.log_softmax(logits[b, t], -1)[target])
            count += 1
    return total, count


def test_the_loss_predicts_the_next_token_once_shifted():
    model, task = Bigram(), CausalLM()
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 5, 4, 3, 2]])
    loss, tokens = task.loss(model, ids)
    total, count = by_hand(model, ids)
    assert tokens == count == 8
    assert loss.item() == pytest.approx(total / count, rel=1e-6)


def test_ignored_labels_and_padding_count_nowhere():
    model, task = Bigram(), CausalLM()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    labels = torch.tensor([[1, 2, -100, 4, 5]])
    loss, tokens = task.loss(model, (ids, labels))
    assert tokens == 3 and loss.item() == pytest.approx(by_hand(model, ids, labels)[0] / 3, rel=1e-6)
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}
    loss, tokens = task.loss(model, padded)
    assert tokens == 2  # the labels at positions 1 and 2: 3 and 4 are padding
    masked = torch.tensor([[1, 2, 3, -100, -100]])
    assert loss.item() == pytest.approx(by_hand(model, ids, masked)[0] / 2, rel=1e-6)


def test_a_dict_batch_reaches_the_model_as_keywords_without_labels():
    seen = {}

    class Keywords(Bigram):
        def forward(self, input_ids, attention_mask=None):
            seen.update(mask=attention_mask)
            return super().forward(input_ids)

    ids = torch.tensor([[1, 2, 3]])
    CausalLM().loss(Keywords(), {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    assert torch.equal(seen["mask"], torch.ones_like(ids))


def test_perplexity_is_the_exp_of_the_token_weighted_mean_not_a_mean_of_batch_perplexities():
    model, task = Bigram(), CausalLM()
    long, short = torch.tensor([[1, 2, 3, 4, 5, 6, 1, 2, 3]]), torch.tensor([[6, 6]])
    metrics = task.evaluate(model, [long, short], torch.device("cpu"))
    (t1, n1), (t2, n2) = by_hand(model, long), by_hand(model, short)
    assert metrics["loss"] == pytest.approx((t1 + t2) / (n1 + n2), rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp((t1 + t2) / (n1 + n2)), rel=1e-6)
    mean_of_batches = (math.exp(t1 / n1) + math.exp(t2 / n2)) / 2
    assert metrics["perplexity"] != pytest.approx(mean_of_batches, rel=1e-3)


def test_an_hf_style_output_with_logits_is_read():
    class Output:
        def __init__(self, logits):
            self.logits = logits

    class Wrapped(Bigram):
        def forward(self, input_ids, attention_mask=None):
            return Output(super().forward(input_ids))

    ids = torch.tensor([[1, 2, 3, 4]])
    assert CausalLM().loss(Wrapped(), ids)[0].item() == pytest.approx(CausalLM().loss(Bigram(), ids)[0].item())


def test_options_by_name_and_bad_ones_name_the_field():
    task = build_task({"name": "causal_lm", "ignore_index": -1})
    assert isinstance(task, CausalLM) and task.options == CausalLMOptions(ignore_index=-1)
    with pytest.raises(ConfigError) as caught:
        build_task({"name": "causal_lm", "ignore_indx": -1})
    assert caught.value.field == "task.ignore_indx" and "ignore_index" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        build_task({"name": "causal_lm", "ignore_index": "none"})
    assert caught.value.field == "task.ignore_index"
    with pytest.raises(ConfigError) as caught:
        build_task("causal_llm")
    assert caught.value.field == "task" and "causal_lm" in caught.value.message


def test_data_and_outputs_of_the_wrong_form_are_one_error():
    task = CausalLM()
    with pytest.raises(ConfigError, match="1-d integer tensor"):
        task.describe_data({"train": [torch.zeros(8)]}, {}, "data.factory", "'pkg:make'")
    assert task.describe_data({"train": [torch.arange(8)]}, {"vocab_size": 9}, "f", "w") == \
        {"vocab_size": 9, "block_size": 8}
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ConfigError, match=r"give logits \[1, 7\]"):
        task.check_output(torch.zeros(1, 7), ids, {}, "model")
    with pytest.raises(ConfigError, match="vocab >= 9"):
        task.check_output(torch.zeros(1, 3, 7), ids, {"vocab_size": 9}, "model")
    task.check_output(torch.zeros(1, 3, 7), ids, {"vocab_size": 7}, "model")


def test_evaluation_in_parts_of_at_most_eval_tokens_gives_the_whole_batchs_perplexity():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))
    ids = torch.randint(0, 11, (7, 6))
    loader = [ids[:5], ids[5:]]
    whole = CausalLM(CausalLMOptions(eval_tokens=10**6)).evaluate(model, loader, torch.device("cpu"))
    parts = CausalLM(CausalLMOptions(eval_tokens=7)).evaluate(model, loader, torch.device("cpu"))  # one row each
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-6)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_eval_tokens_is_a_positive_integer(value):
    with pytest.raises(ConfigError, match=r"task.eval_tokens.*allowed: an integer >= 1"):
        CausalLMOptions(eval_tokens=value)
