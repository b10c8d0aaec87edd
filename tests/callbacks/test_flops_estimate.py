"""MFU for a model without flops_per_batch (llm-foundry 0.22's hf_causal_lm): the callback's
estimate from the Hugging Face config, against the FLOPs torch itself counts in a real forward
and backward pass of a small Qwen2 (torch.utils.flop_counter, every matmul and attention).
Parameters count as matmul work (PaLM's convention) except an untied input embedding."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from callbacks.throughput import estimate_flops, matmul_params


def _counted(tied: bool):
    torch.manual_seed(0)
    # vocab x width is most of this model, so an embedding counted wrongly shows (~40%)
    cfg = Qwen2Config(vocab_size=4096, hidden_size=128, intermediate_size=384,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=tied,
                      attn_implementation='eager')
    model = Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 256))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    return cfg, model, ids, counter.get_total_flops()


@pytest.mark.parametrize('tied', [True, False], ids=['tied', 'untied'])
def test_estimate_is_the_flops_torch_counts_in_a_training_step(tied):
    cfg, model, ids, counted = _counted(tied)
    every = sum(p.numel() for p in model.parameters())
    matmul = matmul_params(model)
    assert matmul == (every if tied else every - cfg.vocab_size * cfg.hidden_size)
    estimate = estimate_flops(cfg, matmul, {'input_ids': ids})
    assert abs(estimate / counted - 1) < 0.03, (estimate, counted)
    if not tied:  # every parameter at 6 FLOPs a token (the old count) is far off
        old = estimate_flops(cfg, every, {'input_ids': ids})
        assert old / counted - 1 > 0.3, (old, counted)


def test_no_estimate_without_layers_width_or_parameter_count():
    ids = torch.zeros(2, 8, dtype=torch.long)
    assert estimate_flops(Qwen2Config(), None, {'input_ids': ids}) is None
    assert estimate_flops(object(), 1000, {'input_ids': ids}) is None
    assert estimate_flops(Qwen2Config(), 1000, {'labels': ids}) is None
