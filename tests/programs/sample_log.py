"""Test-only callback, loaded through llm-foundry's `code_paths`: appends a digest of every
sample of every batch to a JSON-lines file (flushed per batch, so it survives SIGKILL). With
`cache` (the dataset's cache folder, split included) it also writes `<path>.fit_end.<rank>`:
the wall time of FIT_END and the files then in the cache, a witness for the run report."""
import hashlib
import json
import os
import time

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from llmfoundry.registry import callbacks


class SampleLog(Callback):
    def __init__(self, path: str, delay_s: float = 0.0, cache: str = ''):
        self.path, self.delay_s, self.cache = path, delay_s, cache

    def after_dataloader(self, state: State, logger: Logger) -> None:
        rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in state.batch['input_ids']]
        with open(f'{self.path}.{dist.get_global_rank()}', 'a') as f:
            f.write(json.dumps({'pid': os.getpid(), 'batch': int(state.timestamp.batch),
                                'samples': rows}) + '\n')
        time.sleep(self.delay_s)  # slows the run so a test can kill it between checkpoints

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.cache:
            t = time.time()
            with open(f'{self.path}.fit_end.{dist.get_global_rank()}', 'w') as f:
                json.dump({'t': t, 'cached': sorted(os.listdir(self.cache))}, f)


callbacks.register('sample_log', func=SampleLog)
