"""MPT's `attn_impl: sdpa` (training/attention.py) gives what llm-foundry's `attn_impl: torch`
gives: the same MPT built both ways with the same weights, on the CPU in fp32, forward logits and
every gradient within 1e-5 (absolute, plus 1e-4 relative), for causal batches without padding
(the fused-kernel path), right padding, grouped-query attention, ALiBi, and decoding with the
key/value cache."""
import pytest
import torch

from training import attention

TOL = {'atol': 1e-5, 'rtol': 1e-4}


def _pair(**attn):
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    attention.allow_sdpa_in_mpt()
    models = []
    for impl in ('torch', 'sdpa'):
        torch.manual_seed(0)
        cfg = MPTConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=32,
                        vocab_size=97, attn_config={'attn_impl': impl, **attn},
                        init_device='cpu', no_bias=True)
        models.append(MPTForCausalLM(cfg))
    models[1].load_state_dict(models[0].state_dict())
    from training.attention import sdpa_attention
    assert models[1].transformer.blocks[0].attn.attn_fn is sdpa_attention
    assert models[0].transformer.blocks[0].attn.attn_fn is not sdpa_attention
    return models


def _run(model, ids, mask):
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    logits.float().pow(2).mean().backward()  # any scalar of every logit: gradients everywhere
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_registered_through_the_entry_point():
    from llmfoundry.layers_registry import attention_implementations

    from training.attention import sdpa_attention
    assert attention_implementations.get('sdpa') is sdpa_attention


@pytest.mark.parametrize('attn,padded', [
    ({}, False),
    ({}, True),
    ({'attn_type': 'grouped_query_attention', 'kv_n_heads': 2}, False),
    ({'alibi': True}, True),
], ids=['causal', 'right-padding', 'grouped-query', 'alibi-padding'])
def test_same_outputs_and_gradients_as_torch_attention(attn, padded):
    ref, sdpa = _pair(**attn)
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 32))
    mask = torch.ones_like(ids, dtype=torch.bool)
    if padded:
        mask[1, 20:] = False
        mask[2, 9:] = False
    (a, grads_a), (b, grads_b) = _run(ref, ids, mask), _run(sdpa, ids, mask)
    keep = mask.unsqueeze(-1).expand_as(a)  # padded positions' logits are not used
    torch.testing.assert_close(b[keep], a[keep], **TOL)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, **TOL, msg=name)


def test_decoding_with_the_key_value_cache():
    ref, sdpa = _pair()
    torch.manual_seed(2)
    ids = torch.randint(0, 97, (2, 12))
    outs = []
    for model in (ref, sdpa):
        model.eval()
        with torch.no_grad():
            first = model(input_ids=ids[:, :10], use_cache=True)
            step = model(input_ids=ids[:, 10:], past_key_values=first.past_key_values,
                         use_cache=True)
            whole = model(input_ids=ids).logits
        torch.testing.assert_close(step.logits, whole[:, 10:], **TOL)
        outs.append(step.logits)
    torch.testing.assert_close(outs[1], outs[0], **TOL)
