"""`attn_impl: sdpa` for llm-foundry's MPT: torch's scaled_dot_product_attention.

MPT's `attn_impl: torch` (llm-foundry's scaled_multihead_dot_product_attention) multiplies out
every score and keeps them (b x heads x seq x seq, fp32 under amp) for the backward pass; SDPA
picks a fused kernel (FlashAttention, memory-efficient or math) that never stores them. Same
inputs, masks and outputs as the torch implementation (tests/training/test_attention.py);
the key/value cache is kept as the flash implementation keeps it, (batch, seq, heads x dim),
which is the layout MPT expects of every attn_impl but `torch`.

Registered in llm-foundry's `attention_implementations` registry through the entry point
`llmfoundry_attention_implementations: sdpa` (setup.py); MPT's config accepts the name once
`allow_sdpa_in_mpt()` has run (train.py runs it on every rank). MPT checks the name in three
places that know only `torch` and `flash`: its config's validation (`MPTConfig._validate_config`),
the shape of its attention bias (`attn_bias_shape`) and the bias itself (`build_attn_bias`).
SDPA takes the same additive bias as the torch implementation, so for these three `sdpa` is
answered as `torch` (hooks into llm-foundry 0.22.0's internals, behind data_prep.versions).
Everywhere else MPT compares the name, sdpa takes the branch that is right for it: the
attention mask folded into the bias (not `flash`), the key/value cache in flash's (batch, seq,
dim) layout (not `torch`), no attention weights (not `torch`).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from data_prep import versions

# The mask of the last call and whether it masks nothing: every layer of one forward (and its
# recomputation under activation checkpointing) gets the same tensors, so one device sync per
# forward decides whether the fused causal kernel can run without a mask.
_last: list = [None, None, False]


def _masks_nothing(attn_bias: Optional[torch.Tensor],
                   key_padding_mask: Optional[torch.Tensor]) -> bool:
    """True when the bias is all zeros and the padding mask all True (MPT folds an all-True
    attention_mask into a zero bias for the torch path; batches without padding look so)."""
    if attn_bias is None and key_padding_mask is None:
        return True
    if _last[0] is attn_bias and _last[1] is key_padding_mask:
        return _last[2]
    ok = torch.ones((), dtype=torch.bool, device=(attn_bias if attn_bias is not None
                                                  else key_padding_mask).device)
    if attn_bias is not None:
        ok = ok & (attn_bias == 0).all()
    if key_padding_mask is not None:
        ok = ok & key_padding_mask.all()
    _last[:] = [attn_bias, key_padding_mask, bool(ok)]
    return _last[2]


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    n_heads: int,
    kv_n_heads: int,
    past_key_value: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    softmax_scale: Optional[float] = None,
    attn_bias: Optional[torch.Tensor] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    training: bool = False,
    needs_weights: bool = False,
    attn_logit_softcapping: Optional[float] = None,
    sliding_window_size: int = -1,
    **_: object,  # flash-only arguments MPT may pass (alibi_slopes, flash_attn_padding_info)
) -> tuple[torch.Tensor, None, Optional[tuple[torch.Tensor, torch.Tensor]]]:
    """Arguments and result as llm-foundry's attention_implementations (see its registry)."""
    if needs_weights:
        raise NotImplementedError('attn_impl sdpa does not return attention weights; '
                                  'use attn_impl torch for output_attentions')
    if attn_logit_softcapping is not None:
        raise NotImplementedError('attn_impl sdpa has no logit soft-capping; use attn_impl torch')
    if past_key_value is not None:
        if len(past_key_value) != 0:
            key = torch.cat([past_key_value[0], key], dim=1)
            value = torch.cat([past_key_value[1], value], dim=1)
        past_key_value = (key, value)

    b, s_q, _ = query.shape
    s_k = key.shape[1]
    q = query.view(b, s_q, n_heads, -1).transpose(1, 2)
    k = key.view(b, s_k, kv_n_heads, -1).transpose(1, 2)
    v = value.view(b, s_k, kv_n_heads, -1).transpose(1, 2)
    if kv_n_heads < n_heads:  # grouped query: each kv head serves n_heads // kv_n_heads heads
        k = k.repeat_interleave(n_heads // kv_n_heads, dim=1)
        v = v.repeat_interleave(n_heads // kv_n_heads, dim=1)
    scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(q.shape[-1])

    causal = is_causal and s_q > 1
    mask = None
    if sliding_window_size != -1 or not _masks_nothing(attn_bias, key_padding_mask) \
            or (causal and s_q != s_k):
        # The general case, as the torch implementation builds it: an additive float mask.
        # (SDPA's own is_causal aligns the triangle top-left; MPT's is bottom-right.)
        min_val = torch.finfo(q.dtype).min
        mask = torch.zeros((1, 1, s_q, s_k), dtype=q.dtype, device=q.device)
        if attn_bias is not None:
            bias = attn_bias[:, :, max(0, attn_bias.size(2) - s_q):,
                             max(0, attn_bias.size(3) - s_k):]
            mask = mask + bias.to(q.dtype)
        if key_padding_mask is not None:
            mask = mask.masked_fill(~key_padding_mask.view(b, 1, 1, s_k), min_val)
        keep = torch.ones((s_q, s_k), dtype=torch.bool, device=q.device)
        if causal:
            keep = keep.tril(diagonal=s_k - s_q)
        if sliding_window_size != -1:
            if s_q == 1:
                keep[:, :-(sliding_window_size + 1)] = False
            else:
                keep = keep & torch.ones_like(keep).tril(sliding_window_size) \
                    & torch.ones_like(keep).triu(-sliding_window_size)
        mask = mask.masked_fill(~keep.view(1, 1, s_q, s_k), min_val)
        causal = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=dropout_p if training else 0.0,
                                         is_causal=causal, scale=scale)
    return out.transpose(1, 2).reshape(b, s_q, -1), None, past_key_value


# ----------------------------------------------------------------------------- MPT accepts the name

SDPA = 'sdpa'


def _as_torch(impl):
    return 'torch' if impl == SDPA else impl


def allow_sdpa_in_mpt() -> None:
    """MPT's three name checks answer `sdpa` as `torch`. Idempotent."""
    versions.require(versions.LLMFOUNDRY, 'training/attention.py')
    from llmfoundry.models.layers import attention
    from llmfoundry.models.mpt import configuration_mpt, modeling_mpt
    config_cls = configuration_mpt.MPTConfig
    if getattr(config_cls._validate_config, '_sdpa', False):
        return
    validate = config_cls._validate_config

    @functools.wraps(validate)
    def _validate_config(self):
        impl = self.attn_config.get('attn_impl')
        if impl != SDPA:
            return validate(self)
        self.attn_config['attn_impl'] = 'torch'
        try:
            return validate(self)
        finally:
            self.attn_config['attn_impl'] = SDPA

    _validate_config._sdpa = True
    config_cls._validate_config = _validate_config

    for name in ('attn_bias_shape', 'build_attn_bias'):
        original = getattr(attention, name)
        for module in (attention, modeling_mpt):  # modeling_mpt imported both by name
            wrapped = functools.wraps(original)(
                lambda impl, *a, _f=original, **k: _f(_as_torch(impl), *a, **k))
            setattr(module, name, wrapped)
