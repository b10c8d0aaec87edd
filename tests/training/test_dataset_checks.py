"""train.py checks a recipe against the record of every dataset it reads
(training/checks/datasets.py): data converted as tokens with one tokenizer, in the local OCI
store, read by the CPU twin and by a GPU recipe with another tokenizer, another max_seq_len, a
model with fewer embeddings, an eval split made differently, text, and a dataset without a
record."""
import json
import subprocess
from pathlib import Path

import pytest

from data_prep.pipeline.convert import ConvertConfig, convert
from data_prep.pipeline.stats import bucket_stats
from data_prep.pipeline.verify import verify
from tests.helpers import COMPOSER, PY, ROOT, one_error_line, run
from training.checks.datasets import OVERRIDES, check_datasets
from training.config import ConfigError, load_config

CPU = 'yamls/cpu/c4_zstd.yaml'
GPU = 'yamls/c4_zstd.yaml'
TINY = ROOT / 'tests' / 'data' / 'qwen2_tiny'  # a Qwen2 config.json of 4,096 ids, no weights
STORE = 'oci://c4-bench@local'
NO_RECORD = ('has no dataset.json (published before datasets recorded how they were made, or '
             'by another tool): its tokenizer, sample length and ids are not checked against '
             'the recipe (the data_prep.convert command that made it, run again, adds the '
             'record)')


def _convert(sample_dir, url: str, split: str, tokenizer=None, concat=128, docs=300) -> None:
    tokens = dict(format='tokens', tokenizer=str(tokenizer), concat_tokens=concat) \
        if tokenizer else {}
    convert(ConvertConfig(remote=url, split=split, max_docs=docs, workers=2, progress=False,
                          data_files=str(sample_dir / f'c4-{split}.*.json.gz'),
                          compression='zstd', **tokens))


def check(recipe: str, overrides: list[str]) -> list[str]:
    return check_datasets(load_config(str(ROOT / recipe), overrides), recipe)


def refusal(recipe: str, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        check(recipe, overrides)
    return str(err.value)


def _fp(url: str, split: str) -> str:
    """The first 12 digits of the tokenizer fingerprint a split's record holds."""
    from data_prep.pipeline.record import read_record
    from data_prep.storage import open_remote
    return read_record(open_remote(url), split)['tokenizer']['fingerprint'][:12]


def test_a_recipe_is_checked_against_the_tokens_it_reads(sample_dir, tokenizer_dir,
                                                         other_tokenizer_dir, oci_store,
                                                         tmp_path):
    url = f'{STORE}/tok'
    for split in ('train', 'validation'):
        _convert(sample_dir, url, split, tokenizer_dir)
    a, b = str(tokenizer_dir), str(other_tokenizer_dir)
    data = [f'variables.data_remote={url}']
    mine = [*data, f'tokenizer.name={a}']
    assert check(CPU, mine) == []  # the same tokenizer and length: nothing to say
    # The record in the bucket, as stats and verify read it through our OCI client.
    stats = bucket_stats(url)
    assert set(stats['splits']) == {'train', 'validation'}
    assert stats['splits']['train']['tokenizer']['name'] == str(tokenizer_dir)
    report = verify(url)
    assert report['ok'] and report['splits']['train']['tokens_checked'], report

    # Another tokenizer: refused, naming both and the override.
    fp_a = _fp(url, 'train')
    theirs = [*data, f'tokenizer.name={b}']
    line = refusal(CPU, theirs)
    assert line.startswith(
        f'{CPU}: train_loader.dataset: {url}/train holds tokens made by tokenizer {a} '
        f'(PreTrainedTokenizerFast, 4,096 ids, fingerprint {fp_a}), and the recipe\'s '
        f'tokenizer.name is {b} (PreTrainedTokenizerFast, 3,000 ids, fingerprint '), line
    assert line.endswith(
        f'the model would train on the ids of another vocabulary. Convert the data again with '
        f'--tokenizer {b}, or point the recipe at data made with it; if you know better, '
        f'variables.allow_other_tokenizer=true'), line
    lines = check(CPU, [*theirs, 'variables.allow_other_tokenizer=true'])
    assert [x.split(' holds ')[0] for x in lines] == [
        f'train.py: warning: {CPU}: {k}.dataset: going on as variables.allow_other_tokenizer '
        f'says: {url}/{split}' for k, split in (('train_loader', 'train'),
                                                ('eval_loader', 'validation'))]
    # The same vocabulary with a pad token added at its end: the data's ids read the same.
    lines = check(CPU, [*mine, 'tokenizer.kwargs.pad_token=<|another pad|>'])
    assert len(lines) == 2 and all(x.startswith('train.py: note: ') and x.endswith(
        'differs in its special tokens or added ids only, and reads every id of the data as '
        'the same token') for x in lines), lines

    # Samples longer or shorter than max_seq_len: named, with what it costs.
    assert check(CPU, [*mine, 'variables.max_seq_len=64']) == [
        f'train.py: warning: {CPU}: {k}.dataset: samples are 128 tokens and max_seq_len is 64: '
        f'llm-foundry keeps the first 64 of each and drops the other 64 (50% of the tokens '
        f'downloaded are never used); convert with --concat-tokens 64 to use all of them'
        for k in ('train_loader', 'eval_loader')]
    assert check(CPU, [*mine, 'variables.max_seq_len=256'])[0] == (
        f'train.py: warning: {CPU}: train_loader.dataset: samples are 128 tokens and '
        f'max_seq_len is 256: batches are 128 tokens long (llm-foundry pads nothing when all '
        f'samples have one length), so the model never trains on contexts beyond 128 tokens '
        f'and a step carries 50% of the tokens the batch size x max_seq_len implies; convert '
        f'with --concat-tokens 256 for 256-token samples')

    # Ids the model has no embedding for.
    assert refusal(CPU, [*mine, 'model.vocab_size=2048']) == (
        f'{CPU}: train_loader.dataset: the tokens were made by tokenizer {a}, whose ids go up '
        f'to 4,095, and the model has 2,048 embeddings (model.vocab_size): a sample with an id '
        f'of 2,048 or more stops training at its first step (on a GPU, a device-side assert). '
        f'Give the model at least 4,096 ids, or use data made with its own tokenizer; if you '
        f'know better, variables.allow_ids_beyond_model_vocab=true')

    # A GPU recipe copied for another model: its tokenizer and config.json (read alone: that
    # folder has no weights) against the data.
    gpu = [*data, f'variables.model_name={TINY}', 'variables.data_local=' + str(tmp_path)]
    line = refusal(GPU, [*gpu, f'tokenizer.name={b}'])
    assert line.startswith(f'{GPU}: train_loader.dataset: {url}/train holds tokens made by '
                           f'tokenizer {a} '), line
    assert f"the recipe's tokenizer.name is {b} " in line
    assert check(GPU, [*gpu, f'tokenizer.name={a}'])[0].startswith(
        f'train.py: warning: {GPU}: train_loader.dataset: samples are 128 tokens and '
        f'max_seq_len is 2,048: batches are 128 tokens long')
    small = tmp_path / 'small_model'
    small.mkdir()
    config = json.loads((TINY / 'config.json').read_text())
    (small / 'config.json').write_text(json.dumps({**config, 'vocab_size': 1024}))
    line = refusal(GPU, [*gpu, f'tokenizer.name={a}', f'variables.model_name={small}'])
    assert f'and the model has 1,024 embeddings (vocab_size in config.json of {small})' in line
    (tmp_path / 'no_config').mkdir()  # a model whose size cannot be read: said, not refused
    assert check(GPU, [*gpu, f'tokenizer.name={a}', f'variables.model_name={tmp_path}/no_config',
                       'variables.max_seq_len=128']) == [
        f'train.py: note: {GPU}: model: cannot read config.json of {tmp_path}/no_config '
        f"(FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{tmp_path}/no_config/config.json'): token ids are not checked against its vocabulary"]
    assert not (tmp_path / 'train').exists()  # no shard, not even a cached index


def test_train_and_eval_made_differently(sample_dir, tokenizer_dir, other_tokenizer_dir,
                                         oci_store):
    a, b = str(tokenizer_dir), str(other_tokenizer_dir)
    _convert(sample_dir, f'{STORE}/mixed', 'train', a)
    _convert(sample_dir, f'{STORE}/mixed', 'validation', b, concat=64)
    _convert(sample_dir, f'{STORE}/short', 'train', a)
    _convert(sample_dir, f'{STORE}/short', 'validation', a, concat=64)
    mixed = [f'variables.data_remote={STORE}/mixed', f'tokenizer.name={a}']
    # The eval split's tokenizer is not the recipe's: refused as such first ...
    assert refusal(CPU, mixed).startswith(
        f'{CPU}: eval_loader.dataset: {STORE}/mixed/validation holds tokens made by tokenizer '
        f'{b} ')
    # ... then, past that override, as a split made differently from train.
    line = refusal(CPU, [*mixed, 'variables.allow_other_tokenizer=true'])
    assert line.startswith(f'{CPU}: eval_loader.dataset: {STORE}/mixed/validation was made '
                           f'by tokenizer {b} (PreTrainedTokenizerFast, 3,000 ids, ')
    assert f'and train_loader.dataset ({STORE}/mixed/train) by {a} ' in line
    assert line.endswith('the eval loss would measure another vocabulary. Convert both splits '
                         'with one tokenizer; if you know better, '
                         'variables.allow_eval_other_tokenizer=true')
    lines = check(CPU, [*mixed, 'variables.allow_other_tokenizer=true',
                        'variables.allow_eval_other_tokenizer=true'])
    assert len(lines) == 3 and all(x.startswith(f'train.py: warning: {CPU}: eval_loader')
                                   for x in lines), lines

    # The same tokenizer, another length: a warning that the losses do not compare.
    lines = check(CPU, [f'variables.data_remote={STORE}/short', f'tokenizer.name={a}'])
    assert lines[-1] == (
        f"train.py: warning: {CPU}: eval_loader.dataset: eval samples are 64 tokens, and "
        f"train_loader.dataset's 128: the eval loss is measured at another context length "
        f"than the training loss, and the two do not compare; convert both with one "
        f"--concat-tokens")
    assert lines[0].startswith(f'train.py: warning: {CPU}: eval_loader.dataset: samples are '
                               f'64 tokens and max_seq_len is 128: batches are 64 tokens long')
    assert len(lines) == 2


def test_text_and_datasets_without_a_record(sample_dir, tokenizer_dir, mds_zstd, oci_store,
                                            tmp_path):
    from transformers import AutoTokenizer
    a = str(tokenizer_dir)
    _convert(sample_dir, f'{STORE}/text', 'train')
    _convert(sample_dir, f'{STORE}/text', 'validation', a)
    lines = check(CPU, [f'variables.data_remote={STORE}/text', f'tokenizer.name={a}'])
    assert lines[0].startswith(
        f'train.py: warning: {CPU}: train_loader.dataset: {STORE}/text/train holds text (one '
        f'document per sample, ')
    assert lines[0].endswith(
        ' bytes of text on average): the loader tokenizes each document into one sample padded '
        'or cut to max_seq_len 128, not packed: shorter documents fill the rest of their 128 '
        'tokens with padding, longer ones lose their tail; to pack documents into full samples '
        '(and tokenize once, not in every run), convert with --format tokens --tokenizer '
        f'{a} --concat-tokens 128')
    assert lines[1] == (
        f'train.py: warning: {CPU}: eval_loader.dataset holds tokens and train_loader.dataset '
        f'text: the eval loss is measured on samples made another way than the training loss '
        f'(packed or not), and the two do not compare')
    assert len(lines) == 2

    # Text needs a pad token, which llm-foundry asks for only at the first batch.
    nopad = AutoTokenizer.from_pretrained(tokenizer_dir)
    nopad.pad_token = None
    nopad.save_pretrained(tmp_path / 'nopad')
    line = refusal(CPU, [f'variables.data_remote={STORE}/text',
                         f'tokenizer.name={tmp_path / "nopad"}'])
    assert line == (
        f"{CPU}: train_loader.dataset: {STORE}/text/train holds text, which llm-foundry "
        f"tokenizes in the loader and pads to max_seq_len, and the recipe's tokenizer "
        f"'{tmp_path / 'nopad'}' has no pad token (llm-foundry would stop at the first batch): "
        f"set tokenizer.kwargs.pad_token (e.g. to its eos token, '<|endoftext|>'), or convert "
        f"the data as tokens")

    # Published before records (or by another tool): one line each, and nothing refused.
    assert check(CPU, [f'variables.data_remote={mds_zstd}', f'tokenizer.name={a}']) == [
        f'train.py: note: {CPU}: {k}.dataset: {mds_zstd}/{split} {NO_RECORD}'
        for k, split in (('train_loader', 'train'), ('eval_loader', 'validation'))]
    # No dataset there at all: left to the check of the index, which names it.
    assert check(CPU, [f'variables.data_remote={tmp_path}/none', f'tokenizer.name={a}']) == []


def test_every_override_is_documented():
    doc = (ROOT / 'docs' / 'training.md').read_text()
    assert len(OVERRIDES) == 3
    assert all(f'`variables.{key}=true`' in doc for key in OVERRIDES)


@pytest.mark.slow
@pytest.mark.e2e
def test_train_py_stops_on_another_tokenizer_and_trains_on_its_own(
        sample_dir, tokenizer_dir, other_tokenizer_dir, oci_store, tmp_path):
    url = f'{STORE}/tok'
    for split in ('train', 'validation'):
        _convert(sample_dir, url, split, tokenizer_dir)
    common = [f'variables.data_remote={url}', f'variables.data_local={tmp_path}/cache',
              f'save_folder={tmp_path}/ckpt', 'variables.run_name=checked',
              f'callbacks.run_report.folder={tmp_path}/report']

    # Another tokenizer: one line, exit 2, before any shard or index is downloaded.
    proc = subprocess.run([PY, 'train.py', CPU, *common, f'tokenizer.name={other_tokenizer_dir}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith(f'error: {CPU}: train_loader.dataset: {url}/train holds tokens made '
                           f'by tokenizer {tokenizer_dir} '), line
    assert line.endswith('variables.allow_other_tokenizer=true'), line
    assert not (tmp_path / 'cache').exists()

    # Its own tokenizer and length: not a word about the data, and it trains, FSDP over two
    # processes as the recipe runs (every rank checks before torch.distributed starts).
    proc = run([COMPOSER, '-n', '2', 'train.py', CPU, *common, f'tokenizer.name={tokenizer_dir}',
                'max_duration=3ba', 'eval_interval=3ba', 'console_log_interval=1ba'])
    out = proc.stdout + proc.stderr
    assert 'train.py: warning' not in out and 'train.py: note' not in out, out[-3000:]
    assert len([x for x in out.splitlines() if 'loss/train/total' in x]) == 3, out[-3000:]
    report = json.loads(Path(tmp_path / 'report' / 'run_metrics.json').read_text())
    assert report['status'] == 'completed' and report['steps'] == 3, report
    assert report['world_size'] == 2, report
