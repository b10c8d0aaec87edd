"""One part of a conversion: one input file -> REMOTE/SPLIT/PART/ (shards, index, manifest).

Runs in a worker process of the pool (pool.py) or in a Spark task (spark.py). The part's
MDSWriter uploads finished shards from its thread pool while the worker encodes the next one.
Each attempt writes into an attempt folder of its own (layout.py) and commits, once its shards
are confirmed in the remote at their recorded sizes, by creating the part's manifest if there
is none: of two attempts at one part, exactly one commits; the other deletes its folder. An
attempt that fails deletes what it wrote (what it cannot, the driver deletes before publishing).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import time
from typing import Any

from data_prep.pipeline.identity import describe_change, input_identity, same_input
from data_prep.pipeline.layout import INDEX, MANIFEST, new_attempt, sha256, shard_files
from data_prep.pipeline.records import (
    UNREADABLE_FILE,
    DiscardFile,
    InputChanged,
    NeedsExactRead,
    ReadError,
    iter_records,
)
from data_prep.pipeline.task import ConvertConfig, PartResult, PartTask
from data_prep.storage import open_remote

MANIFEST_VERSION = 3  # 2: the input's identity, its file's problems; 3: its attempt folder
READ_ATTEMPTS = 3  # reads of an input file that fails for a transient cause (network, 5xx)

_W: dict[str, Any] = {}


def init_worker(counters=None) -> None:
    """Once per worker process. `counters`: (a shared int64 array, this worker's slot): the
    documents and bytes it has read, at [2*slot] and [2*slot+1], for the parent's progress bar
    (one writer per slot, so no lock)."""
    # Die with the parent: after a kill -9 of the command nothing keeps writing.
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    # SIGTERM kills at once, whatever handler the parent had: a process that imported Composer
    # has a Python one (sys.exit), with which a worker stopping could block forever (pool.py).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'
    logging.getLogger('streaming').setLevel(logging.ERROR)
    import_writer()  # inherited from the parent when forked: nothing left to import
    _W['counters'] = counters


def _count(docs: int, nbytes: int) -> None:
    """Adds to this worker's progress counters (init_worker), if it has any."""
    if _W.get('counters') and docs:
        array, slot = _W['counters']
        array[2 * slot] += docs
        array[2 * slot + 1] += nbytes


def import_writer() -> None:
    """What converting a part needs from streaming: MDSWriter and our oci:// transport, not
    streaming's datasets (writer.defer_package_inits: no transformers, scikit-learn or
    torchvision; torch still comes with streaming.base.util). Idempotent."""
    from data_prep.streaming_ext import install_transport, writer
    writer.defer_package_inits()
    writer.import_writer_modules()
    install_transport()


def tokens_encoder(cfg: ConvertConfig):
    """(the transformers tokenizer, its Encoder: encoder.py) for cfg, loaded once per process:
    the driver loads it before forking the pool's workers, which inherit it; Spark executors
    load their own. Raises encoder.Inexact where --encoder tiktoken cannot be exact."""
    key = (cfg.tokenizer, cfg.encoder)
    if _W.get('encoder_key') != key:
        from transformers import AutoTokenizer

        from data_prep.pipeline.encoder import load_encoder
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
        _W['tokenizer'], _W['encoder'] = tok, load_encoder(tok, cfg.encoder)
        _W['encoder_key'] = key
    return _W['tokenizer'], _W['encoder']


def _tokens_writer_samples(cfg: ConvertConfig, texts):
    """llm-foundry's ConcatTokensDataset, batched: {'tokens': int32 array of concat_tokens}.
    Each document's ids (bos, the text's as `tokenizer(text)` gives them, eos) go into one
    stream, cut every concat_tokens; 256 documents are encoded at a time, and the stream is
    numpy (a list cut per sample copies the rest of the batch each time)."""
    import numpy as np

    from data_prep.pipeline.record import concat_facts  # what the dataset records of it
    tok, encoder = tokens_encoder(cfg)
    facts = concat_facts(tok, cfg.concat_tokens, cfg.bos_text, cfg.eos_text)
    bos = np.array(facts['bos_ids'], dtype=np.int32)
    eos = np.array(facts['eos_ids'], dtype=np.int32)
    n = cfg.concat_tokens
    carry = np.empty(0, dtype=np.int32)
    batch: list[str] = []

    def drain(batch):
        nonlocal carry
        pieces = [carry]
        for ids in encoder.encode_batch(batch):
            pieces += (bos, ids, eos)
        flat = np.concatenate(pieces)
        full = len(flat) // n * n
        for start in range(0, full, n):
            yield {'tokens': flat[start:start + n]}  # written (copied) before the next
        carry = flat[full:]

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
    from streaming.base.format.mds.writer import MDSWriter

    class TextMDSWriter(MDSWriter):
        def encode_sample(self, sample: dict[str, Any]) -> bytes:
            data = sample['text'].encode('utf-8')
            return len(data).to_bytes(4, 'little') + data

    return TextMDSWriter


def convert_part(task: PartTask) -> PartResult:
    """Converts one input file into REMOTE/SPLIT/PART/<attempt>/, verifies it and commits it
    by creating its manifest; returns the committed manifest (this attempt's or, if another
    attempt at the part committed first, that one's) and this attempt's figures.

    Reads UTF-8 first; if a chunk of the file does not decode, starts the part over reading
    the exact bytes, which names (or skips) the line with invalid UTF-8. A file damaged so
    that none of it can be trusted (with --on-bad-record skip) starts the part over without
    it: an empty part that counts the file as skipped. A file that cannot be read to its end
    for a transient cause (a connection reset mid-body, a 5xx after the client's own retries)
    starts the part over, up to READ_ATTEMPTS reads; then the ReadError names the file.
    Each start uses a new attempt folder."""
    t0, c0 = time.perf_counter(), time.process_time()
    exact, discard, reads = False, None, 1
    while True:
        try:
            return _convert_part(task, t0, c0, exact, discard)
        except NeedsExactRead:
            exact = True
        except DiscardFile as exc:
            discard = str(exc)
        except ReadError as exc:
            if not exc.transient or reads == READ_ATTEMPTS:
                exc.attempts = reads
                raise
            logging.getLogger(__name__).info('%s; reading it again', exc)
            time.sleep(reads)  # 1 s, then 2 s: a server that dropped one request recovers
            reads += 1


def _discard(remote, writer, folder: str) -> None:
    """A failed attempt: stop its uploads, wait for those in flight, delete what it wrote."""
    writer.cancel_future_jobs()  # no index for a part that did not finish
    writer.executor.shutdown(wait=True)  # an upload landing after the delete would stay
    try:
        remote.delete_prefix(folder)
    except Exception:
        pass  # the driver deletes it before publishing (layout.strays)


def _convert_part(task: PartTask, t0: float, c0: float, exact: bool,
                  discard: str | None) -> PartResult:
    from streaming.base.format.mds.writer import MDSWriter
    cfg, part, split = task.cfg, task.part, task.split
    remote = open_remote(cfg.remote)
    base = f'{split}/{part}'
    attempt = new_attempt(task.attempt_number)
    folder = f'{base}/{attempt}'
    if remote.local_root is not None:
        out: Any = os.path.join(remote.local_root, split, part, attempt)
    else:
        local = os.path.join(task.tmp_root, f'{part}-{attempt}')
        out = (local, remote.join(folder))
    columns = {'tokens': 'ndarray:int32'} if cfg.format == 'tokens' else {'text': 'str'}
    writer_class = MDSWriter if cfg.format == 'tokens' else _text_writer_class()
    writer = writer_class(columns=columns, out=out, compression=cfg.compression,
                          hashes=sorted(cfg.hashes), size_limit=cfg.size_limit,
                          max_workers=task.upload_threads, exist_ok=True)
    skipped: dict[str, int] = {UNREADABLE_FILE: 1} if discard else {}
    problems: list[str] = [discard] if discard else []
    stats = {'documents': 0, 'input_bytes': 0, 'samples': 0}
    limit = task.limit
    pending_docs = pending_bytes = 0

    def texts():
        nonlocal pending_docs, pending_bytes
        if limit == 0 or discard:
            return
        for text, nbytes in iter_records(task.url, cfg.on_bad_record == 'skip', skipped,
                                         exact=exact, problems=problems):
            stats['documents'] += 1
            stats['input_bytes'] += nbytes
            if stats['documents'] == 1:
                stats['first_record_at'] = time.monotonic()
            pending_docs += 1
            pending_bytes += nbytes
            if pending_docs >= 256:
                _count(pending_docs, pending_bytes)
                pending_docs = pending_bytes = 0
            yield text
            if limit is not None and stats['documents'] >= limit:
                return

    try:
        if cfg.format == 'tokens':
            samples = _tokens_writer_samples(cfg, texts())
        else:
            samples = ({'text': t} for t in texts())
        for sample in samples:
            writer.write(sample)
            stats['samples'] += 1
        writer.finish()  # waits for every upload; raises if one failed
    except BaseException:
        _discard(remote, writer, folder)
        raise
    finally:
        if remote.local_root is None:
            shutil.rmtree(out[0], ignore_errors=True)
    _count(pending_docs, pending_bytes)

    try:
        return _commit(task, remote, base, attempt, stats, skipped, problems, t0, c0)
    except BaseException:
        try:
            remote.delete_prefix(folder)
        except Exception:
            pass
        raise


def _commit(task: PartTask, remote, base: str, attempt: str, stats: dict, skipped: dict,
            problems: list, t0: float, c0: float) -> PartResult:
    """Checks the attempt's part in the remote and commits it by creating the manifest."""
    folder = f'{base}/{attempt}'
    # The input must be what the driver planned with: a file changed under the run would
    # make a part that is neither the old input nor the new one.
    identity = input_identity(task.url)
    if not same_input(task.identity, identity):
        raise InputChanged(f'{task.url} changed while it was being converted '
                           f'({describe_change(task.identity, identity)}); run the same '
                           f'command again to convert it as it is now')

    # Confirm the part in the remote before declaring it complete.
    index_bytes = remote.read(f'{folder}/{INDEX}')
    index = json.loads(index_bytes)
    listing = remote.list(folder + '/')
    shards = shard_files(index)
    for name, size in shards.items():
        if listing.get(f'{folder}/{name}') != size:
            raise RuntimeError(f'{remote.join(folder, name)}: expected {size} bytes in the '
                               f'remote, found {listing.get(f"{folder}/{name}")}')
    n_samples = sum(s['samples'] for s in index['shards'])
    if n_samples != stats['samples']:
        raise RuntimeError(f'{remote.join(folder, INDEX)} counts {n_samples} samples, '
                           f'wrote {stats["samples"]}')
    seconds = time.perf_counter() - t0
    manifest = {
        'version': MANIFEST_VERSION, 'part': task.part, 'input': task.url,
        'digest': task.digest, 'attempt': attempt,
        'input_identity': task.identity,  # as planned: the next run compares with it
        'documents': stats['documents'], 'samples': stats['samples'],
        'input_bytes': stats['input_bytes'], 'skipped': skipped, 'problems': problems,
        'index_bytes': len(index_bytes), 'index_sha256': sha256(index_bytes), 'shards': shards,
        'seconds': round(seconds, 3),
    }
    committed = remote.create(f'{base}/{MANIFEST}', json.dumps(manifest, indent=1).encode())
    if not committed:
        theirs = json.loads(remote.read(f'{base}/{MANIFEST}'))
        if theirs.get('attempt') != attempt:  # (equal: our own create, retried by the backend)
            if theirs.get('digest') != task.digest:
                raise RuntimeError(f'{remote.join(base, MANIFEST)} was committed by another '
                                   f'run (another input or settings) during this one')
            try:
                remote.delete_prefix(folder)  # another attempt at this part committed first
            except Exception:
                pass  # the driver deletes it before publishing (layout.strays)
            manifest = theirs
    return PartResult(manifest, pid=os.getpid(), cpu_seconds=time.process_time() - c0,
                      committed=manifest['attempt'] == attempt,
                      first_record_at=stats.get('first_record_at'), done_at=time.monotonic(),
                      encoder=_W['encoder'].describe() if task.cfg.format == 'tokens' else None)
