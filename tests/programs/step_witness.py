"""Test-only callback, loaded through llm-foundry's `code_paths`: an independent record of each
step for the metric callbacks' tests, and a way to slow one rank outside its dataloader.

Per rank it writes `<path>.<rank>` (JSON lines, one per step): its own clock at
BEFORE_DATALOADER, AFTER_DATALOADER and BATCH_END (time.monotonic), the batch's rows, sequence
length and non-padding tokens (attention_mask), and, once, the model's parameter count. With
`sleep_rank`/`sleep_s` that rank sleeps `sleep_s` at every BATCH_END: the others then wait for
it in Composer's cross-rank all_reduce between BEFORE and AFTER_DATALOADER, not in the loader.
"""
import json
import time

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from llmfoundry.registry import callbacks


class StepWitness(Callback):
    def __init__(self, path: str, sleep_rank: int = -1, sleep_s: float = 0.0):
        self.path, self.sleep_rank, self.sleep_s = path, sleep_rank, sleep_s
        self._before = self._after = None

    def fit_start(self, state: State, logger: Logger) -> None:
        params = sum(p.numel() for p in state.model.parameters())
        with open(f'{self.path}.{dist.get_global_rank()}', 'w') as f:
            f.write(json.dumps({'params': params}) + '\n')

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._before = time.monotonic()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._after = time.monotonic()

    def batch_end(self, state: State, logger: Logger) -> None:
        t = time.monotonic()
        ids = state.batch['input_ids']
        mask = state.batch.get('attention_mask')
        row = {'step': int(state.timestamp.batch), 'before': self._before, 'after': self._after,
               'end': t, 'rows': int(ids.shape[0]), 'seq': int(ids.shape[1]),
               'tokens': int(mask.sum()) if mask is not None else int(ids.numel())}
        with open(f'{self.path}.{dist.get_global_rank()}', 'a') as f:
            f.write(json.dumps(row) + '\n')
        if dist.get_global_rank() == self.sleep_rank:
            time.sleep(self.sleep_s)


callbacks.register('step_witness', func=StepWitness)
