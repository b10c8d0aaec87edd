"""A CPU run killed mid-epoch and restarted with autoresume continues from its last checkpoint
and, over the whole run, sees every sample of the epoch exactly once."""
import json
import os
import signal
import subprocess
import time

import pytest
from streaming import MDSWriter

from tests.helpers import COMPOSER, ROOT, run, sample_texts

# Training runs through train.py: left out of `make test-fast` (-m "not slow and not e2e").
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SAMPLES, BATCH = 240, 16  # 15 steps per epoch


def _log(path):
    return [json.loads(line) for line in open(f'{path}.0')]


def test_killed_run_resumes_and_sees_each_sample_once(sample_dir, tokenizer_dir, tmp_path):
    with MDSWriter(out=str(tmp_path / 'mds' / 'train'), columns={'text': 'str'},
                   compression='zstd', size_limit=1 << 16) as writer:
        for text in sample_texts(sample_dir)[:SAMPLES]:
            writer.write({'text': text})
    ckpt, log = tmp_path / 'ckpt', tmp_path / 'samples'
    cmd = [COMPOSER, 'train.py', 'yamls/cpu/c4_zstd.yaml', f'variables.data_remote={tmp_path}/mds',
           f'variables.data_local={tmp_path}/cache', f'tokenizer.name={tokenizer_dir}',
           f'save_folder={ckpt}', 'save_interval=4ba', 'save_num_checkpoints_to_keep=-1',
           'autoresume=true', 'max_duration=1ep', 'variables.run_name=resume',
           'eval_loader=null',  # a train split only: no held-out evaluation
           f'code_paths=[{ROOT}/tests/programs/sample_log.py]',
           f'callbacks.sample_log.path={log}', 'callbacks.sample_log.delay_s=0.3']

    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 240
    latest = ckpt / 'latest-rank0.pt'  # Composer points it at a checkpoint once that is complete
    while not (latest.is_symlink() and os.readlink(latest).endswith('ep0-ba8-rank0.pt')):
        assert first.poll() is None and time.time() < deadline, 'first run ended before ba8'
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    first_run = _log(log)
    assert 7 <= first_run[-1]['batch'] < 14  # batch indices count from 0: ba8 = 8 batches done

    run(cmd, timeout=300)
    second = _log(log)[len(first_run):]
    assert {r['pid'] for r in second}.isdisjoint({r['pid'] for r in first_run})
    resumed_from = second[0]['batch']
    assert resumed_from == 8, f'resumed at batch {resumed_from}, not at the last checkpoint'
    kept = [r for r in first_run if r['batch'] < resumed_from] + second
    assert [r['batch'] for r in kept] == list(range(15))
    seen = [s for r in kept for s in r['samples']]
    assert len(seen) == len(set(seen)) == SAMPLES
