"""`make bench-convert`: one C4-like input converted four ways in one run, each side a whole
process, timed from its start to its exit and split into start-up, conversion and end.

(a) ours: `python -m data_prep.convert` (the local pool, one worker per core), into a folder;
(b) the seed walkthrough's loop: one `load_dataset('json', streaming=True)` iterator into one
    MDSWriter, in one process that imports what the seed imported (`from streaming import
    MDSWriter`) and exits the ordinary way;
(c) the per-core limit: the least a worker must do, on one core: the same gunzip as (a) and
    (b) (fsspec's, which datasets uses: ISA-L when `isal` is installed) and the same parser as
    (a) (orjson on each line's bytes; (b)'s pyarrow JSON reader is not a per-line parser), the
    text encoded and compressed with zstd level 3 in shard-sized chunks. Lines are split by
    bytes.split on 16 MiB reads: no per-line file calls, no MDS framing, nothing written;
(d) Spark local[2]: `python -m data_prep.convert --engine spark --spark-master local[2]` on
    the same input.

Every side reports, on the clock all processes of a machine share (time.monotonic), when it
read its first record and when its output was complete (for (a): the summary's
`first_record_at` and `parts_done_at`). Start-up = first record - process start; conversion =
done - first record; end = process exit - done. All sides read the same files, written once by
data_prep.pipeline.sample (C4's document lengths); MB are of uncompressed input JSON. Rounds
are interleaved so a change of load hits all sides alike; each side's best round (least
whole-process time) is kept. Targets on this 2-core machine: start-up <= 1.5 s,
end <= 0.3 s, (a) >= 1.7x (b) as whole processes on >= 1 GB of JSON.

    python -m scripts.bench.convert [--size-mb 1000] [--files 8] [--rounds 2]
                                    [--input-dir DIR] [--json results/bench_convert.json]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from scripts.bench.lib import fmt, machine, run_timed, save_json

ROOT = Path(__file__).resolve().parents[2]

C4_EN_TEXT_GB = 828.6   # allenai/c4 en: text only
C4_EN_JSON_GB = 897.0   # the same as JSON lines (text / JSON of C4-like records)
C4_EN_GZ_GB = 305.0     # as the hub stores it
C4_EN_FILES = 1024
SIDES = {'a': 'ours, the pool', 'b': "the seed's loop", 'c': 'per-core limit, 1 core',
         'd': 'Spark local[2]', 'a0': '(a) of --baseline'}


# ----------------------------------------------------------------------------- sides (b), (c)

def side_naive(files: list[str], out: str, dataset: str | None = None,
               subset: str | None = None) -> dict:
    """(b) The seed walkthrough: one streaming iterator, one MDSWriter, one Python loop, over
    `files`, or over the hub's `dataset` (e.g. allenai/c4, `subset` en) when given."""
    import datasets
    from streaming import MDSWriter
    datasets.disable_progress_bars()
    if dataset:
        ds = datasets.load_dataset(dataset, subset, split='train', streaming=True)
    else:
        ds = datasets.load_dataset('json', data_files=files, split='train', streaming=True)
    n, first, cpu0 = 0, None, 0.0
    with MDSWriter(columns={'text': 'str'}, out=out, compression='zstd') as writer:
        for sample in ds:
            if first is None:
                first, cpu0 = time.monotonic(), time.process_time()
            writer.write({'text': sample['text']})
            n += 1
    return {'first_record_at': first, 'done_at': time.monotonic(), 'samples': n,
            'convert_cpu_s': time.process_time() - cpu0}


def _lines(f):
    """(line, bytes it takes in the file: with its line break) for each line of `f`."""
    rest = b''
    while block := f.read(1 << 24):
        lines = (rest + block).split(b'\n')
        rest = lines.pop()
        for line in lines:
            yield line, len(line) + 1
    if rest:
        yield rest, len(rest)


def side_limit(files: list[str], level: int = 3, chunk: int = 1 << 26) -> dict:
    """(c) gunzip + orjson + zstd on one core; input bytes counted as (a) counts them."""
    import fsspec
    import orjson
    import zstandard
    comp = zstandard.ZstdCompressor(level=level)
    first, cpu0 = None, 0.0
    nbytes = text_bytes = docs = size = 0
    buf: list[bytes] = []
    for path in files:
        with fsspec.open(path, 'rb', compression='gzip') as f:
            for line, n in _lines(f):
                nbytes += n
                if not line:
                    continue  # a blank line: (a) counts it as skipped, C4 has none
                text = orjson.loads(line)['text'].encode('utf-8')
                if first is None:
                    first, cpu0 = time.monotonic(), time.process_time()
                docs += 1
                buf.append(text)
                size += len(text)
                if size >= chunk:
                    comp.compress(b''.join(buf))
                    text_bytes += size
                    buf, size = [], 0
    if buf:
        comp.compress(b''.join(buf))
        text_bytes += size
    return {'first_record_at': first, 'done_at': time.monotonic(), 'samples': docs,
            'convert_cpu_s': time.process_time() - cpu0, 'input_bytes': nbytes,
            'text_bytes': text_bytes, 'gunzip': gunzip_name()}


def side_tokens_limit(files: list[str], out: str, tokenizer: str, encoder: str,
                      concat: int = 2048) -> dict:
    """(c-hf), (c-tt) The per-core limit for tokens: what a worker must do and nothing else,
    on one core: the same gunzip and parser as (c), 256 documents at a time through the
    encoder (`tokenizers`' batch encode, or tiktoken where exact: encoder.py), each
    document's ids and the eos into one stream per file, cut into `concat`-token samples
    written by one MDSWriter (zstd) into a local folder. `encode_cpu_s`: the encode calls
    alone (what the encoder itself can do on one core)."""
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'  # one core, as a conversion worker
    import fsspec
    import numpy as np
    import orjson
    from streaming import MDSWriter
    from transformers import AutoTokenizer

    from data_prep.pipeline.encoder import load_encoder
    tok = AutoTokenizer.from_pretrained(tokenizer)
    enc = load_encoder(tok, encoder)
    eos = np.array(tok(tok.eos_token, add_special_tokens=False)['input_ids'], dtype=np.int32)
    first, cpu0, encode_cpu = None, 0.0, 0.0
    nbytes = docs = samples = encoded = 0
    with MDSWriter(columns={'tokens': 'ndarray:int32'}, out=out, compression='zstd') as writer:
        for path in files:
            carry, batch = np.empty(0, dtype=np.int32), []

            def flush():
                nonlocal carry, encode_cpu, samples, encoded
                t = time.process_time()
                ids = enc.encode_batch(batch)
                encode_cpu += time.process_time() - t
                encoded += sum(map(len, ids))
                flat = np.concatenate([carry] + [x for i in ids for x in (i, eos)])
                full = len(flat) // concat * concat
                for start in range(0, full, concat):
                    writer.write({'tokens': flat[start:start + concat]})
                samples += full // concat
                carry = flat[full:]
                batch.clear()

            with fsspec.open(path, 'rb', compression='gzip') as f:
                for line, n in _lines(f):
                    nbytes += n
                    if not line:
                        continue
                    if first is None:
                        first, cpu0 = time.monotonic(), time.process_time()
                    batch.append(orjson.loads(line)['text'])
                    docs += 1
                    if len(batch) == 256:
                        flush()
            if batch:
                flush()
    return {'first_record_at': first, 'done_at': time.monotonic(), 'samples': samples,
            'documents': docs, 'convert_cpu_s': time.process_time() - cpu0,
            'encode_cpu_s': encode_cpu, 'tokens_encoded': encoded, 'input_bytes': nbytes,
            'encoder': enc.describe()}


def side_foundry(files_glob: str, out: str, tokenizer: str, concat: int = 2048) -> dict:
    """(tL) llm-foundry 0.22's own converter, as its code is: `convert_dataset_json` (through
    its argument wrapper) on the same files, tokenizer and sample length, eos between
    documents (the recipes' tokenizer adds none itself), zstd. It loads the JSON into
    datasets' Arrow cache first (HF_DATASETS_CACHE, set by the caller to a fresh folder)."""
    from llmfoundry.command_utils import convert_dataset_json_from_args
    from transformers import AutoTokenizer
    eos = AutoTokenizer.from_pretrained(tokenizer).eos_token
    convert_dataset_json_from_args(path=files_glob, out_root=out, compression='zstd',
                                   concat_tokens=concat, split='train', tokenizer=tokenizer,
                                   bos_text=None, eos_text=eos, no_wrap=False, num_workers=None)
    return {'done_at': time.monotonic(), 'eos_text': eos}


def gunzip_name() -> str:
    """Which gzip decompressor fsspec (and so datasets) uses."""
    import fsspec.compression
    opener = fsspec.compression.compr['gzip']  # fsspec names it `isal` when it picked ISA-L
    return 'ISA-L (isal)' if opener.__name__ == 'isal' else 'zlib'


# ----------------------------------------------------------------------------- running a side

def _timed(cmd: list[str], out: str | None, cwd: Path = ROOT,
           env: dict | None = None) -> tuple[dict, float, float, float]:
    """Runs `cmd` in `cwd` (its stdout ends with one JSON object); returns (that object,
    start, exit, CPU seconds of the process and the children it waited for)."""
    if out:
        shutil.rmtree(out, ignore_errors=True)
    run = run_timed(cmd, cwd=cwd, env=env)
    if run.returncode:
        raise RuntimeError(f'{" ".join(cmd[:4])}... failed ({run.returncode}): '
                           f'{run.stderr.strip()[-2000:]}')
    try:
        report = json.loads(run.stdout)
    except ValueError:  # a side's JSON line, after llm-foundry's converter's own lines
        report = json.loads(run.stdout.strip().splitlines()[-1])
    return report, run.start, run.end, run.cpu_s


def _row(report: dict, start: float, end: float, cpu: float, input_bytes: int) -> dict:
    first, done = report.get('first_record_at'), report.get('done_at')
    mb = input_bytes / 1e6
    row = {'whole_s': end - start, 'cpu_s': cpu, 'input_bytes': input_bytes,
           'samples': report.get('samples'), 'whole_mb_per_s': mb / (end - start),
           'startup_s': None, 'convert_s': None, 'end_s': None, 'convert_mb_per_s': None}
    if first is not None and done is not None:
        row.update(startup_s=first - start, convert_s=done - first, end_s=end - done,
                   convert_mb_per_s=mb / (done - first))
    return row


def run_side(side: str, files: list[str], out: str, input_bytes: int = 0) -> dict:
    """(b) or (c) in a process of its own: this script with --side. (b) does not count its
    input bytes: `input_bytes` are (c)'s, of the same files."""
    cmd = [sys.executable, '-m', 'scripts.bench.convert', '--side', side, '--out', out,
           '--', *files]
    report, start, end, cpu = _timed(cmd, out if side == 'naive' else None)
    nbytes = report.get('input_bytes', input_bytes)
    row = _row(report, start, end, cpu, nbytes)
    # CPU from the first record to the end of the conversion, as measured inside the process
    row.update(convert_cpu_s=report['convert_cpu_s'],
               convert_mb_per_cpu_s=nbytes / 1e6 / report['convert_cpu_s'])
    return {**row, 'report': report}


def run_ours(files_glob: str, out: str, workers: int, extra: tuple[str, ...] = (),
             cwd: Path = ROOT) -> dict:
    """(a), (d) with `extra`, and (a) of another checkout (`cwd`): the command a user runs.
    A checkout whose summary has no first_record_at/parts_done_at gets only whole-process
    figures."""
    cmd = [sys.executable, '-m', 'data_prep.convert', '--data-files', files_glob,
           '--remote', out, '--compression', 'zstd', '--workers', str(workers), '--no-progress',
           '--json', *extra]
    s, start, end, cpu = _timed(cmd, out, cwd)
    report = {'first_record_at': s.get('first_record_at'), 'done_at': s.get('parts_done_at'),
              'samples': s['samples']}
    row = _row(report, start, end, cpu, s['run_input_bytes'])
    row.update(workers=s['workers'], worker_mb_per_s=s['worker_mb_per_s'],
               worker_mb_per_cpu_s=s['worker_mb_per_cpu_s'], bytes=s['bytes'],
               objects=s['objects'], parts=s['parts'])
    return row


def spark_local(files_glob: str, out: str) -> dict:
    """(d) Spark in local[2], the same command with the Spark engine."""
    return run_ours(files_glob, out, 2, ('--engine', 'spark', '--spark-master', 'local[2]'))


# ----------------------------------------------------------------------------- tokens

TOKEN_SIDES = {
    't0': 'ours, the pool, tiktoken',
    'tL': "llm-foundry's convert_dataset_json",
    'c-hf': 'per-core limit, tokenizers',
    't1': 'ours, 1 worker, tokenizers',
    'c-tt': 'per-core limit, tiktoken',
    't2': 'ours, 1 worker, tiktoken',
    'tb': '--baseline, 1 worker',
}


def qwen_like_tokenizer(build: Path) -> str:
    """The Qwen2.5-like tokenizer (data_prep.pipeline.tokenizer.train_qwen2_like), built once
    into the work folder (~40 s)."""
    out = build / 'tokenizer_qwen2.5'
    if not (out / 'tokenizer.json').exists():
        from data_prep.pipeline.tokenizer import train_qwen2_like
        print(f'building the Qwen2.5-like tokenizer into {out} (once)', flush=True)
        train_qwen2_like(str(out))
    return str(out)


def subset(files: list[str], k: int, build: Path) -> str:
    """A folder of links to the first `k` files (a glob for them): the one-core rows'."""
    folder = build / f'first_{k}_files'
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in files[:k]:
        (folder / Path(f).name).symlink_to(Path(f).resolve())
    return str(folder / 'c4-train.*.json.gz')


def _token_figures(row: dict, concat: int) -> dict:
    tokens = row['samples'] * concat
    row.update(tokens=tokens, tokens_per_cpu_s=tokens / row['cpu_s'],
               tokens_per_s=tokens / row['whole_s'])
    return row


def run_tokens_ours(files_glob: str, out: str, workers: int, tokenizer: str, encoder: str | None,
                    concat: int, cwd: Path = ROOT) -> dict:
    """(t0), (t1), (t2), (tb): `python -m data_prep.convert --format tokens`, whole process;
    `encoder` None: the checkout's default (a --baseline may not have the flag)."""
    extra = ('--format', 'tokens', '--tokenizer', tokenizer, '--concat-tokens', str(concat))
    if encoder:
        extra += ('--encoder', encoder)
    row = _token_figures(run_ours(files_glob, out, workers, extra, cwd), concat)
    # per worker, tokens per CPU-second: its MB per CPU-second at the run's tokens per MB
    per_mb = row['tokens'] / (row['input_bytes'] / 1e6)
    row['worker_tokens_per_cpu_s'] = [w * per_mb for w in row['worker_mb_per_cpu_s']]
    return row


def run_tokens_limit(files: list[str], out: str, tokenizer: str, encoder: str,
                     concat: int) -> dict:
    """(c-hf), (c-tt) in a process of their own."""
    cmd = [sys.executable, '-m', 'scripts.bench.convert', '--side', 'tokens-limit', '--out', out,
           '--tokenizer', tokenizer, '--encoder', encoder, '--', *files]
    report, start, end, cpu = _timed(cmd, out)
    row = _token_figures(_row(report, start, end, cpu, report['input_bytes']), concat)
    row.update(convert_cpu_s=report['convert_cpu_s'], encode_cpu_s=report['encode_cpu_s'],
               encoder=report['encoder'],
               limit_tokens_per_cpu_s=row['tokens'] / report['convert_cpu_s'],
               encode_tokens_per_cpu_s=report['tokens_encoded'] / report['encode_cpu_s'],
               convert_mb_per_cpu_s=report['input_bytes'] / 1e6 / report['convert_cpu_s'])
    return row


def run_foundry(files_glob: str, out: str, tokenizer: str, concat: int, build: Path,
                input_bytes: int) -> dict:
    """(tL) in a process of its own, with a fresh datasets cache (removed after)."""
    cache = build / 'hf_datasets_cache'
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, 'HF_DATASETS_CACHE': str(cache)}
    cmd = [sys.executable, '-m', 'scripts.bench.convert', '--side', 'foundry', '--out', out,
           '--tokenizer', tokenizer, '--', files_glob]
    try:
        report, start, end, cpu = _timed(cmd, out, env=env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    index = json.loads((Path(out) / 'index.json').read_text())
    report['samples'] = sum(sh['samples'] for sh in index['shards'])
    return _token_figures(_row(report, start, end, cpu, input_bytes), concat)


def _tokens_of(root: str) -> np.ndarray:
    """Every token of an MDS dataset of one `tokens` column (ndarray:int32), in index order."""
    from streaming.base.format.mds.encodings import mds_decode

    from data_prep.pipeline.verify import iter_samples
    arrays = [mds_decode('ndarray:int32', s[4:]) for s in iter_samples(root)]
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int32)


def _documents(flat: np.ndarray, eos: int) -> list[bytes]:
    """The complete documents of a token stream: each one's ids up to its eos (excluded)."""
    ends = np.flatnonzero(flat == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [flat[a:b].tobytes() for a, b in zip(starts, ends)]


def same_streams(ours_split: str, foundry_root: str, eos: int, concat: int) -> dict:
    """Whether (t0)'s tokens are llm-foundry's, up to the order of the input files and each
    part's final partial sample: every part's complete documents (ids between eos tokens)
    must be a contiguous run of llm-foundry's, and each part and llm-foundry's stream may
    leave out only what fits in its dropped tail (< concat tokens: the last documents, cut)."""
    theirs = _documents(_tokens_of(foundry_root), eos)
    where: dict[bytes, list[int]] = {}
    for i, doc in enumerate(theirs):
        where.setdefault(doc, []).append(i)
    used = np.zeros(len(theirs), dtype=bool)
    parts, problems, matched = sorted(Path(ours_split).glob('part-*/*/index.json')), [], 0
    for index in parts:
        docs = _documents(_tokens_of(str(index.parent)), eos)
        start = next((j for j in where.get(docs[0], []) if not used[j]
                      and theirs[j:j + len(docs)] == docs), None) if docs else None
        if start is None:
            problems.append(f'{index.parent.parent.name}: its documents are not a run of '
                            f"llm-foundry's")
            continue
        used[start:start + len(docs)] = True
        matched += len(docs)
    # what is left of llm-foundry's: at most each part's cut tail and llm-foundry's own
    left = [len(theirs[j]) // 4 for j in np.flatnonzero(~used)]
    allowed = concat * (len(parts) + 1)
    if sum(left) > allowed:
        problems.append(f"{len(left)} of llm-foundry's documents ({sum(left)} tokens) are in "
                        f'no part: more than the parts\' cut tails allow ({allowed})')
    return {'equal': not problems, 'problems': problems, 'documents_matched': matched,
            'documents_foundry': len(theirs), 'foundry_only_documents': len(left),
            'foundry_only_tokens': sum(left)}


def run_token_sides(args, files: list[str], files_glob: str, build: Path) -> dict:
    """The tokens rows: (t0) and (tL) on every file, the one-core rows on the first
    --one-core-files; then the checks and ratios."""
    concat = args.concat_tokens
    tokenizer = args.tokenizer or qwen_like_tokenizer(build)
    k = min(args.one_core_files, len(files))
    one_glob = subset(files, k, build)
    one_files = files[:k]
    rows = {}
    print(f'tokens: tokenizer {tokenizer}, {concat}-token samples; one-core rows on {k} of '
          f'{len(files)} files', flush=True)
    sides = {
        't0': lambda: run_tokens_ours(files_glob, str(build / 't0'), args.workers, tokenizer,
                                      'auto', concat),
        'c-hf': lambda: run_tokens_limit(one_files, str(build / 'c-hf'), tokenizer,
                                         'tokenizers', concat),
        't1': lambda: run_tokens_ours(one_glob, str(build / 't1'), 1, tokenizer, 'tokenizers',
                                      concat),
        'c-tt': lambda: run_tokens_limit(one_files, str(build / 'c-tt'), tokenizer, 'auto',
                                         concat),
        't2': lambda: run_tokens_ours(one_glob, str(build / 't2'), 1, tokenizer, 'auto', concat),
        'tb': lambda: run_tokens_ours(one_glob, str(build / 'tb'), 1, tokenizer, None, concat,
                                      cwd=Path(args.baseline).resolve()),
        'tL': lambda: run_foundry(files_glob, str(build / 'tL'), tokenizer, concat, build,
                                  rows['t0']['input_bytes']),
    }
    # (t0) and (tL) once; the one-core rows in interleaved rounds, each one's least CPU kept:
    # per CPU-second is what they are compared by, and a busy machine (other programs on the
    # same physical core) makes the same work cost more CPU-seconds
    order = ['t0'] + ['c-hf', 't1', 'c-tt', 't2'] * args.token_rounds + \
        (['tb'] if args.baseline else []) + ['tL']
    for key in order:
        row = sides[key]()
        if key not in rows or row['cpu_s'] < rows[key]['cpu_s']:
            rows[key] = row
        print(f'  ({key}) {row["whole_s"]:.1f} s, CPU {row["cpu_s"]:.1f} s, {row["tokens"]:,} '
              f'tokens; load {os.getloadavg()[0]:.2f}', flush=True)
    from transformers import AutoTokenizer
    eos = AutoTokenizer.from_pretrained(tokenizer).eos_token_id
    check = same_streams(str(build / 't0' / 'train'), str(build / 'tL'), eos, concat)
    t0, t1, t2, chf, ctt, tl = (rows[k] for k in ('t0', 't1', 't2', 'c-hf', 'c-tt', 'tL'))
    hf_alone = chf['encode_tokens_per_cpu_s']
    res = {
        'tokenizer': tokenizer, 'concat_tokens': concat, 'one_core_files': k,
        'rows': rows, 'same_stream': check,
        'encoders': {key: rows[key].get('encoder') for key in ('c-hf', 'c-tt')},
        'foundry_vs_ours_whole': tl['whole_s'] / t0['whole_s'],
        'hf_alone_tokens_per_cpu_s': hf_alone,
        # one worker, whole process (start-up included), against the limit of its encoder
        't1_share_of_hf_limit': t1['tokens_per_cpu_s'] / chf['limit_tokens_per_cpu_s'],
        't2_share_of_tt_limit': t2['tokens_per_cpu_s'] / ctt['limit_tokens_per_cpu_s'],
        't2_vs_hf_alone': t2['tokens_per_cpu_s'] / hf_alone,
        't2_wall_vs_hf_alone': t2['tokens_per_s'] / hf_alone,
        'tt_limit_vs_hf_limit': ctt['limit_tokens_per_cpu_s'] / chf['limit_tokens_per_cpu_s'],
        'workers_share_of_tt_limit': [w / ctt['limit_tokens_per_cpu_s']
                                      for w in t0['worker_tokens_per_cpu_s']],
        'bytes_per_token': t0['input_bytes'] / t0['tokens'],
        'per_core_mb_s': sum(t0['worker_mb_per_cpu_s']) / len(t0['worker_mb_per_cpu_s']),
        'hf_per_core_mb_s': t1['worker_mb_per_cpu_s'][0],
    }
    if 'tb' in rows:
        res['t1_vs_baseline'] = t1['tokens_per_cpu_s'] / rows['tb']['tokens_per_cpu_s']
    res['projection'] = project_c4(res['per_core_mb_s'])
    res['projection_hf'] = project_c4(res['hf_per_core_mb_s'])
    return res


def tokens_report(t: dict) -> str:
    rows = t['rows']
    lines = [
        '',
        f"tokens: tokenizer {t['tokenizer']}, {t['concat_tokens']}-token samples, "
        f"{t['bytes_per_token']:.2f} bytes of JSON per token; (t0), (tL) on every file, the "
        f"others on the first {t['one_core_files']}",
        '                                          whole s   CPU s     tokens   tokens/CPU-s  '
        'tokens/s  MB/CPU-s',
    ]
    for key, name in TOKEN_SIDES.items():
        r = rows.get(key)
        if r is None:
            continue
        lines.append(f'({key:4s}) {name:34s} {r["whole_s"]:8.1f} {r["cpu_s"]:7.1f} '
                     f'{r["tokens"]:10,d} {r["tokens_per_cpu_s"]:12,.0f} {r["tokens_per_s"]:9,.0f}'
                     f'  {r["input_bytes"] / 1e6 / r["cpu_s"]:7.2f}')
    chf, ctt, t0 = rows['c-hf'], rows['c-tt'], rows['t0']
    s = t['same_stream']
    lines += [
        f"(c-hf) conversion only {chf['limit_tokens_per_cpu_s']:,.0f} tokens/CPU-s; the "
        f"tokenizers encode calls alone {t['hf_alone_tokens_per_cpu_s']:,.0f} tokens/CPU-s",
        f"(c-tt) conversion only {ctt['limit_tokens_per_cpu_s']:,.0f} tokens/CPU-s "
        f"({t['tt_limit_vs_hf_limit']:.2f}x (c-hf)); encoder: {ctt['encoder']}",
        f"(t0) per worker, tokens per CPU-second: "
        f"{', '.join(f'{w:,.0f}' for w in t0['worker_tokens_per_cpu_s'])} = "
        f"{', '.join(f'{x:.0%}' for x in t['workers_share_of_tt_limit'])} of (c-tt)",
        f"same token stream as llm-foundry's: {'yes' if s['equal'] else 'NO'} "
        f"({s['documents_matched']:,} of its {s['documents_foundry']:,} documents in our "
        f"parts, in order; {s['foundry_only_documents']} in the parts' cut tails)"
        + ('' if s['equal'] else '; ' + '; '.join(s['problems'][:3])),
        f"(tL) / (t0), whole processes          {t['foundry_vs_ours_whole']:.2f}x",
        f"(t1) / (c-hf), per CPU-s, whole process {t['t1_share_of_hf_limit']:.0%}   (target "
        f">= 90%: {'met' if t['t1_share_of_hf_limit'] >= 0.9 else 'NOT met'})",
        f"(t2) / tokenizers alone, per CPU-s     {t['t2_vs_hf_alone']:.2f}x   (target >= 1.5x: "
        f"{'met' if t['t2_vs_hf_alone'] >= 1.5 else 'NOT met'}; wall "
        f"{t['t2_wall_vs_hf_alone']:.2f}x)",
        f"(t2) / (c-tt), per CPU-s, whole process {t['t2_share_of_tt_limit']:.0%}",
    ]
    if 't1_vs_baseline' in t:
        lines.append(f"(t1) / (tb), per CPU-s                  {t['t1_vs_baseline']:.2f}x")
    for key, name, rate in (('projection', 'tiktoken', t['per_core_mb_s']),
                            ('projection_hf', 'tokenizers', t['hf_per_core_mb_s'])):
        cpu_h = C4_EN_JSON_GB * 1e3 / rate / 3600
        lines.append(f"projection, tokens with {name}, all of C4 en at {rate:.2f} MB of JSON per "
                     f"core-second: {cpu_h:,.0f} CPU-hours;")
        lines.append('  ' + '; '.join(f"{p['cores']} cores ({p['nodes']} nodes) "
                                      f"{p['hours'] * 60:,.0f} min"
                                      for p in t[key]))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- projection

def project_c4(per_core_mb_s: float, cores_per_node: int = 112, nic_gb_s: float = 12.5,
               hub_gb_s: float | None = None, bucket_gb_s: float | None = None,
               zstd_ratio: float = 3.0) -> list[dict]:
    """All of C4 en (897 GB of JSON in 1024 files, 305 GB gzipped) on N executor cores.

    Each limit in hours, the largest wins: CPU (897 GB / (N x per-core rate), and no fewer
    than one file per core: 1024 files in ceil(1024 / N) waves of one file each); each node's
    network (its share of 305 GB in and ~C4_EN_TEXT_GB / zstd_ratio out through one NIC of
    `nic_gb_s`, BM.H100.8's 100 Gbps front end is ~12.5 GB/s); and, when given, the hub's
    total download and the bucket's total upload bandwidth (GB/s)."""
    out_gb = C4_EN_TEXT_GB / zstd_ratio
    file_s = C4_EN_JSON_GB * 1e3 / C4_EN_FILES / per_core_mb_s
    rows = []
    for cores in (16, 64, 112, 224, 448, 1024):
        nodes = -(-cores // cores_per_node)
        limits = {
            'cpu': max(C4_EN_JSON_GB * 1e3 / (cores * per_core_mb_s),
                       -(-C4_EN_FILES // cores) * file_s) / 3600,
            'node_network': (C4_EN_GZ_GB + out_gb) / nodes / nic_gb_s / 3600,
        }
        if hub_gb_s:
            limits['hub_download'] = C4_EN_GZ_GB / hub_gb_s / 3600
        if bucket_gb_s:
            limits['bucket_upload'] = out_gb / bucket_gb_s / 3600
        bound = max(limits, key=limits.get)
        rows.append({'cores': cores, 'nodes': nodes, 'hours': limits[bound], 'bound': bound,
                     'limits_h': limits})
    return rows


# ----------------------------------------------------------------------------- main

def report_text(res: dict) -> str:
    rows, inp = res['rows'], res['input']
    lines = [
        f"input: {inp['files']} files, {inp['json_mb']:.1f} MB of JSON ({inp['text_mb']:.1f} MB "
        f"text, {inp['gz_mb']:.1f} MB gzipped, {inp['documents']:,} documents, "
        f"{inp['text_mb'] * 1e6 / max(inp['documents'], 1):,.0f} bytes of text each); "
        f"best of {res['rounds']} rounds; gunzip {res['gunzip']}",
        '                              whole   start-up  convert    end   whole MB/s  '
        'convert MB/s  CPU s',
    ]
    for key, name in SIDES.items():
        r = rows.get(key)
        if r is None and key == 'a0':
            continue
        label = f'({key}) {name}'
        if r is None:
            lines.append(f'{label:29s} not run: {res["not_run"].get(key, "")}')
            continue
        lines.append(f'{label:29s} {r["whole_s"]:7.2f}  {fmt(r["startup_s"], "6.2f")}  '
                     f'{fmt(r["convert_s"], "7.2f")}  {fmt(r["end_s"], "6.2f")}  '
                     f'{r["whole_mb_per_s"]:9.1f}  {fmt(r["convert_mb_per_s"], "10.1f")}  '
                     f'{r["cpu_s"]:7.1f}')
    a = rows['a']
    lines += [
        f"(a) per worker, MB/s of wall: {', '.join(f'{w:.1f}' for w in a['worker_mb_per_s'])}; "
        f"per CPU-second: {', '.join(f'{w:.1f}' for w in a['worker_mb_per_cpu_s'])}; "
        f"(b) {rows['b']['convert_mb_per_cpu_s']:.1f} and (c) {res['limit_mb_per_cpu_s']:.1f} "
        f"MB per CPU-second of conversion",
        '',
        f"(a) vs (b), whole processes   {res['speedup_whole']:.2f}x   (target >= 1.7x: "
        f"{'met' if res['speedup_whole'] >= 1.7 else 'NOT met'})",
        f"(a) vs (b), conversion        {res['speedup_convert']:.2f}x",
        f"slowest worker / (c), wall    {res['worker_share_wall']:.0%}",
        f"slowest worker / (c), CPU     {res['worker_share_cpu']:.0%}   (per CPU-second: the "
        f"same, immune to other load)",
        f"(a) start-up {a['startup_s']:.2f} s (target <= 1.5), end {a['end_s']:.2f} s "
        f"(target <= 0.3)",
    ]
    if 'baseline_vs_ours' in res:
        lines.append(f"--baseline {res['baseline']}: its whole process / (a)'s   "
                     f"{res['baseline_vs_ours']:.2f}x")
    if 'spark_vs_pool' in res:
        lines.append(f"(d) / (a), whole processes    {res['spark_vs_pool']:.2f}x (target <= 1.3x)")
    lines.append(f"projection, all of C4 en ({C4_EN_JSON_GB:.0f} GB of JSON, {C4_EN_FILES} files, "
                 f"{C4_EN_GZ_GB:.0f} GB gzipped) at {res['per_core_mb_s']:.1f} MB/s per core "
                 f"((a)'s mean worker per CPU-second), 112 cores and one 12.5 GB/s NIC per node, "
                 f"zstd {res['zstd_ratio']:.2f}x:")
    for p in res['projection']:
        limits = ', '.join(f'{k} {v * 60:.1f}' for k, v in p['limits_h'].items())
        lines.append(f"  {p['cores']:5d} cores ({p['nodes']:2d} nodes): "
                     f"{p['hours'] * 60:7.1f} min, bound by {p['bound']} ({limits} min)")
    return '\n'.join(lines)


def run_text_sides(args, files: list[str], files_glob: str, build: Path) -> dict:
    """The text rows (a)-(d) and (a0), interleaved rounds, best of each; {} on a mismatch."""
    rounds: dict[str, list[dict]] = {k: [] for k in SIDES}
    not_run = {}
    for r in range(args.rounds):
        c = run_side('limit', files, str(build / 'limit'))
        b = run_side('naive', files, str(build / 'naive'), c['input_bytes'])
        a = run_ours(files_glob, str(build / 'ours'), args.workers)
        d = spark_local(files_glob, str(build / 'spark'))
        a0 = run_ours(files_glob, str(build / 'baseline'), args.workers,
                      cwd=Path(args.baseline).resolve()) if args.baseline else None
        if not (a['samples'] == b['samples'] == c['samples']) or \
                a['input_bytes'] != c['input_bytes']:
            print(f'MISMATCH: samples (a) {a["samples"]} (b) {b["samples"]} (c) {c["samples"]}, '
                  f'input bytes (a) {a["input_bytes"]} (c) {c["input_bytes"]}', file=sys.stderr)
            return {}
        if a0 is not None and a0['samples'] != a['samples']:
            print(f'MISMATCH: samples (a) {a["samples"]}, baseline {a0["samples"]}',
                  file=sys.stderr)
            return {}
        for key, row in zip(('a', 'b', 'c', 'd', 'a0'), (a, b, c, d, a0)):
            if row is not None:
                rounds[key].append(row)
        print(f'round {r + 1}: whole (a) {a["whole_s"]:.1f} s, (b) {b["whole_s"]:.1f} s, '
              f'(c) {c["whole_s"]:.1f} s' + (f', (d) {d["whole_s"]:.1f} s' if d else '') +
              (f', baseline {a0["whole_s"]:.1f} s' if a0 else '') +
              f'; load {os.getloadavg()[0]:.2f}', flush=True)
    best = {k: min(v, key=lambda x: x['whole_s']) for k, v in rounds.items() if v}
    a, b, c = best['a'], best['b'], best['c']
    limit = c.pop('report')
    b.pop('report')
    c_cpu = c['convert_mb_per_cpu_s']
    per_core = sum(a['worker_mb_per_cpu_s']) / len(a['worker_mb_per_cpu_s'])
    res = {
        'input': {'files': len(files), 'json_mb': limit['input_bytes'] / 1e6,
                  'text_mb': limit['text_bytes'] / 1e6, 'documents': limit['samples'],
                  'gz_mb': sum(map(os.path.getsize, files)) / 1e6},
        'rows': best, 'not_run': not_run, 'rounds': args.rounds, 'gunzip': limit['gunzip'],
        'speedup_whole': b['whole_s'] / a['whole_s'],
        'speedup_convert': b['convert_s'] / a['convert_s'],
        'worker_share_wall': min(a['worker_mb_per_s']) / c['convert_mb_per_s'],
        # per CPU-second of conversion on both sides (a worker's parts; (c) from its first record)
        'worker_share_cpu': min(a['worker_mb_per_cpu_s']) / c_cpu,
        'limit_mb_per_cpu_s': c_cpu, 'per_core_mb_s': per_core,
        'zstd_ratio': limit['text_bytes'] / a['bytes'],
        'projection': project_c4(per_core, hub_gb_s=args.hub_gb_s, bucket_gb_s=args.bucket_gb_s,
                                 zstd_ratio=limit['text_bytes'] / a['bytes']),
        'machine': machine(),
    }
    if 'd' in best:
        res['spark_vs_pool'] = best['d']['whole_s'] / a['whole_s']
    if 'a0' in best:
        res['baseline'] = str(args.baseline)
        res['baseline_vs_ours'] = best['a0']['whole_s'] / a['whole_s']
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size-mb', type=float, default=1000,
                   help='MB of text in the input (default 1000: ~1.08 GB of JSON)')
    p.add_argument('--files', type=int, default=8, help='input json.gz files (default 8)')
    p.add_argument('--input-dir', help='use the c4-train.*.json.gz files there instead')
    p.add_argument('--workers', type=int, default=os.cpu_count(),
                   help=f'workers for (a) (default the cores, {os.cpu_count()})')
    p.add_argument('--build', default='build/bench_convert', help='work folder')
    p.add_argument('--rounds', type=int, default=2,
                   help='interleaved rounds; the best of each side is kept (default 2)')
    p.add_argument('--json', default='results/bench_convert.json', help='where to save figures')
    p.add_argument('--baseline', help='another checkout of this repository (e.g. `git worktree '
                   'add /tmp/base main`): its (a) is run too, interleaved, as row (a0)')
    p.add_argument('--hub-gb-s', type=float, help='projection: the hub\'s total download '
                   'bandwidth, GB/s (default: not a limit)')
    p.add_argument('--bucket-gb-s', type=float, help='projection: the bucket\'s total upload '
                   'bandwidth, GB/s (default: not a limit)')
    p.add_argument('--no-text', action='store_true', help='only the tokens rows')
    p.add_argument('--no-tokens', action='store_true', help='only the text rows')
    p.add_argument('--tokenizer', help='tokens: a tokenizer directory (default: the '
                   'Qwen2.5-like one, built once into --build)')
    p.add_argument('--concat-tokens', type=int, default=2048, help='tokens per sample (2048)')
    p.add_argument('--one-core-files', type=int, default=2,
                   help='tokens: the one-core rows (limits, one worker) convert the first N '
                   'input files (default 2)')
    p.add_argument('--token-rounds', type=int, default=2,
                   help='tokens: interleaved rounds of the one-core rows (default 2)')
    p.add_argument('--encoder', default='auto', help=argparse.SUPPRESS)
    p.add_argument('--side', choices=['naive', 'limit', 'tokens-limit', 'foundry'],
                   help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    p.add_argument('paths', nargs='*', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:  # one side, in a process of its own (run_side)
        if args.side == 'naive':
            report = side_naive(args.paths, args.out)
        elif args.side == 'limit':
            report = side_limit(args.paths)
        elif args.side == 'tokens-limit':
            report = side_tokens_limit(args.paths, args.out, args.tokenizer, args.encoder,
                                       args.concat_tokens)
        else:
            report = side_foundry(args.paths[0], args.out, args.tokenizer, args.concat_tokens)
        print(json.dumps(report))
        return 0

    build = Path(args.build).resolve()  # absolute: --baseline's runs start in its checkout
    if args.input_dir:
        data = Path(args.input_dir).resolve()
    else:
        from data_prep.pipeline.sample import generate
        data = build / f'input_{args.size_mb:g}mb_{args.files}f'
        generate(str(data), size_mb=args.size_mb, train_files=args.files, val_files=0)
    files_glob = str(data / 'c4-train.*.json.gz')
    files = sorted(glob.glob(files_glob))
    if not files:
        p.error(f'no input files match {files_glob}')
    load0 = os.getloadavg()
    res: dict = {'machine': machine()}
    if not args.no_text:
        res = run_text_sides(args, files, files_glob, build)
        if not res:
            return 1
        print('\n' + report_text(res))
    if not args.no_tokens:
        res['tokens'] = run_token_sides(args, files, files_glob, build)
        print(tokens_report(res['tokens']))
        if not res['tokens']['same_stream']['equal']:
            print('MISMATCH: the token streams differ', file=sys.stderr)
    res.update(loadavg_before=load0, loadavg_after=os.getloadavg())
    print(f"load average before {res['loadavg_before'][0]:.2f}, after "
          f"{res['loadavg_after'][0]:.2f}, on {res['machine']['cores']} cores")
    if args.json:
        save_json(args.json, res)
    return 0


if __name__ == '__main__':
    sys.exit(main())
