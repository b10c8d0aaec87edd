"""Test-only callback, loaded through llm-foundry's `code_paths`: what each step of a run did,
written as it goes (flushed per step, so the record survives SIGKILL).

- `<path>`: rank 0, one JSON line per step: batch number and the training loss as the logger
  reports it (`loss/train/total`, the mean over ranks; full float precision);
- `<path>.samples.<rank>`: each rank, one line per step: a digest of every sample of its batch;
- `<path>.params.<rank>`: each rank, at FIT_START: how many parameter elements it holds (the
  local shards of FSDP's DTensor parameters) and how many the model has.

Pacing, so a test can act between checkpoints whatever the machine's load: at the step after a
save of this run's (every `every` steps), every rank waits until it is whole in the bucket:
`hold_for` (a path template with {batch}: its folder in the local store's data folder) holds
`.metadata` and every rank's `__<rank>_0.distcp`; then `settle_s` more, so that Composer, which
polls for the files in the background and moves the `latest` pointer from the training loop,
moves it within the next step. `delay_s` sleeps after each step.
"""
import hashlib
import json
import os
import time

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from llmfoundry.registry import callbacks


class StepLog(Callback):
    def __init__(self, path: str, delay_s: float = 0.0, hold_for: str = '', every: int = 0,
                 settle_s: float = 1.0, hold_max_s: float = 300.0):
        self.path, self.delay_s = path, delay_s
        self.hold_for, self.every, self.settle_s = hold_for, every, settle_s
        self.hold_max_s = hold_max_s

    def _write(self, path: str, row: dict) -> None:
        with open(path, 'a') as f:
            # launch: the launcher's pid, one for every rank it started
            f.write(json.dumps({'pid': os.getpid(), 'launch': os.getppid(), **row}) + '\n')

    def fit_start(self, state: State, logger: Logger) -> None:
        self.resumed_at = int(state.timestamp.batch)  # a checkpoint there is another run's
        local = full = 0
        for p in state.model.parameters():
            full += p.numel()  # a DTensor's numel is the whole tensor's
            local += p.to_local().numel() if hasattr(p, 'to_local') else p.numel()
        self._write(f'{self.path}.params.{dist.get_global_rank()}',
                    {'local': local, 'full': full, 'world': dist.get_world_size()})

    def batch_start(self, state: State, logger: Logger) -> None:
        done = int(state.timestamp.batch)
        if not (self.hold_for and self.every and done > self.resumed_at
                and done % self.every == 0):
            return
        folder = self.hold_for.format(batch=done)
        whole = ['.metadata'] + [f'__{r}_0.distcp' for r in range(dist.get_world_size())]
        deadline = time.monotonic() + self.hold_max_s
        while not all(os.path.exists(os.path.join(folder, f)) for f in whole):
            if time.monotonic() > deadline:
                return  # the test's own checks will say what is missing
            time.sleep(0.05)
        time.sleep(self.settle_s)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in state.batch['input_ids']]
        self._write(f'{self.path}.samples.{dist.get_global_rank()}',
                    {'batch': int(state.timestamp.batch) + 1, 'samples': rows})

    def batch_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0:
            self._write(self.path, {'batch': int(state.timestamp.batch),
                                    'loss': state.total_loss_dict['loss/train/total']})
        time.sleep(self.delay_s)


callbacks.register('step_log', func=StepLog)
