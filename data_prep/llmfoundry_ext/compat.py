"""The only code that reaches into llm-foundry's internals, pinned to llm-foundry 0.22.0.

Two changes, each opted into and each the narrowest hook found:

- MPT accepts `attn_impl: sdpa` (attention.py). MPT checks the name in three places that
  know only `torch` and `flash`: its config's validation (`MPTConfig._validate_config`), the
  shape of its attention bias (`attn_bias_shape`) and the bias itself (`build_attn_bias`).
  SDPA takes the same additive bias as the torch implementation, so for these three `sdpa` is
  answered as `torch`. Everywhere else MPT compares the name, sdpa takes the branch that is
  right for it: the attention mask folded into the bias (not `flash`), the key/value cache in
  flash's (batch, seq, dim) layout (not `torch`), no attention weights (not `torch`).
- FSDP at world size 1 (`keep_fsdp_at_world_size_1`): llm-foundry's train() drops
  `fsdp_config` when `dist.get_world_size() == 1` ("Reverting to DDP"), the one use of
  `get_world_size` in llmfoundry/command_utils/train.py (tests/llmfoundry_ext checks that it
  stays the one). Composer itself runs FSDP at world size 1 (torch then uses NO_SHARD), so
  that module alone is given a `dist` whose world size reads at least 2; Composer, streaming
  and the rest of llm-foundry see the real one.
"""
from __future__ import annotations

import functools
import types

SDPA = 'sdpa'


def _as_torch(impl):
    return 'torch' if impl == SDPA else impl


def allow_sdpa_in_mpt() -> None:
    """MPT's three name checks answer `sdpa` as `torch`. Idempotent."""
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


class _WorldSizeAtLeast2(types.ModuleType):
    """composer.utils.dist for llmfoundry.command_utils.train alone: world size >= 2."""

    def __init__(self, dist):
        super().__init__(dist.__name__)
        self._dist = dist

    def __getattr__(self, name):
        return getattr(self._dist, name)

    def get_world_size(self) -> int:
        return max(2, self._dist.get_world_size())


def keep_fsdp_at_world_size_1() -> bool:
    """llm-foundry's train() keeps `fsdp_config` at world size 1. Returns False if already."""
    import importlib
    # the module, not the function llmfoundry.command_utils exports under the same name
    train = importlib.import_module('llmfoundry.command_utils.train')
    if isinstance(train.dist, _WorldSizeAtLeast2):
        return False
    train.dist = _WorldSizeAtLeast2(train.dist)
    return True
