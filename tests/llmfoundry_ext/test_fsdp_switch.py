"""FSDP_AT_WORLD_SIZE_1=1 keeps a recipe's fsdp_config at world size 1 (llmfoundry_ext).
On this CPU machine FSDP itself cannot run, so the check is how far llm-foundry's train() gets
with the CPU recipe given the 7B recipes' FSDP settings (init_device mixed): without the switch
llm-foundry drops fsdp_config and then refuses init_device mixed before building anything; with
it, the model and loader are built and the FSDP config reaches Composer's Trainer, whose FSDP
set-up is what fails here (no CUDA)."""
import inspect
import os
import subprocess
import textwrap

import pytest

from data_prep.llmfoundry_ext import fsdp_at_world_size_1
from tests.helpers import PY, ROOT

RECIPE = 'yamls/cpu/c4_zstd.yaml'
PROGRAM = textwrap.dedent('''
    # llm-foundry's train() on the recipe twice in one process (one import of the stack):
    # without the switch, then with it
    import os
    import sys
    import warnings
    sys.path.insert(0, {root!r})
    from data_prep import llmfoundry_ext
    import train
    from composer import Trainer
    from llmfoundry.command_utils.train import train as foundry_train

    from data_prep.streaming_ext import install
    install()
    init = Trainer.__init__

    def spy(self, *a, **k):  # what llm-foundry hands Composer; Composer's own code then runs
        print('trainer fsdp_config:', (k.get('parallelism_config') or {{}}).get('fsdp'))
        return init(self, *a, **k)

    Trainer.__init__ = spy
    for switch in ('', '1'):
        print(f'=== FSDP_AT_WORLD_SIZE_1={{switch}}', flush=True)
        os.environ['FSDP_AT_WORLD_SIZE_1'] = switch
        for line in llmfoundry_ext.install():
            print('installed:', line, flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                foundry_train(train.load_config({recipe!r}, sys.argv[1:]))
                print('trained', flush=True)
            except Exception as err:
                print('raised:', type(err).__name__, str(err).splitlines()[0][:300], flush=True)
        for w in caught:
            if 'Reverting to DDP' in str(w.message):
                print('warned:', w.message, flush=True)
''')


@pytest.mark.slow  # llm-foundry's train() up to Composer's FSDP set-up, twice
def test_switch_keeps_fsdp_config_up_to_composers_trainer(tmp_path, mds_zstd, tokenizer_dir):
    overrides = [f'variables.data_remote={mds_zstd}', f'variables.data_local={tmp_path}/cache',
                 f'tokenizer.name={tokenizer_dir}', 'max_duration=1ba', 'save_folder=null',
                 f'callbacks.hf_checkpointer.save_folder={tmp_path}/hf',
                 'model.init_device=mixed', f'callbacks.run_report.folder={tmp_path}/run',
                 'fsdp_config={sharding_strategy: FULL_SHARD, mixed_precision: PURE, '
                 'state_dict_type: sharded, sync_module_states: true}']
    env = {k: v for k, v in os.environ.items() if k != 'FSDP_AT_WORLD_SIZE_1'}
    proc = subprocess.run([PY, '-c', PROGRAM.format(root=str(ROOT), recipe=RECIPE), *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    _, off, on = out.split('=== FSDP_AT_WORLD_SIZE_1=')
    assert 'warned: FSDP is not applicable for single-GPU training. Reverting to DDP.' in off
    assert 'raised: NotImplementedError Using init_device `mixed` is only supported with FSDP' \
        in off, off[-3000:]
    assert 'trainer fsdp_config' not in off and 'installed:' not in off

    assert 'installed: FSDP_AT_WORLD_SIZE_1=1: fsdp_config is kept at world size 1' in on, \
        on[-3000:]
    assert 'Reverting to DDP' not in on and 'init_device `mixed`' not in on, on[-3000:]
    found = [x for x in on.splitlines() if x.startswith('trainer fsdp_config:')]
    assert found, on[-3000:]  # llm-foundry got as far as building Composer's Trainer
    line = found[0]
    # the recipe's settings, plus what llm-foundry adds for init_device mixed
    for key in ("'sharding_strategy': 'FULL_SHARD'", "'mixed_precision': 'PURE'",
                "'state_dict_type': 'sharded'", "'sync_module_states': True",
                "'load_monolith_rank0_only': True"):
        assert key in line, line
    raised = next(x for x in on.splitlines() if x.startswith('raised:'))
    assert 'trained' not in on.splitlines()
    # Composer's FSDP set-up, the first step that needs a GPU
    assert any(w in raised.lower() for w in ('cuda', 'nvidia', 'gpu')), raised


def test_switch_values(monkeypatch):
    for value, on in (('', False), ('0', False), ('off', False), ('1', True), ('true', True)):
        monkeypatch.setenv('FSDP_AT_WORLD_SIZE_1', value)
        assert fsdp_at_world_size_1() is on, value
    monkeypatch.setenv('FSDP_AT_WORLD_SIZE_1', 'maybe')
    with pytest.raises(ValueError) as err:
        fsdp_at_world_size_1()
    assert str(err.value) == "FSDP_AT_WORLD_SIZE_1='maybe': use 1 (on) or 0 (off)"


def test_the_hook_is_the_one_world_size_check_in_llm_foundrys_train():
    """compat.py's hook changes what `dist.get_world_size()` reads in that module only: it
    must stay the revert's one use (llm-foundry is pinned; a new version must be looked at)."""
    import importlib
    source = inspect.getsource(importlib.import_module('llmfoundry.command_utils.train'))
    assert source.count('get_world_size') == 1
    assert 'Reverting to DDP' in source
