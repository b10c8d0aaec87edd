"""Parallel, resumable, verified conversion of a Hugging Face text dataset into MDS in a bucket.

    python -m data_prep.convert --data-files 'build/c4_sample/c4-train.*.json.gz' \
        --remote oci://bucket@namespace/c4_zstd --compression zstd

Layout written (the CPU and GPU recipes read remote=REMOTE, split=SPLIT):

    REMOTE/SPLIT/index.json                  root index; written last, only after verification
    REMOTE/SPLIT/part-00000/index.json       one part per input file, written by one MDSWriter
    REMOTE/SPLIT/part-00000/shard.00000.mds[.zstd]
    REMOTE/SPLIT/part-00000/manifest.json    written only after the part's shards are confirmed

How it works:
- Parallel: every input file is one part. `--workers` processes take parts from a queue; each
  part has its own MDSWriter, whose thread pool uploads finished shards while the worker
  goes on encoding the next one.
- Resumable: a part counts as done only when its manifest is there, was written for the same
  settings and input, and every shard it names is in the remote with its recorded size. A
  re-run skips such parts and deletes and redoes all others. Workers die with their parent
  (PR_SET_PDEATHSIG), so after a kill -9 no orphan keeps writing into a part being redone.
- Verified: before the root index is written, every part's index.json is read back, checked
  against its manifest, and every shard it names is checked in one listing of the remote. The
  part indexes are merged with streaming's `merge_index` into a staging folder and the root
  index is then written in one atomic write (os.replace locally, a single PUT in a bucket).
  A reader therefore never sees a partial dataset; if any part must be redone, the root
  index is removed first.
- Several machines: `--num-nodes/--node-rank` (or WORLD_SIZE/RANK) give node r the parts
  i % num_nodes == r. Each node, when done, checks all parts; the node that finishes last
  finds them all complete and publishes (the merge is idempotent, so two publishing at once
  write the same bytes).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from data_prep.records import (REASONS, BadRecordError, InputError, InputFile, NeedsExactRead,
                               ReadError, iter_records, resolve_inputs)
from data_prep.remote import Remote, RemoteError, list_checked, open_remote

MANIFEST = 'manifest.json'
INDEX = 'index.json'
MANIFEST_VERSION = 1
READ_ATTEMPTS = 3  # reads of an input file that fails for a transient cause (network, 5xx)


class ConvertError(RuntimeError):
    """A problem the user can fix, said in one line (bad option, bucket, credentials...)."""


@dataclass
class ConvertConfig:
    remote: str
    data_files: str | list[str] | None = None
    dataset: str | None = None
    subset: str | None = None
    split: str = 'train'
    out_split: str | None = None          # folder under remote; default: split
    compression: str | None = None        # None, 'zstd', 'zstd:7', any streaming compression
    format: str = 'text'                  # 'text' or 'tokens'
    tokenizer: str | None = None
    concat_tokens: int = 2048
    bos_text: str = ''
    eos_text: str | None = None           # None: the tokenizer's eos token
    workers: int = 0                      # 0: the cores
    upload_workers: int = 32              # upload threads in all, shared by the workers
    max_docs: int | None = None
    size_limit: int | str = 1 << 26       # shard size before compression (streaming default)
    hashes: list[str] = field(default_factory=lambda: ['xxh64'])
    on_bad_record: str = 'error'          # or 'skip'
    num_nodes: int = 1
    node_rank: int = 0
    tmp_dir: str | None = None            # local staging of shards for bucket remotes
    progress: bool = True


# --------------------------------------------------------------------------- remote helpers

def check_remote(remote: Remote, prefix: str) -> dict[str, int]:
    """Lists `prefix`; a missing bucket, credentials or endpoint is one ConvertError line."""
    try:
        return list_checked(remote, prefix)
    except RemoteError as exc:
        raise ConvertError(str(exc)) from None


def _delete_prefix(remote: Remote, prefix: str) -> None:
    if hasattr(remote, 'root'):  # LocalRemote: one rmtree
        shutil.rmtree(os.path.join(remote.root, prefix), ignore_errors=True)
        return
    for name in remote.list(prefix.rstrip('/') + '/'):
        remote.delete(name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_files(index: dict) -> dict[str, int]:
    """basename -> bytes of every file a (part or root) index names, as stored."""
    from data_prep.verify import shard_file_infos
    return {info['basename']: info['bytes']
            for shard in index.get('shards', []) for info, _raw in shard_file_infos(shard)}


def part_problem(remote: Remote, split: str, part: str, listing: dict[str, int],
                 digest: str, deep: bool = False) -> tuple[dict | None, str]:
    """(manifest, '') if the part is complete and verified, else (None, why not).

    Checks the manifest (same settings digest), the part index's size, and every shard with
    its size in `listing`. With `deep`, also reads the part index back and checks that its
    sha256 and the shards it names match the manifest (done before publishing).
    """
    base = f'{split}/{part}/'
    if base + MANIFEST not in listing:
        return None, 'no manifest'
    try:
        manifest = json.loads(remote.read(base + MANIFEST))
    except Exception as exc:
        return None, f'unreadable manifest: {exc}'
    if manifest.get('digest') != digest:
        return None, 'written with other settings or input'
    if listing.get(base + INDEX) != manifest.get('index_bytes'):
        return None, 'part index missing or of the wrong size'
    for name, size in manifest['shards'].items():
        have = listing.get(base + name)
        if have is None:
            return None, f'shard {name} missing'
        if have != size:
            return None, f'shard {name} is {have} bytes, expected {size}'
    if deep:
        data = remote.read(base + INDEX)
        if _sha256(data) != manifest.get('index_sha256'):
            return None, 'part index changed since its manifest was written'
        if shard_files(json.loads(data)) != manifest['shards']:
            return None, 'part index and manifest name different shards'
    return manifest, ''


# --------------------------------------------------------------------------- the worker

_W: dict[str, Any] = {}


def _init_worker(counters) -> None:
    # Die with the parent: after a kill -9 of the command nothing keeps writing.
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'
    logging.getLogger('streaming').setLevel(logging.ERROR)
    from data_prep.oci_transport import register  # imports streaming: not before it is needed
    register()
    _W['counters'] = counters


def _tokens_writer_samples(cfg: dict, texts):
    """llm-foundry's ConcatTokensDataset, batched: {'tokens': int32 array of concat_tokens}."""
    import numpy as np
    tok = _W.get('tokenizer')
    if tok is None:
        from transformers import AutoTokenizer
        tok = _W['tokenizer'] = AutoTokenizer.from_pretrained(cfg['tokenizer'])
    eos_text = cfg['eos_text'] if cfg['eos_text'] is not None else (tok.eos_token or '')
    bos = tok(cfg['bos_text'], add_special_tokens=False)['input_ids'] if cfg['bos_text'] else []
    eos = tok(eos_text, add_special_tokens=False)['input_ids'] if eos_text else []
    n = cfg['concat_tokens']
    buf: list[int] = []
    batch: list[str] = []

    def drain(batch):
        nonlocal buf
        for ids in tok(batch, truncation=False, padding=False)['input_ids']:
            buf.extend(bos)
            buf.extend(ids)
            buf.extend(eos)
        while len(buf) >= n:
            yield {'tokens': np.asarray(buf[:n], dtype=np.int32)}
            buf = buf[n:]

    for text in texts:
        batch.append(text)
        if len(batch) >= 256:
            yield from drain(batch)
            batch = []
    if batch:
        yield from drain(batch)
    # The tail shorter than concat_tokens is dropped, as llm-foundry does at the end of a stream.


def _text_writer_class():
    """MDSWriter whose encode_sample for the one-`str`-column case skips the generic path
    (numpy header per sample): same bytes, a uint32 size then the UTF-8 text."""
    from streaming import MDSWriter

    class TextMDSWriter(MDSWriter):
        def encode_sample(self, sample: dict[str, Any]) -> bytes:
            data = sample['text'].encode('utf-8')
            return len(data).to_bytes(4, 'little') + data

    return TextMDSWriter


def convert_part(task: dict) -> dict:
    """Converts one input file into REMOTE/SPLIT/PART/, verifies it and writes its manifest.

    Reads UTF-8 first; if a chunk of the file does not decode, starts the part over reading
    the exact bytes, which names (or skips) the line with invalid UTF-8. If the file cannot be
    read to its end for a transient cause (a connection reset mid-body, a 5xx), the part starts
    over, up to READ_ATTEMPTS reads; then the ReadError names the file."""
    t0, c0 = time.perf_counter(), time.process_time()
    exact = False
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            try:
                return _convert_part(task, t0, c0, exact=exact)
            except NeedsExactRead:
                exact = True
                return _convert_part(task, t0, c0, exact=True)
        except ReadError as exc:
            if not exc.transient or attempt == READ_ATTEMPTS:
                exc.attempts = attempt
                raise
            logging.getLogger(__name__).info('%s; reading it again', exc)
            time.sleep(attempt)  # 1 s, then 2 s: a server that dropped one request recovers
    raise AssertionError('unreachable')


def _convert_part(task: dict, t0: float, c0: float, exact: bool) -> dict:
    from streaming import MDSWriter
    cfg, part, split = task['cfg'], task['part'], task['split']
    remote = open_remote(cfg['remote'])
    base = f'{split}/{part}'
    _delete_prefix(remote, base)  # whatever a crashed attempt left
    if hasattr(remote, 'root'):
        out: Any = os.path.join(remote.root, split, part)
    else:
        local = os.path.join(task['tmp_root'], part)
        shutil.rmtree(local, ignore_errors=True)
        out = (local, remote.join(split, part))
    columns = {'tokens': 'ndarray:int32'} if cfg['format'] == 'tokens' else {'text': 'str'}
    writer_class = MDSWriter if cfg['format'] == 'tokens' else _text_writer_class()
    writer = writer_class(columns=columns, out=out, compression=cfg['compression'],
                       hashes=sorted(cfg['hashes']), size_limit=cfg['size_limit'],
                       max_workers=task['upload_threads'], exist_ok=True)
    counters = _W.get('counters')
    skipped: dict[str, int] = {}
    stats = {'documents': 0, 'input_bytes': 0, 'samples': 0}
    limit = task['limit']
    pending_docs = pending_bytes = 0

    def texts():
        nonlocal pending_docs, pending_bytes
        if limit == 0:
            return
        for text, nbytes in iter_records(task['url'], cfg['on_bad_record'] == 'skip', skipped,
                                         exact=exact):
            stats['documents'] += 1
            stats['input_bytes'] += nbytes
            pending_docs += 1
            pending_bytes += nbytes
            if pending_docs >= 256 and counters is not None:
                with counters[0].get_lock():
                    counters[0].value += pending_docs
                    counters[1].value += pending_bytes
                pending_docs = pending_bytes = 0
            yield text
            if limit is not None and stats['documents'] >= limit:
                return

    try:
        if cfg['format'] == 'tokens':
            samples = _tokens_writer_samples(cfg, texts())
        else:
            samples = ({'text': t} for t in texts())
        for sample in samples:
            writer.write(sample)
            stats['samples'] += 1
    except BaseException:
        writer.cancel_future_jobs()  # no index for a part that did not finish
        raise
    writer.finish()  # waits for every upload; raises if one failed
    if counters is not None and pending_docs:
        with counters[0].get_lock():
            counters[0].value += pending_docs
            counters[1].value += pending_bytes

    # Confirm the part in the remote before declaring it complete.
    index_bytes = remote.read(f'{base}/{INDEX}')
    index = json.loads(index_bytes)
    listing = remote.list(base + '/')
    shards = shard_files(index)
    for name, size in shards.items():
        if listing.get(f'{base}/{name}') != size:
            raise RuntimeError(f'{remote.join(base, name)}: expected {size} bytes in the remote, '
                               f'found {listing.get(f"{base}/{name}")}')
    n_samples = sum(s['samples'] for s in index['shards'])
    if n_samples != stats['samples']:
        raise RuntimeError(f'{remote.join(base, INDEX)} counts {n_samples} samples, '
                           f'wrote {stats["samples"]}')
    seconds = time.perf_counter() - t0
    manifest = {
        'version': MANIFEST_VERSION, 'part': part, 'input': task['url'], 'digest': task['digest'],
        'documents': stats['documents'], 'samples': stats['samples'],
        'input_bytes': stats['input_bytes'], 'skipped': skipped,
        'index_bytes': len(index_bytes), 'index_sha256': _sha256(index_bytes), 'shards': shards,
        'seconds': round(seconds, 3),
    }
    remote.write(f'{base}/{MANIFEST}', json.dumps(manifest, indent=1).encode())
    return {**manifest, 'pid': os.getpid(), 'cpu_seconds': time.process_time() - c0,
            'stored_bytes': sum(shards.values()) +
            len(index_bytes), 'objects': len(shards) + 2}


# --------------------------------------------------------------------------- the driver

def _normalize_compression(value: str | None) -> str | None:
    if value in (None, '', 'none', 'None', 'raw'):
        return None
    from streaming.base.compression import is_compression
    if not is_compression(value):
        raise ConvertError(f'unknown compression {value!r}: use none, zstd or zstd:LEVEL')
    return value


def _part_digest(cfg: ConvertConfig, inp: InputFile, limit: int | None) -> str:
    key = {'input': inp.url, 'limit': limit, 'format': cfg.format,
           'compression': cfg.compression, 'size_limit': str(cfg.size_limit),
           'hashes': sorted(cfg.hashes), 'on_bad_record': cfg.on_bad_record}
    if cfg.format == 'tokens':
        key.update(tokenizer=os.path.abspath(cfg.tokenizer) if cfg.tokenizer and
                   os.path.exists(cfg.tokenizer) else cfg.tokenizer,
                   concat_tokens=cfg.concat_tokens, bos_text=cfg.bos_text, eos_text=cfg.eos_text)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _limits(n_parts: int, max_docs: int | None) -> list[int | None]:
    """--max-docs spread over the parts: part i gets N // P, plus one for the first N % P."""
    if max_docs is None:
        return [None] * n_parts
    return [max_docs // n_parts + (1 if i < max_docs % n_parts else 0) for i in range(n_parts)]


def _validate(cfg: ConvertConfig) -> None:
    if cfg.format not in ('text', 'tokens'):
        raise ConvertError(f'--format must be text or tokens, not {cfg.format!r}')
    if cfg.on_bad_record not in ('error', 'skip'):
        raise ConvertError('--on-bad-record must be error or skip')
    if cfg.num_nodes < 1 or not 0 <= cfg.node_rank < cfg.num_nodes:
        raise ConvertError(f'--node-rank must be in [0, {cfg.num_nodes})')
    if cfg.max_docs is not None and cfg.max_docs < 0:
        raise ConvertError('--max-docs must be >= 0')
    if cfg.format == 'tokens':
        if not cfg.tokenizer:
            raise ConvertError('--format tokens needs --tokenizer')
        if cfg.concat_tokens < 1:
            raise ConvertError('--concat-tokens must be >= 1')


def _check_tokenizer(cfg: ConvertConfig) -> None:
    try:
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(cfg.tokenizer)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConvertError(f'cannot load tokenizer {cfg.tokenizer!r}: {first}') from None


def publish(remote: Remote, split: str, manifests: dict[str, dict],
            existing: bool = False) -> str:
    """Merges the verified part indexes with streaming's merge_index; writes the root last."""
    from streaming.base.util import merge_index
    urls = [remote.join(split, part, INDEX) for part in sorted(manifests)]
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # merge_index logs a warning per call about its temp dir
    try:
        with tempfile.TemporaryDirectory(prefix='c4-merge-') as staging:
            merge_index(urls, staging, keep_local=True)
            with open(os.path.join(staging, INDEX), 'rb') as f:
                data = f.read()
    finally:
        root_logger.setLevel(level)
    merged = json.loads(data)
    want = sum(m['samples'] for m in manifests.values())
    got = sum(s['samples'] for s in merged['shards'])
    if got != want:
        raise ConvertError(f'merged index counts {got} samples, the parts {want}; not published')
    if existing:
        try:
            if remote.read(f'{split}/{INDEX}') == data:
                return remote.join(split, INDEX)  # already published, byte for byte
        except Exception:
            pass
    remote.write(f'{split}/{INDEX}', data)
    return remote.join(split, INDEX)


def convert(cfg: ConvertConfig) -> dict:
    """Runs the conversion; returns the summary dict (see `format_summary`).

    Raises ConvertError / InputError (one line for the user) or BadRecordError (file:line).
    """
    t0 = time.perf_counter()
    # Cheap checks first, so a wrong bucket or input says so in a second, not after imports.
    _validate(cfg)
    split = cfg.out_split or cfg.split
    if cfg.remote.startswith('oci://'):
        from data_prep.oci_transport import register
        register()
    try:
        remote = open_remote(cfg.remote)
    except RemoteError as exc:
        raise ConvertError(str(exc)) from None
    except Exception as exc:
        raise ConvertError(f'cannot open {cfg.remote}: {type(exc).__name__}: {exc}') from None
    listing = check_remote(remote, f'{split}/')
    inputs = resolve_inputs(cfg.dataset, cfg.subset, cfg.split, cfg.data_files)
    cfg.compression = _normalize_compression(cfg.compression)  # imports streaming (seconds)
    if cfg.format == 'tokens':
        _check_tokenizer(cfg)
    import datasets  # noqa: F401  (here, once: forked workers inherit it)
    t_work = time.perf_counter()  # speeds are of the work, not of importing torch & co.

    limits = _limits(len(inputs), cfg.max_docs)
    parts = {f'part-{inp.index:05d}': (inp, limits[i], _part_digest(cfg, inp, limits[i]))
             for i, inp in enumerate(inputs)}
    mine = [p for i, p in enumerate(sorted(parts)) if i % cfg.num_nodes == cfg.node_rank]
    todo, done_before = [], {}
    for part in mine:
        manifest, _why = part_problem(remote, split, part, listing, parts[part][2])
        if manifest is None:
            todo.append(part)
        else:
            done_before[part] = manifest

    if todo and f'{split}/{INDEX}' in listing:
        remote.delete(f'{split}/{INDEX}')  # unpublish before touching any part

    workers = max(1, min(cfg.workers or os.cpu_count() or 1, len(todo) or 1))
    upload_threads = max(1, -(-cfg.upload_workers // workers))
    tmp_root = os.path.join(cfg.tmp_dir or tempfile.gettempdir(), 'c4-convert',
                            hashlib.sha256(remote.join(split).encode()).hexdigest()[:12])
    task_cfg = {k: v for k, v in asdict(cfg).items()}
    tasks = [{'cfg': task_cfg, 'part': part, 'split': split, 'url': parts[part][0].url,
              'limit': parts[part][1], 'digest': parts[part][2], 'tmp_root': tmp_root,
              'upload_threads': upload_threads} for part in todo]
    results = _run_pool(tasks, workers, cfg.progress,
                        total_bytes=sum(parts[p][0].size for p in todo))

    # Publish only if every part of the dataset (all nodes) is complete and verified.
    listing = remote.list(f'{split}/')
    manifests, pending = {}, {}
    for part, (_inp, _limit, digest) in parts.items():
        manifest, why = part_problem(remote, split, part, listing, digest, deep=True)
        if manifest is None:
            pending[part] = why
        else:
            manifests[part] = manifest
    if pending and set(pending) & set(mine):
        bad = sorted(set(pending) & set(mine))[0]
        raise ConvertError(f'part {bad} failed verification after conversion: {pending[bad]}')
    index_url = (publish(remote, split, manifests, existing=f'{split}/{INDEX}' in listing)
                 if not pending else None)
    if index_url:
        listing = remote.list(f'{split}/')

    skipped = {r: 0 for r in REASONS}
    for m in manifests.values():
        for reason, n in m['skipped'].items():
            skipped[reason] = skipped.get(reason, 0) + n
    per_worker: dict[int, list[float]] = {}
    for r in results:
        acc = per_worker.setdefault(r['pid'], [0.0, 0.0, 0.0])
        acc[0] += r['input_bytes']
        acc[1] += r['seconds']
        acc[2] += r['cpu_seconds']
    run_bytes = sum(r['input_bytes'] for r in results)
    end = time.perf_counter()
    seconds = end - t_work
    return {
        'remote': cfg.remote, 'split': split, 'dataset': remote.join(split),
        'published': index_url is not None, 'index': index_url,
        'format': cfg.format, 'compression': cfg.compression or 'none', 'workers': workers,
        'upload_threads_per_worker': upload_threads,
        'parts': len(parts), 'parts_this_node': len(mine), 'parts_converted': len(results),
        'parts_already_complete': len(done_before), 'parts_pending': sorted(pending),
        'documents': sum(m['documents'] for m in manifests.values()),
        'samples': sum(m['samples'] for m in manifests.values()),
        'input_bytes': sum(m['input_bytes'] for m in manifests.values()),
        'skipped': skipped,
        'run_documents': sum(r['documents'] for r in results),
        'run_samples': sum(r['samples'] for r in results),
        'run_input_bytes': run_bytes,
        'run_bytes_written': sum(r['stored_bytes'] for r in results),
        'run_objects_written': sum(r['objects'] for r in results),
        'bytes': sum(listing.values()), 'objects': len(listing),
        'seconds': seconds, 'startup_seconds': t_work - t0, 'total_seconds': end - t0,
        'mb_per_s': run_bytes / 1e6 / seconds if seconds else 0.0,
        # Per worker: input MB per second of its wall time on parts, and per CPU-second
        # (the latter does not drop when other programs share the cores).
        'worker_mb_per_s': sorted(b / 1e6 / s for b, s, _ in per_worker.values() if s > 0),
        'worker_mb_per_cpu_s': sorted(b / 1e6 / c for b, _, c in per_worker.values() if c > 0),
    }


def _run_pool(tasks: list[dict], workers: int, progress: bool, total_bytes: int) -> list[dict]:
    if not tasks:
        return []
    # Import the heavy libraries once here: forked workers inherit them (streaming alone
    # takes seconds to import, as it pulls in transformers and torch).
    import datasets  # noqa: F401
    import streaming  # noqa: F401
    from data_prep.records import _quiet_datasets
    _quiet_datasets()
    ctx = mp.get_context('fork')
    counters = (ctx.Value('q', 0), ctx.Value('q', 0))
    results: list[dict] = []
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(counters,))
    bar = None
    try:
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), unit='part', desc='convert', dynamic_ncols=True,
                       file=sys.stderr)
        it = pool.imap_unordered(convert_part, tasks)
        t0 = time.perf_counter()
        while len(results) < len(tasks):
            try:
                results.append(it.next(timeout=0.5))
                if bar:
                    bar.update(1)
            except mp.TimeoutError:
                pass
            if bar:
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f'{counters[0].value / dt:,.0f} docs/s '
                                    f'{counters[1].value / 1e6 / dt:.1f} MB/s '
                                    f'{counters[0].value:,} docs', refresh=False)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        if bar:
            bar.close()
        pool.join()
    return results


def format_summary(s: dict) -> str:
    skipped = {k: v for k, v in s['skipped'].items() if v}
    skipped_txt = (', '.join(f'{k} {v:,}' for k, v in skipped.items()) if skipped else 'none')
    lines = [
        f'convert {s["format"]}/{s["compression"]} -> {s["dataset"]}',
        f'  parts              {s["parts"]} ({s["parts_converted"]} converted now, '
        f'{s["parts_already_complete"]} already complete, {len(s["parts_pending"])} pending '
        f'on other nodes)',
        f'  documents read     {s["documents"]:,}',
        f'  samples written    {s["samples"]:,}',
        f'  records skipped    {skipped_txt}',
        f'  in the remote      {s["bytes"]:,} bytes in {s["objects"]:,} objects '
        f'(this run wrote {s["run_bytes_written"]:,} bytes in {s["run_objects_written"]:,})',
        f'  seconds            {s["seconds"]:.2f} (+ {s.get("startup_seconds", 0):.1f} s starting '
        f'up: checks, imports)',
        f'  input              {s["run_input_bytes"] / 1e6:,.1f} MB of JSON this run, '
        f'{s["mb_per_s"]:.1f} MB/s with {s["workers"]} workers',
    ]
    if s['published']:
        lines.append(f'  published          {s["index"]}')
    else:
        lines.append(f'  NOT published yet: {len(s["parts_pending"])} parts are converted by other '
                     f'nodes; the last node to finish publishes (or re-run any node)')
    return '\n'.join(lines)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m data_prep.convert',
        description='Convert a Hugging Face text dataset (hub or local json.gz files) into MDS '
                    'shards in a bucket: parallel, resumable, verified before it is published.')
    src = p.add_argument_group('input (one of --dataset or --data-files)')
    src.add_argument('--dataset', help='hub dataset name, e.g. allenai/c4 (streamed)')
    src.add_argument('--subset', help='hub dataset config, e.g. en')
    src.add_argument('--split', default='train',
                     help='split to convert; also the folder under --remote (default train)')
    src.add_argument('--data-files', help="local JSON-lines files, a glob such as "
                     "'build/c4_sample/c4-train.*.json.gz' (same records as the hub)")
    out = p.add_argument_group('output')
    out.add_argument('--remote', required=True, help='oci://bucket@namespace/prefix, '
                     's3://bucket/prefix (with S3_ENDPOINT_URL) or a local path')
    out.add_argument('--out-split', help='folder under --remote (default: --split)')
    out.add_argument('--compression', default='none',
                     help='none, zstd or zstd:LEVEL (default none)')
    out.add_argument('--format', default='text', choices=['text', 'tokens'],
                     help='text: {"text": str}; tokens: concatenated token samples as '
                     '"tokens: ndarray:int32" like llm-foundry convert_dataset_hf (default text)')
    out.add_argument('--tokenizer', help='tokenizer name or directory for --format tokens')
    out.add_argument('--concat-tokens', type=int, default=2048,
                     help='tokens per sample for --format tokens (default 2048)')
    out.add_argument('--bos-text', default='', help='text put before each document (tokens)')
    out.add_argument('--eos-text', default=None,
                     help="text put after each document (tokens; default the tokenizer's eos)")
    out.add_argument('--size-limit', default=str(1 << 26),
                     help='shard size limit before compression, bytes or e.g. 64mb '
                     '(default 67108864, streaming\'s own)')
    out.add_argument('--hashes', default='xxh64',
                     help='hashes recorded per shard in the index, comma-separated '
                     '(default xxh64, fast; e.g. sha1,xxh64; "" for none)')
    run = p.add_argument_group('run')
    run.add_argument('--workers', type=int, default=0,
                     help=f'conversion processes (default: the cores, {os.cpu_count()})')
    run.add_argument('--upload-workers', type=int, default=32,
                     help='upload threads in all, shared by the workers (default 32)')
    run.add_argument('--max-docs', type=int, default=None,
                     help='convert at most N documents, spread evenly over the input files')
    run.add_argument('--on-bad-record', default='error', choices=['error', 'skip'],
                     help='bad JSON, invalid UTF-8, missing/non-string/empty text: stop with '
                     'the file and line (error, default) or skip and count each reason (skip)')
    run.add_argument('--num-nodes', type=int, default=_env_int('WORLD_SIZE', 1),
                     help='machines sharing the input files (default $WORLD_SIZE or 1)')
    run.add_argument('--node-rank', type=int, default=_env_int('RANK', 0),
                     help='this machine, 0..num-nodes-1 (default $RANK or 0)')
    run.add_argument('--tmp-dir', help='local staging for shards before upload '
                     '(default the system temp dir)')
    run.add_argument('--no-progress', action='store_true', help='no progress bar')
    run.add_argument('--json', action='store_true', help='print the summary as JSON')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.dataset) == bool(args.data_files):
        build_parser().error('give exactly one of --dataset or --data-files')
    size_limit: int | str = int(args.size_limit) if args.size_limit.isdigit() else args.size_limit
    cfg = ConvertConfig(
        remote=args.remote, data_files=args.data_files, dataset=args.dataset, subset=args.subset,
        split=args.split, out_split=args.out_split, compression=args.compression,
        format=args.format, tokenizer=args.tokenizer, concat_tokens=args.concat_tokens,
        bos_text=args.bos_text, eos_text=args.eos_text, workers=args.workers,
        upload_workers=args.upload_workers, max_docs=args.max_docs, size_limit=size_limit,
        hashes=[h for h in args.hashes.split(',') if h], on_bad_record=args.on_bad_record,
        num_nodes=args.num_nodes, node_rank=args.node_rank, tmp_dir=args.tmp_dir,
        progress=not args.no_progress)
    logging.getLogger('streaming').setLevel(logging.ERROR)
    try:
        summary = convert(cfg)
    except BadRecordError as exc:
        print(f'error: bad record at {exc}. Nothing was published; fix the input or re-run with '
              f'--on-bad-record skip to skip and count such records.', file=sys.stderr)
        return 1
    except (ConvertError, InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except ReadError as exc:  # a file that cannot be read to its end, named
        again = '; run the same command again to resume' if exc.transient else ''
        print(f'error: {exc}. Nothing was published{again}.', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\ninterrupted: nothing was published; run the same command again to resume.',
              file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. an upload that failed after its retries
        print(f'error: conversion failed: {type(exc).__name__}: {exc}. Nothing was published; '
              f'run the same command again to resume.', file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
