"""Test-only callback, loaded through llm-foundry's `code_paths`: appends a digest of every
sample of every batch to a JSON-lines file (flushed per batch, so it survives SIGKILL)."""
import hashlib
import json
import os
import time

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from llmfoundry.registry import callbacks


class SampleLog(Callback):
    def __init__(self, path: str, delay_s: float = 0.0):
        self.path, self.delay_s = path, delay_s

    def after_dataloader(self, state: State, logger: Logger) -> None:
        rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in state.batch['input_ids']]
        with open(f'{self.path}.{dist.get_global_rank()}', 'a') as f:
            f.write(json.dumps({'pid': os.getpid(), 'batch': int(state.timestamp.batch), 'samples': rows}) + '\n')
        time.sleep(self.delay_s)  # slows the run so a test can kill it between checkpoints


callbacks.register('sample_log', func=SampleLog)
