"""Test-only callback, loaded through llm-foundry's `code_paths`: appends each step's batch
number and training loss (full float precision) to `<path>` as JSON lines, flushed per step so
the record survives SIGKILL.

Pacing, so a test can act between checkpoints whatever the machine's load: `delay_s` sleeps
after each step; with `hold_for` (a path template with {batch}: the checkpoint's file in the
local store's data folder) and `every`, the step after a save waits until that checkpoint is in
the bucket, then `settle_s` more (Composer's pointer check polls the bucket), so Composer moves
the `latest` pointer to it within the next step instead of whenever its spawned upload
processes get the CPU."""
import json
import os
import time

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from llmfoundry.registry import callbacks


class LossLog(Callback):
    def __init__(self, path: str, delay_s: float = 0.0, hold_for: str = '', every: int = 0,
                 settle_s: float = 1.0, hold_max_s: float = 300.0):
        self.path, self.delay_s = path, delay_s
        self.hold_for, self.every, self.settle_s, self.hold_max_s = (hold_for, every, settle_s,
                                                                     hold_max_s)

    def batch_start(self, state: State, logger: Logger) -> None:
        done = int(state.timestamp.batch)
        if not (self.hold_for and self.every and done and done % self.every == 0):
            return
        deadline = time.monotonic() + self.hold_max_s
        while not os.path.exists(self.hold_for.format(batch=done)):
            if time.monotonic() > deadline:
                return  # the test's own checks will say what is missing
            time.sleep(0.05)
        time.sleep(self.settle_s)

    def batch_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0:
            with open(self.path, 'a') as f:
                f.write(json.dumps({'pid': os.getpid(), 'batch': int(state.timestamp.batch),
                                    'loss': float(state.loss.item())}) + '\n')
        time.sleep(self.delay_s)


callbacks.register('loss_log', func=LossLog)
