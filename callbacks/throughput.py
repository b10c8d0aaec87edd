"""`throughput`: samples/s and tokens/s, global and per device, steady state and overall; MFU.

Composer's timestamp already counts samples and tokens over all ranks (it all-reduces them each
step), so this callback needs no collective of its own. Times come from rank-local monotonic
clocks taken at FIT_START and every BATCH_END.

- per step (BATCH_END): the keys in the class docstring (named ``step_throughput/...`` so they
  do not shadow Composer's own ``throughput/...`` from SpeedMonitor, a rolling average);
- per run (``summary()``): *overall* = everything from FIT_START to the last BATCH_END
  (worker start-up and first shard downloads included); *steady* = from the end of batch
  ``warmup_batches`` to the last batch. The headline ``throughput_*_per_s`` numbers are the
  steady ones (overall when the run is too short to have a steady part). Time spent in
  evaluation (EVAL_START..EVAL_END, between two steps) counts in neither: these are training
  rates (``run_report`` gives the evaluations' own time, ``eval_s``).

MFU = model FLOP/s per device / peak FLOP/s per device. Model FLOPs come from the model's
``flops_per_batch(batch)`` (llm-foundry's MPT has it), taken on this rank and multiplied by the
world size (ranks get equal batches). A model without one (llm-foundry 0.22's ``hf_causal_lm``)
gets the same formula from its Hugging Face config (``estimate_flops``: 3 x (2 x matmul
parameters x sequence + 4 x layers x d_model x sequence^2) per sample, parameters counted at
INIT, before FSDP shards them); ``flops_source`` in the summary says which. Matmul parameters,
PaLM's convention: all of them but an input embedding not tied to the output layer (a lookup
does no matmul: ~0.55B of Qwen2.5-7B's 7.6B; a tied one is the LM head's matmul, as in MPT).
The peak is ``peak_flops_per_device`` if given, else Composer's table for the detected GPU and
precision (H100 and H200 SXM bf16: 989.5 TFLOP/s); on a CPU there is none and MFU is null.

yaml::

    callbacks:
      throughput:
        warmup_batches: 3            # batches left out of the steady-state numbers
        peak_flops_per_device: null  # e.g. 989.5e12 to force the H100 bf16 peak
"""
from __future__ import annotations

from typing import Any, Optional

from composer.core import Callback, State
from composer.loggers import Logger
from composer.models import ComposerModel
from composer.utils import dist

from callbacks._common import now, r


class Throughput(Callback):
    """Samples/s, tokens/s and MFU of every step; steady-state and overall rates per run.

    Logged at every BATCH_END (the step just finished, on this rank's clock):

    +-------------------------------------------+------------------------------------------------+
    | Key                                       | Logged data                                    |
    +===========================================+================================================+
    | ``step_throughput/samples_per_s``         | samples of the step (all ranks) / its seconds  |
    +-------------------------------------------+------------------------------------------------+
    | ``step_throughput/tokens_per_s``          | tokens of the step (all ranks) / its seconds   |
    +-------------------------------------------+------------------------------------------------+
    | ``step_throughput/device/samples_per_s``  | the same, divided by the world size            |
    +-------------------------------------------+------------------------------------------------+
    | ``step_throughput/device/tokens_per_s``   | the same, divided by the world size            |
    +-------------------------------------------+------------------------------------------------+
    | ``step_throughput/device/mfu``            | model FLOP/s per device / peak FLOP/s per      |
    |                                           | device (only when the peak is known)           |
    +-------------------------------------------+------------------------------------------------+

    Per run, ``summary()`` gives the ``throughput_*`` and ``mfu*`` keys of run_metrics.json.

    Args:
        warmup_batches (int): batches left out of the steady-state rates (default 3).
        peak_flops_per_device (float, optional): peak FLOP/s of one device; default: Composer's
            table for the detected GPU and precision (none on a CPU: MFU is null).
    """

    def __init__(self, warmup_batches: int = 3, peak_flops_per_device: Optional[float] = None):
        if warmup_batches < 0:
            raise ValueError(f'warmup_batches must be >= 0, got {warmup_batches}')
        self.warmup_batches = int(warmup_batches)
        self.peak_override = float(peak_flops_per_device) if peak_flops_per_device else None
        self.steps: list[dict] = []
        self._fit_start: Optional[float] = None
        self._start_samples = self._start_tokens = 0
        self._prev: Optional[tuple[float, int, int]] = None
        self._peak: Optional[float] = None
        self.world_size = 1
        self.n_params: Optional[int] = None
        self.flops_source: Optional[str] = None
        self._eval_start: Optional[float] = None

    def init(self, state: State, logger: Logger) -> None:
        # Counted before Composer wraps the model (FSDP would leave only this rank's shard).
        self.n_params = matmul_params(state.model)

    def fit_start(self, state: State, logger: Logger) -> None:
        self.world_size = dist.get_world_size()
        self._fit_start = now()
        self._start_samples = int(state.timestamp.sample)
        self._start_tokens = int(state.timestamp.token)
        self._prev = (self._fit_start, self._start_samples, self._start_tokens)
        self.steps = []
        self._peak = self.peak_override
        if self._peak is None:
            from composer.callbacks.speed_monitor import get_gpu_flops_available
            self._peak = get_gpu_flops_available(state) or None  # 0 on CPU: unknown

    def eval_start(self, state: State, logger: Logger) -> None:
        self._eval_start = now()

    def eval_end(self, state: State, logger: Logger) -> None:
        # An evaluation runs between two steps: move the clock marks past it, so neither the
        # next step's time nor the run's span holds it.
        if self._eval_start is None or self._prev is None:
            return
        spent = now() - self._eval_start
        self._fit_start += spent
        t, samples, tokens = self._prev
        self._prev = (t + spent, samples, tokens)
        self._eval_start = None

    def _flops(self, state: State) -> Optional[float]:
        model = state.model
        if not isinstance(model, ComposerModel):
            model = getattr(model, 'module', model)  # through DDP
        if state.batch is None:
            return None
        fn = getattr(model, 'flops_per_batch', None)
        try:
            if fn is not None:
                flops, self.flops_source = float(fn(state.batch)), 'flops_per_batch'
            else:
                config = getattr(getattr(model, 'model', None), 'config', None)
                flops = estimate_flops(config, self.n_params, state.batch)
                self.flops_source = 'estimate_flops' if flops is not None else None
        except Exception:  # a model whose estimate does not fit this batch: no MFU, no crash
            return None
        return flops * self.world_size if flops is not None else None

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._prev is None:
            return
        t, samples, tokens = now(), int(state.timestamp.sample), int(state.timestamp.token)
        t0, s0, k0 = self._prev
        dt = max(t - t0, 1e-9)
        flops = self._flops(state)
        rec = {'step': int(state.timestamp.batch), 't': t - self._fit_start, 'step_s': dt,
               'samples': samples - s0, 'tokens': tokens - k0,
               'samples_per_s': (samples - s0) / dt, 'tokens_per_s': (tokens - k0) / dt,
               'flops': flops}
        rec['mfu'] = (flops / dt / self.world_size / self._peak) if flops and self._peak else None
        self.steps.append(rec)
        self._prev = (t, samples, tokens)
        metrics = {'step_throughput/samples_per_s': rec['samples_per_s'],
                   'step_throughput/tokens_per_s': rec['tokens_per_s'],
                   'step_throughput/device/samples_per_s': rec['samples_per_s'] / self.world_size,
                   'step_throughput/device/tokens_per_s': rec['tokens_per_s'] / self.world_size}
        if rec['mfu'] is not None:
            metrics['step_throughput/device/mfu'] = rec['mfu']
        logger.log_metrics(metrics)

    def _rate(self, steps: list[dict], span_s: float) -> dict[str, Optional[float]]:
        samples = sum(s['samples'] for s in steps)
        tokens = sum(s['tokens'] for s in steps)
        flops = [s['flops'] for s in steps]
        ok = span_s > 0 and steps
        out = {'samples_per_s': samples / span_s if ok else None,
               'tokens_per_s': tokens / span_s if ok else None}
        out['mfu'] = (sum(flops) / span_s / self.world_size / self._peak
                      if ok and self._peak and all(f is not None for f in flops) else None)
        return out

    def summary(self, state: Optional[State] = None) -> dict[str, Any]:
        """Run throughput. Local only (the timestamp is already global): safe on any rank."""
        steps = self.steps
        overall = self._rate(steps, steps[-1]['t'] if steps else 0.0)
        steady_steps = steps[self.warmup_batches:]
        steady = None
        if steady_steps and len(steps) > self.warmup_batches:
            span = steps[-1]['t'] - (
                steps[self.warmup_batches - 1]['t'] if self.warmup_batches else 0.0
            )
            steady = self._rate(steady_steps, span)
        head = steady or overall
        ws = self.world_size
        dev = lambda x: None if x is None else x / ws  # noqa: E731
        return {
            'throughput_samples_per_s': r(head['samples_per_s'], 3),
            'throughput_tokens_per_s': r(head['tokens_per_s'], 2),
            'throughput_samples_per_s_per_device': r(dev(head['samples_per_s']), 3),
            'throughput_tokens_per_s_per_device': r(dev(head['tokens_per_s']), 2),
            'throughput_is_steady_state': steady is not None,
            'throughput_warmup_batches': self.warmup_batches,
            'throughput_overall_samples_per_s': r(overall['samples_per_s'], 3),
            'throughput_overall_tokens_per_s': r(overall['tokens_per_s'], 2),
            'mfu': r(head['mfu'], 5),
            'mfu_overall': r(overall['mfu'], 5),
            'peak_flops_per_device': self._peak,
            'flops_source': self.flops_source,
        }


def matmul_params(model: Any) -> int:
    """Parameters that do matmul work, PaLM's convention: all but the input embedding of a
    model whose embedding is not tied to its output layer (Hugging Face's
    get_input_embeddings / get_output_embeddings, on the model or inside Composer's wrapper)."""
    total = sum(p.numel() for p in model.parameters())
    for candidate in (model, getattr(model, 'model', None)):
        try:
            emb, head = candidate.get_input_embeddings(), candidate.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            continue
        weight, head_weight = getattr(emb, 'weight', None), getattr(head, 'weight', None)
        if weight is None or head_weight is None:
            continue
        # tied: the embedding is the output layer's matmul; untied: a lookup, no matmul
        return total if head_weight is weight else total - weight.numel()
    return total


def estimate_flops(config: Any, n_params: Optional[int], batch: Any) -> Optional[float]:
    """Training FLOPs of one batch for a decoder-only model from its Hugging Face config: the
    formula of llm-foundry's MPT flops_per_batch (forward 2 x params per token plus attention
    2 x 2 x d_model x seq^2 per layer, x3 for forward and backward), `n_params` being the
    parameters that do matmul work (`matmul_params`). None when the config does not say its
    layers and width, or the parameter count is unknown."""
    layers = getattr(config, 'num_hidden_layers', None)
    width = getattr(config, 'hidden_size', None)
    ids = batch.get('input_ids') if hasattr(batch, 'get') else None
    if not (layers and width and n_params) or ids is None:
        return None
    rows, seq = ids.shape[0], ids.shape[1]
    return 3.0 * rows * (2.0 * n_params * seq + layers * 4.0 * width * seq ** 2)
