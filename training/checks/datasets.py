"""A recipe checked against the datasets it reads, before any worker, shard or weight moves.

llm-foundry's text loader reads a `tokens` column as it is, never asking the recipe's
tokenizer, and cuts every sample at `max_seq_len`: a recipe copied for another model, or
pointed at data made for another one, trains on another vocabulary's ids in silence. Each split
our converter publishes records how it was made (dataset.json: data_prep/pipeline/record.py);
`check_datasets` reads that record for every stream of the recipe, through our Remote layer
(local path, s3://, oci://), and compares it with the recipe:

- tokens made by another tokenizer than the recipe's: refused, unless the recipe's tokenizer
  gives every id of the data's the same token (one that only adds tokens at the end, or
  changes which token is eos): then a note;
- ids the model has no embedding for (the data's tokenizer, or the recipe's for text, against
  MPT's `model.vocab_size` or the Hugging Face model's config.json, read alone): refused;
- train and eval splits made with different tokenizers: refused; of different lengths or
  formats: a warning;
- samples longer or shorter than `max_seq_len`, streams of one loader of different lengths
  (padding), text (one document per sample, padded or cut, tokenized in the loader): warnings
  that name the cost;
- text with a tokenizer that has no pad token: refused (llm-foundry stops on it at the first
  batch, in a dataloader worker).

Each refusal names the `variables.` key that says "I know" (OVERRIDES), except the pad token,
which llm-foundry itself needs. A split without a record (published before records, or by
another tool) is one note, and the run goes on.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig
from omegaconf import OmegaConf as om

from data_prep.errors import first_line
from data_prep.pipeline.layout import INDEX
from data_prep.pipeline.record import (
    NO_RECORD,
    RecordError,
    ids_fingerprint,
    read_record,
    tokenizer_facts,
)
from data_prep.storage import RemoteError, open_remote
from training.config import ConfigError, datasets

# The `variables.` keys that let a run go on past each refusal.
OTHER_TOKENIZER = 'allow_other_tokenizer'
IDS_BEYOND_MODEL = 'allow_ids_beyond_model_vocab'
EVAL_OTHER_TOKENIZER = 'allow_eval_other_tokenizer'
OVERRIDES = (OTHER_TOKENIZER, IDS_BEYOND_MODEL, EVAL_OTHER_TOKENIZER)


@dataclass
class _Stream:
    key: str                      # train_loader.dataset[.streams.NAME]
    loader: str                   # train_loader or eval_loader
    url: str                      # the split's folder
    record: Optional[dict]
    max_seq_len: Optional[int]

    @property
    def length(self) -> Optional[int]:
        """Tokens per sample, for tokens."""
        if self.record and self.record['format'] == 'tokens':
            return (self.record.get('concat') or {}).get('tokens')
        return None


class _Recipe:
    """What the checks need of the recipe, each loaded once and only when needed."""

    def __init__(self, cfg: DictConfig, where: str):
        self.cfg, self.where = cfg, where
        self._tok: Any = None
        self._facts: Optional[dict] = None
        self._vocab: Optional[tuple[Optional[int], str]] = None
        tokenizer = cfg.get('tokenizer') or {}
        self.tokenizer_name = str(tokenizer.get('name'))

    def allowed(self, key: str) -> bool:
        return bool((self.cfg.get('variables') or {}).get(key))

    @property
    def tokenizer(self):
        if self._tok is None:
            # As llm-foundry 0.22's build_tokenizer builds it (its registry, else
            # AutoTokenizer), less its cross-rank sync: these checks run on every rank before
            # torch.distributed starts, where that sync raises for a world size above 1.
            from llmfoundry.registry import tokenizers
            from llmfoundry.utils.registry_utils import construct_from_registry
            from transformers import AutoTokenizer, PreTrainedTokenizerBase
            tokenizer = self.cfg.get('tokenizer') or {}
            kwargs = om.to_container(tokenizer.get('kwargs') or {}, resolve=True)
            try:
                if self.tokenizer_name in tokenizers:
                    self._tok = construct_from_registry(
                        name=self.tokenizer_name, registry=tokenizers, partial_function=True,
                        pre_validation_function=PreTrainedTokenizerBase,
                        post_validation_function=None, kwargs=kwargs)
                else:
                    self._tok = AutoTokenizer.from_pretrained(self.tokenizer_name, **kwargs)
            except Exception as exc:
                raise ConfigError(f'{self.where}: tokenizer.name {self.tokenizer_name!r} cannot '
                                  f'be loaded: {first_line(exc)}') from None
        return self._tok

    @property
    def facts(self) -> dict:
        if self._facts is None:
            self._facts = tokenizer_facts(self.tokenizer, self.tokenizer_name)
        return self._facts

    def reads_ids_as(self, data: dict) -> bool:
        """Whether this tokenizer gives each id of the data's tokenizer the same token."""
        if data.get('max_id') is None or data['max_id'] > self.facts['max_id']:
            return False
        return ids_fingerprint(self.tokenizer.get_vocab(), data['max_id']) == \
            data.get('ids_fingerprint')

    @property
    def model_vocab(self) -> tuple[Optional[int], str]:
        """(embeddings the model has, where that number comes from), or (None, why unknown)."""
        if self._vocab is None:
            self._vocab = _model_vocab(self.cfg.get('model') or {})
        return self._vocab


def _model_vocab(model: DictConfig) -> tuple[Optional[int], str]:
    overrides = model.get('config_overrides') or {}
    if overrides.get('vocab_size') is not None:
        return int(overrides['vocab_size']), 'model.config_overrides.vocab_size'
    if model.get('name') == 'mpt_causal_lm':
        if model.get('vocab_size') is not None:
            return int(model['vocab_size']), 'model.vocab_size'
        import inspect

        from llmfoundry.models.mpt.configuration_mpt import MPTConfig
        default = inspect.signature(MPTConfig.__init__).parameters['vocab_size'].default
        return int(default), "model.vocab_size (MPT's default)"
    path = model.get('pretrained_model_name_or_path')
    if not isinstance(path, str) or not path:
        return None, ''
    try:  # config.json alone: no weights move before the run starts
        if os.path.isdir(path):
            with open(os.path.join(path, 'config.json')) as f:
                config = json.load(f)
        else:
            from huggingface_hub import hf_hub_download
            with open(hf_hub_download(path, 'config.json')) as f:
                config = json.load(f)
    except Exception as exc:
        return None, f'cannot read config.json of {path} ({first_line(exc)})'
    if not isinstance(config.get('vocab_size'), int):
        return None, f'config.json of {path} names no vocab_size'
    return config['vocab_size'], f'vocab_size in config.json of {path}'


def _streams(cfg: DictConfig, where: str) -> list[_Stream]:
    out = []
    for key, remote, local, split in datasets(cfg):
        base = remote or local
        if not isinstance(base, str) or not base:
            continue
        loader = key.split('.', 1)[0]
        folder = f'{split.strip("/")}/' if split and split.strip('/') else ''
        try:
            r = open_remote(base)
            record = read_record(r, folder)
            if record is None and not r.list(folder + INDEX):
                continue  # no dataset there at all: said later, by the index's own check
        except (RemoteError, RecordError) as exc:
            raise ConfigError(f'{where}: {key}: {exc} (python -m data_prep.verify checks a '
                              f'dataset)') from None
        dataset = cfg[loader].dataset
        out.append(_Stream(key, loader, r.join(folder), record,
                           dataset.get('max_seq_len') or cfg.get('max_seq_len')))
    return out


def _tok_name(facts: dict) -> str:
    return (f'{facts.get("name")} ({facts.get("class")}, {facts.get("vocab_size", 0):,} ids, '
            f'fingerprint {str(facts.get("fingerprint"))[:12]})')


def _override(recipe: _Recipe, key: str, refusal: str, warnings: list[str]) -> None:
    """Refuses with `refusal`, or, with variables.KEY set, warns of it and goes on."""
    if not recipe.allowed(key):
        raise ConfigError(f'{recipe.where}: {refusal}; if you know better, '
                          f'variables.{key}=true')
    warnings.append(f'{refusal.split(": ", 1)[0]}: going on as variables.{key} says: '
                    f'{refusal.split(": ", 1)[1]}')


def _check_tokens(s: _Stream, recipe: _Recipe, warnings: list[str], notes: list[str]) -> None:
    data = s.record.get('tokenizer') or {}
    mine = recipe.facts
    if data.get('fingerprint') != mine['fingerprint']:
        if recipe.reads_ids_as(data):
            notes.append(f'{s.key}: {s.url} holds tokens of tokenizer {_tok_name(data)}; the '
                         f"recipe's {_tok_name(mine)} differs in its special tokens or added "
                         f'ids only, and reads every id of the data as the same token')
        else:
            _override(recipe, OTHER_TOKENIZER,
                      f'{s.key}: {s.url} holds tokens made by tokenizer {_tok_name(data)}, and '
                      f"the recipe's tokenizer.name is {_tok_name(mine)}: the model would "
                      f'train on the ids of another vocabulary. Convert the data again with '
                      f'--tokenizer {recipe.tokenizer_name}, or point the recipe at data made '
                      f'with it', warnings)
    _check_ids(s, recipe, data, 'the tokens were made by', warnings)
    length, limit = s.length, s.max_seq_len
    if length is None or limit is None or length == limit:
        return
    if length > limit:
        warnings.append(
            f'{s.key}: samples are {length:,} tokens and max_seq_len is {limit:,}: llm-foundry '
            f'keeps the first {limit:,} of each and drops the other {length - limit:,} '
            f'({(length - limit) / length:.0%} of the tokens downloaded are never used); '
            f'convert with --concat-tokens {limit} to use all of them')
    else:
        what = ('the model never trains on contexts beyond {0:,} tokens and a step carries '
                '{1:.0%} of the tokens the batch size x max_seq_len implies'
                if s.loader == 'train_loader' else
                'the eval loss is measured on {0:,}-token contexts, not {2:,}')
        warnings.append(
            f'{s.key}: samples are {length:,} tokens and max_seq_len is {limit:,}: batches are '
            f'{length:,} tokens long (llm-foundry pads nothing when all samples have one '
            f'length), so {what.format(length, length / limit, limit)}; convert with '
            f'--concat-tokens {limit} for {limit:,}-token samples')


def _check_ids(s: _Stream, recipe: _Recipe, facts: dict, how: str,
               warnings: list[str]) -> None:
    vocab, source = recipe.model_vocab
    top = facts.get('max_id')
    if vocab is None or top is None or top < vocab:
        return
    _override(recipe, IDS_BEYOND_MODEL,
              f'{s.key}: {how} tokenizer {facts.get("name")}, whose ids go up to {top:,}, and '
              f'the model has {vocab:,} embeddings ({source}): a sample with an id of '
              f'{vocab:,} or more stops training at its first step (on a GPU, a device-side '
              f'assert). Give the model at least {top + 1:,} ids, or use data made with its own '
              f'tokenizer',
              warnings)


def _check_text(s: _Stream, recipe: _Recipe, warnings: list[str]) -> None:
    tok = recipe.tokenizer
    if tok.pad_token is None:  # llm-foundry's _tokenize raises this in a dataloader worker
        raise ConfigError(
            f'{recipe.where}: {s.key}: {s.url} holds text, which llm-foundry tokenizes in the '
            f'loader and pads to max_seq_len, and the recipe\'s tokenizer '
            f'{recipe.tokenizer_name!r} has no pad token (llm-foundry would stop at the first '
            f'batch): set tokenizer.kwargs.pad_token (e.g. to its eos token, '
            f'{tok.eos_token!r}), or convert the data as tokens')
    _check_ids(s, recipe, recipe.facts, "the loader tokenizes this text with the recipe's",
               warnings)
    counts = s.record.get('counts') or {}
    samples, raw = counts.get('samples'), counts.get('raw_bytes')
    size = (f', {raw / samples - 8:,.0f} bytes of text on average'  # a sample's size + offset
            if samples and raw else '')
    limit = s.max_seq_len or 0
    warnings.append(
        f'{s.key}: {s.url} holds text (one document per sample{size}): the loader tokenizes '
        f'each document into one sample padded or cut to max_seq_len {limit:,}, not packed: '
        f'shorter documents fill the rest of their {limit:,} tokens with padding, longer ones '
        f'lose their tail; to pack documents into full samples (and tokenize once, not in '
        f'every run), convert with --format tokens --tokenizer {recipe.tokenizer_name} '
        f'--concat-tokens {limit}')


def _check_loader_lengths(streams: list[_Stream], warnings: list[str]) -> None:
    """Streams of one loader whose samples differ in length: batches mixing them are padded
    to their longest sample."""
    for loader in ('train_loader', 'eval_loader'):
        mine = [s for s in streams if s.loader == loader and s.length and s.max_seq_len]
        lengths = sorted({min(s.length, s.max_seq_len) for s in mine})
        if len(lengths) > 1:
            warnings.append(
                f'{loader}.dataset: its streams hold samples of {" and ".join(map(str, lengths))} '
                f'tokens: a batch mixing them pads the shorter ones to the longest '
                f'(up to {1 - lengths[0] / lengths[-1]:.0%} of such a sample is padding); '
                f'convert every stream with one --concat-tokens')


def _check_splits(streams: list[_Stream], recipe: _Recipe, warnings: list[str]) -> None:
    """Train and eval made differently: another tokenizer is refused; another format or
    length makes the eval loss measure something else than the training loss. Each eval
    stream is compared with the first train stream that has a record."""
    train = next((s for s in streams if s.loader == 'train_loader' and s.record), None)
    if train is None:
        return
    t = train
    for e in (s for s in streams if s.loader == 'eval_loader' and s.record):
        if t.record['format'] != e.record['format']:
            warnings.append(
                f'{e.key} holds {e.record["format"]} and {t.key} {t.record["format"]}: the eval '
                f'loss is measured on samples made another way than the training loss (packed '
                f'or not), and the two do not compare')
            continue
        if t.record['format'] != 'tokens':
            continue
        a, b = t.record.get('tokenizer') or {}, e.record.get('tokenizer') or {}
        same = (a.get('fingerprint') == b.get('fingerprint') or
                (a.get('max_id') == b.get('max_id') and
                 a.get('ids_fingerprint') == b.get('ids_fingerprint')))
        if not same:
            _override(recipe, EVAL_OTHER_TOKENIZER,
                      f'{e.key}: {e.url} was made by tokenizer {_tok_name(b)}, and {t.key} '
                      f'({t.url}) by {_tok_name(a)}: the eval loss would measure another '
                      f'vocabulary. Convert both splits with one tokenizer', warnings)
        elif t.length != e.length:
            warnings.append(
                f'{e.key}: eval samples are {e.length:,} tokens, and {t.key}\'s {t.length:,}: '
                f'the eval loss is measured at another context length than the training loss, '
                f'and the two do not compare; convert both with one --concat-tokens')


def check_datasets(cfg: DictConfig, where: str) -> list[str]:
    """Checks the recipe against the record of every stream it reads (module docstring).
    Raises ConfigError (one line: `where: key: ...`, naming the override) on a refusal;
    returns the lines to print: notes and warnings, `train.py: ...`."""
    streams = _streams(cfg, where)
    recipe = _Recipe(cfg, where)
    notes, warnings = [], []
    for s in streams:
        if s.record is None:
            notes.append(f'{s.key}: {s.url} has {NO_RECORD}: its tokenizer, sample length '
                         f'and ids are not checked against the recipe (the data_prep.convert '
                         f'command that made it, run again, adds the record)')
        elif s.record['format'] == 'tokens':
            _check_tokens(s, recipe, warnings, notes)
        else:
            _check_text(s, recipe, warnings)
    _check_splits(streams, recipe, warnings)
    _check_loader_lengths(streams, warnings)
    if recipe._vocab is not None and recipe._vocab[0] is None and recipe._vocab[1]:
        notes.append(f'model: {recipe._vocab[1]}: token ids are not checked against its '
                     f'vocabulary')
    return ([f'train.py: note: {where}: {n}' for n in notes] +
            [f'train.py: warning: {where}: {w}' for w in warnings])
