"""Real training steps of the CPU recipe through `composer train.py`: its FSDP against DDP."""
import json

import pytest

from tests.helpers import COMPOSER, run

# Training runs through train.py: left out of `make test-fast` (-m "not slow and not e2e").
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RECIPE = 'yamls/cpu/c4_zstd.yaml'
STEPS = 20
# FSDP reduce-scatters the gradients where DDP all-reduces them: another order of the same
# sums, fp32 on the CPU.
TOLERANCE = 1e-4


def overrides(mds, tokenizer, tmp_path, name):
    return [f'variables.data_remote={mds}', f'variables.data_local={tmp_path}/cache-{name}',
            f'tokenizer.name={tokenizer}', f'save_folder={tmp_path}/ckpt-{name}',
            f'variables.run_name={name}']


def test_fsdp_trains_as_ddp_does_and_the_loss_goes_down(mds_zstd, tokenizer_dir, tmp_path):
    """The twin as written (FSDP2 over 2 processes) and with `fsdp_config=null` (llm-foundry's
    DDP): the same losses at every step, within TOLERANCE, the logged mean over ranks."""
    losses, outs = {}, {}
    for name, extra in (('fsdp', []), ('ddp', ['fsdp_config=null'])):
        proc = run([COMPOSER, '-n', '2', 'train.py', RECIPE,
                    *overrides(mds_zstd, tokenizer_dir, tmp_path, name), f'max_duration={STEPS}ba',
                    f'callbacks.run_report.folder={tmp_path}/runs/{name}', *extra])
        outs[name] = proc.stdout + proc.stderr
        rows = (tmp_path / 'runs' / name / 'steps.jsonl').read_text().splitlines()
        losses[name] = [json.loads(row)['loss'] for row in rows]
    assert 'Prepare FSDP2' in outs['fsdp'] and 'Prepare FSDP2' not in outs['ddp']
    fsdp, ddp = losses['fsdp'], losses['ddp']
    assert len(fsdp) == len(ddp) == STEPS
    worst = max(abs(a - b) / abs(b) for a, b in zip(fsdp, ddp))
    print(f'FSDP against DDP, largest relative loss difference over {STEPS} steps: {worst:.3g}')
    assert worst <= TOLERANCE, list(zip(fsdp, ddp))
    assert sum(fsdp[-5:]) / 5 < sum(fsdp[:5]) / 5 - 0.5, fsdp
    # A dataset written before datasets recorded how they were made: one line per split.
    assert [line.split(' has ')[0] for line in outs['fsdp'].splitlines()
            if 'dataset.json' in line] == [
        f'train.py: note: {RECIPE}: {loader}.dataset: {mds_zstd}/{split}'
        for loader, split in (('train_loader', 'train'), ('eval_loader', 'validation'))]
