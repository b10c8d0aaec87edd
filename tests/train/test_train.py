"""Real training steps of the CPU recipe through `composer train.py`."""
import json
import re

import pytest

from tests.helpers import COMPOSER, run

# Training runs through train.py: left out of `make test-fast` (-m "not slow and not e2e").
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RECIPE = 'yamls/cpu/c4_zstd.yaml'


def overrides(mds, tokenizer, tmp_path, name):
    return [f'variables.data_remote={mds}', f'variables.data_local={tmp_path}/cache-{name}',
            f'tokenizer.name={tokenizer}', f'save_folder={tmp_path}/ckpt-{name}',
            f'variables.run_name={name}']


def test_loss_goes_down(mds_zstd, tokenizer_dir, tmp_path):
    proc = run([COMPOSER, 'train.py', RECIPE, *overrides(mds_zstd, tokenizer_dir, tmp_path, 'loss'),
                'max_duration=30ba', 'console_log_interval=1ba'])
    losses = [
        float(x) for x in re.findall(r'loss/train/total: ([0-9.]+)', proc.stdout + proc.stderr)
    ]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    # A dataset written before datasets recorded how they were made: one line per split.
    assert [line.split(' has ')[0] for line in proc.stdout.splitlines()
            if 'dataset.json' in line] == [
        f'train.py: note: {RECIPE}: {loader}.dataset: {mds_zstd}/{split}'
        for loader, split in (('train_loader', 'train'), ('eval_loader', 'validation'))]


def test_two_ranks_see_disjoint_samples(mds_zstd, tokenizer_dir, tmp_path):
    prefix = tmp_path / 'seen'
    run([COMPOSER, '-n', '2', 'tests/programs/rank_samples.py', RECIPE, str(prefix),
         *overrides(mds_zstd, tokenizer_dir, tmp_path, 'ranks')])
    rank0, rank1 = (json.loads((tmp_path / f'seen.{r}.json').read_text()) for r in (0, 1))
    assert rank0 and rank1
    assert not set(rank0) & set(rank1)
    assert abs(len(rank0) - len(rank1)) <= 4
