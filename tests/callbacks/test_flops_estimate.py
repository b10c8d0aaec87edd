"""MFU for a model without flops_per_batch (llm-foundry 0.22's hf_causal_lm): the callback's
estimate from the Hugging Face config, against the FLOPs torch itself counts in a real forward
and backward pass of a small Qwen2 (torch.utils.flop_counter, every matmul and attention)."""
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from callbacks.throughput import estimate_flops


def test_estimate_is_the_flops_torch_counts_in_a_training_step():
    torch.manual_seed(0)
    # tied embeddings: the LM head's matmul is the one use of the embedding's parameters
    cfg = Qwen2Config(vocab_size=1024, hidden_size=128, intermediate_size=384,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      attn_implementation='eager')
    model = Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 256))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops()
    n_params = sum(p.numel() for p in model.parameters())
    estimate = estimate_flops(cfg, n_params, {'input_ids': ids})
    assert abs(estimate / counted - 1) < 0.03, (estimate, counted)


def test_no_estimate_without_layers_width_or_parameter_count():
    ids = torch.zeros(2, 8, dtype=torch.long)
    assert estimate_flops(Qwen2Config(), None, {'input_ids': ids}) is None
    assert estimate_flops(object(), 1000, {'input_ids': ids}) is None
    assert estimate_flops(Qwen2Config(), 1000, {'labels': ids}) is None
