"""Our extensions of llm-foundry: `attn_impl: sdpa` for MPT (attention.py, found by llm-foundry
through the `llmfoundry_attention_implementations` entry point) and, opted into with
FSDP_AT_WORLD_SIZE_1=1, FSDP kept at world size 1. train.py calls install() on every rank
before llm-foundry builds anything; compat.py is the only code touching llm-foundry internals.
"""
from __future__ import annotations

import os

FSDP_SWITCH = 'FSDP_AT_WORLD_SIZE_1'


def fsdp_at_world_size_1() -> bool:
    """The switch: FSDP_AT_WORLD_SIZE_1=1 (off by default; 0 or empty is off)."""
    value = os.environ.get(FSDP_SWITCH, '').strip().lower()
    if value in ('', '0', 'false', 'no', 'off'):
        return False
    if value in ('1', 'true', 'yes', 'on'):
        return True
    raise ValueError(f'{FSDP_SWITCH}={os.environ[FSDP_SWITCH]!r}: use 1 (on) or 0 (off)')


def install() -> list[str]:
    """MPT accepts `attn_impl: sdpa`; with the switch on, llm-foundry keeps `fsdp_config` at
    world size 1. Returns what was changed, one line each, for the run's log."""
    from data_prep.llmfoundry_ext import compat
    compat.allow_sdpa_in_mpt()
    done = []
    if fsdp_at_world_size_1() and compat.keep_fsdp_at_world_size_1():
        done.append(f'{FSDP_SWITCH}=1: fsdp_config is kept at world size 1 (llm-foundry would '
                    f'revert to DDP); Composer runs FSDP, which torch makes NO_SHARD')
    return done
