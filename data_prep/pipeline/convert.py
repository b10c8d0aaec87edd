"""Parallel, resumable, verified conversion of a Hugging Face text dataset into MDS in a bucket
(the driver; the command is data_prep/convert.py, one part's work is part.py, the layout
written is layout.py's).

How it works:
- Parallel: every input file is one part, converted by an engine: on one machine the pool
  (pool.py: `--workers` processes take parts from a queue), on several Apache Spark (spark.py:
  one Spark task per part). Each part has its own MDSWriter, whose thread pool uploads
  finished shards while the worker goes on encoding the next one.
- Exactly once: every attempt at a part writes into its own attempt folder and commits by
  creating the part's manifest with the remote's atomic create-if-absent (layout.py, part.py).
  A retried, speculative or lost attempt's objects are never named by a manifest, and the
  driver deletes them before publishing.
- One run at a time per dataset: the run holds a lease object in the remote (lease.py) from
  before it lists the remote until it has published; a second run stops in one line naming
  the first. A lease left by a killed run is taken over (its process gone, or no heartbeat).
- Resumable: a part counts as done only when its manifest is there, was written for the same
  settings and the same input (path, and identity: size and gzip CRC32 for local files, the
  store's ETag or hash for remote ones; identity.py), and every shard it names is
  in the remote with its recorded size. A re-run skips such parts, deletes (before any task
  starts) and redoes all others, and removes the parts of input files that are gone; the
  summary names the parts redone (and why) and removed. But a part converted from none of
  this run's inputs (neither by path nor by content: another dataset) is deleted only with
  `replace` (--replace): without it the run stops, deleting nothing, and says how many parts
  and samples it would delete (foreign_parts). Pool workers die with their parent
  (PR_SET_PDEATHSIG), so after a kill -9 no orphan keeps writing into a part being redone.
- Nothing a published root index names is deleted while it is published: the root index is
  removed first (unpublished) whenever a part is to be redone or removed. A dataset of 0
  samples is never published.
- Each run stages shards for a bucket in a folder of its own (removed at the end, also on
  failure; a killed run's folder is removed by the next run into the same remote).
- Verified: before the root index is written, every part's index.json is read back, checked
  against its manifest, and every shard it names is checked in one listing of the remote. The
  part indexes are merged (as streaming's `merge_index` does, with our two-level part
  folders) and the root index is then written in one atomic write (os.replace locally, a
  single PUT in a bucket). A reader therefore never sees a partial dataset; if any part must
  be redone, the root index is removed first.
- Described: just before the root index, SPLIT/dataset.json records what the split is (format,
  tokenizer and its fingerprint, concatenation, compression, source, counts, converter
  version; record.py), so no index is published without it; train.py checks a recipe
  against it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from data_prep.errors import first_line
from data_prep.pipeline.estimate import estimate, estimate_line, is_real_bucket
from data_prep.pipeline.identity import describe_change, input_identities
from data_prep.pipeline.layout import (
    INDEX,
    MANIFEST,
    part_folder,
    part_name,
    prefixed_index,
    sha256,
    shard_files,
    strays,
)
from data_prep.pipeline.lease import LOCK, Lease, LeaseError
from data_prep.pipeline.record import (
    concat_facts,
    new_record,
    tokenizer_facts,
    with_counts,
    write_record,
)
from data_prep.pipeline.records import REASONS, InputFile, resolve_inputs
from data_prep.pipeline.task import ConvertConfig, PartResult, PartTask
from data_prep.storage import Remote, RemoteError, list_checked, open_remote
from data_prep.streaming_ext.writer import defer_package_inits


class ConvertError(RuntimeError):
    """A problem the user can fix, said in one line (bad option, bucket, credentials...)."""


# --------------------------------------------------------------------------- remote helpers

def check_remote(remote: Remote, prefix: str) -> dict[str, int]:
    """Lists `prefix`; a missing bucket, credentials or endpoint is one ConvertError line."""
    try:
        return list_checked(remote, prefix)
    except RemoteError as exc:
        raise ConvertError(str(exc)) from None



def part_problem(remote: Remote, split: str, part: str, listing: dict[str, int],
                 digest: str, identity: dict, deep: bool = False) -> tuple[dict | None, str]:
    """(manifest, '') if the part is complete and verified, else (None, why not).

    Checks the manifest (same settings digest, same input identity), the part index's size,
    and every shard with its size in `listing`. With `deep`, also reads the part index back
    and checks that its sha256 and the shards it names match the manifest (done before
    publishing).
    """
    if f'{split}/{part}/{MANIFEST}' not in listing:
        return None, 'no manifest'
    try:
        manifest = json.loads(remote.read(f'{split}/{part}/{MANIFEST}'))
    except Exception as exc:
        return None, f'unreadable manifest: {exc}'
    base = f'{split}/{part_folder(part, manifest)}/'
    if manifest.get('digest') != digest:
        return None, 'written with other settings or from another input path'
    if 'input_identity' not in manifest:
        return None, 'its manifest does not record the input identity (older version)'
    if manifest['input_identity'] != identity:
        return None, f'input changed ({describe_change(manifest["input_identity"], identity)})'
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
        if sha256(data) != manifest.get('index_sha256'):
            return None, 'part index changed since its manifest was written'
        if shard_files(json.loads(data)) != manifest['shards']:
            return None, 'part index and manifest name different shards'
    return manifest, ''


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
    if cfg.engine not in ('pool', 'spark'):
        raise ConvertError(f'--engine must be pool or spark, not {cfg.engine!r}')
    if cfg.max_docs is not None and cfg.max_docs < 0:
        raise ConvertError('--max-docs must be >= 0')
    if cfg.format == 'text' and cfg.tokenizer:  # never silently text where tokens were meant
        raise ConvertError(f'a tokenizer ({cfg.tokenizer}) is for --format tokens, and the '
                           f'format is text: drop it to write text, or use --format tokens')
    if cfg.format == 'tokens':
        from data_prep.pipeline.encoder import ENCODERS
        if cfg.encoder not in ENCODERS:
            raise ConvertError(f'--encoder must be one of {", ".join(ENCODERS)}, not '
                               f'{cfg.encoder!r}')
        if not cfg.tokenizer:
            raise ConvertError('--format tokens needs --tokenizer')
        if cfg.concat_tokens < 1:
            raise ConvertError('--concat-tokens must be >= 1')


def _check_tokenizer(cfg: ConvertConfig):
    """Loads the tokenizer and its encoder here, once (forked pool workers inherit both):
    one ConvertError line if it cannot be loaded, or if --encoder tiktoken cannot give the
    tokenizer's ids; a note when auto falls back to tokenizers. Returns (the transformers
    tokenizer, its Encoder)."""
    from data_prep.pipeline.encoder import Inexact
    from data_prep.pipeline.part import tokens_encoder
    try:
        tok, encoder = tokens_encoder(cfg)
    except Inexact as exc:
        raise ConvertError(f'--encoder tiktoken: it cannot give the same ids as tokenizer '
                           f'{cfg.tokenizer!r}: {exc}; use --encoder auto or tokenizers') from None
    except Exception as exc:
        raise ConvertError(f'cannot load tokenizer {cfg.tokenizer!r}: '
                           f'{first_line(exc, with_type=False)}') from None
    if encoder.name != 'tiktoken' and cfg.encoder == 'auto':
        print(f'note: tokenizing with tokenizers, not the faster tiktoken: {encoder.why}',
              file=sys.stderr)
    return tok, encoder


def _record(cfg: ConvertConfig, split: str, tok) -> dict:
    """What the published split will record of itself (record.py), before its counts."""
    if cfg.format != 'tokens':
        return new_record(cfg, split, None, None)
    return new_record(cfg, split, tokenizer_facts(tok, cfg.tokenizer),
                      concat_facts(tok, cfg.concat_tokens, cfg.bos_text, cfg.eos_text))


def publish(remote: Remote, split: str, manifests: dict[str, dict],
            existing: bool = False, record: dict | None = None) -> str:
    """Merges the verified part indexes into the root index, which is written last.

    `record` (record.new_record), with the counts filled in, is written first, beside the
    index (SPLIT/dataset.json), unless the one there already describes this dataset: an index
    is never published without its record, and a re-publish changes nothing.

    The merge is streaming's `merge_index` (a version-2 index of every part's shards, in part
    order, basenames prefixed with the part's folder, the same JSON), done here because
    merge_index prefixes only the index's parent folder, and our parts nest two levels
    (part-00003/a0-1f2e3d4c/)."""
    folders = [part_folder(part, manifests[part]) for part in sorted(manifests)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        indexes = list(pool.map(lambda f: json.loads(remote.read(f'{split}/{f}/{INDEX}')),
                                folders))
    data = json.dumps({'version': 2, 'shards': [shard for folder, index in zip(folders, indexes)
                                                for shard in prefixed_index(index, folder)]})
    data = data.encode()
    merged = json.loads(data)
    want = sum(m['samples'] for m in manifests.values())
    got = sum(s['samples'] for s in merged['shards'])
    if got != want:
        raise ConvertError(f'merged index counts {got} samples, the parts {want}; not published')
    if record is not None:
        write_record(remote, split, with_counts(record, manifests, merged))
    if existing:
        try:
            if remote.read(f'{split}/{INDEX}') == data:
                return remote.join(split, INDEX)  # already published, byte for byte
        except Exception:
            pass
    remote.write(f'{split}/{INDEX}', data)
    return remote.join(split, INDEX)


def parts_in(listing: dict[str, int], split: str) -> set[str]:
    """The part folders present under SPLIT/ in a listing."""
    base = f'{split}/'
    return {name[len(base):].split('/', 1)[0] for name in listing
            if name.startswith(base + 'part-') and '/' in name[len(base):]}


@dataclass
class Plan:
    parts: dict[str, PartTask]    # every part of the dataset, as it is to be converted
    todo: list[str]               # the parts to (re)do now
    done: dict[str, dict]         # part -> manifest, complete from an earlier run
    redone: dict[str, str]        # part -> why its earlier content is not kept
    removed: list[str]            # parts in the remote that no input file has any more
    foreign: dict[str, dict]      # part -> manifest of a part converted from none of the
                                  # inputs of this run, that redoing or removing would delete


def plan(cfg: ConvertConfig, remote: Remote, split: str, inputs: list[InputFile],
         listing: dict[str, int]) -> Plan:
    """What to do, from a listing taken while holding the lease."""
    identities = input_identities([inp.url for inp in inputs])
    limits = _limits(len(inputs), cfg.max_docs)
    parts = {part_name(inp.index): PartTask(cfg, part_name(inp.index), split, inp.url,
                                            limits[i], _part_digest(cfg, inp, limits[i]),
                                            identities[inp.url])
             for i, inp in enumerate(inputs)}
    present = parts_in(listing, split)
    out = Plan(parts, [], {}, {}, sorted(present - set(parts)), {})
    for part in sorted(parts):
        task = parts[part]
        manifest, why = part_problem(remote, split, part, listing, task.digest, task.identity)
        if manifest is not None:
            out.done[part] = manifest
            continue
        out.todo.append(part)
        if part in present:
            out.redone[part] = why
    out.foreign = foreign_parts(remote, split, listing, [*out.redone, *out.removed],
                                list(parts.values()))
    return out


def foreign_parts(remote: Remote, split: str, listing: dict[str, int], candidates: list[str],
                  tasks: list[PartTask]) -> dict[str, dict]:
    """The committed parts among `candidates` whose input is none of `tasks`' inputs, by path
    or by content (identity): a dataset converted from other inputs, not an earlier run over
    these (a changed input file keeps its path; a moved one, its content). part -> manifest."""
    urls = {t.url for t in tasks}
    identities = [t.identity for t in tasks]

    def manifest(part: str) -> dict | None:
        if f'{split}/{part}/{MANIFEST}' not in listing:
            return None  # never committed: what a failed attempt left
        try:
            return json.loads(remote.read(f'{split}/{part}/{MANIFEST}'))
        except Exception:
            return None  # unreadable: no dataset to keep (redone, as before)

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = dict(zip(candidates, pool.map(manifest, candidates)))
    return {part: m for part, m in sorted(found.items())
            if m is not None and m.get('input') not in urls
            and m.get('input_identity') not in identities}


def _staging(cfg: ConvertConfig, remote: Remote, split: str, run_id: str) -> str:
    """This run's own folder for shards on their way to a bucket. Folders of earlier runs
    into the same remote are removed: they were killed (this run holds the lease)."""
    base = os.path.join(cfg.tmp_dir or tempfile.gettempdir(), 'c4-convert')
    key = hashlib.sha256(remote.join(split).encode()).hexdigest()[:12]
    os.makedirs(base, exist_ok=True)
    for old in glob.glob(os.path.join(base, f'{key}-*')):
        shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f'{key}-{run_id}-', dir=base)


def convert(cfg: ConvertConfig) -> dict:
    """Runs the conversion; returns the summary dict (see `format_summary`).

    Raises ConvertError / InputError (one line for the user) or BadRecordError (file:line).
    """
    t0 = time.perf_counter()
    defer_package_inits()  # streaming's writer modules only, not its datasets: seconds less
    # Cheap checks first, so a wrong bucket or input says so in a second, not after imports.
    _validate(cfg)
    split = cfg.out_split or cfg.split
    # Spark first: on OCI Data Flow the run's credentials come with its session.
    engine = _engine(cfg) if cfg.engine == 'spark' else None
    try:
        remote = open_remote(cfg.remote)
    except RemoteError as exc:
        raise ConvertError(str(exc)) from None
    except Exception as exc:
        raise ConvertError(f'cannot open {cfg.remote}: {type(exc).__name__}: {exc}') from None
    check_remote(remote, f'{split}/{LOCK}')  # one small listing: bucket, credentials
    inputs = resolve_inputs(cfg.dataset, cfg.subset, cfg.split, cfg.data_files)
    engine = engine or _engine(cfg)
    lease = Lease(remote, split)
    try:
        lease.acquire()
    except LeaseError as exc:
        raise ConvertError(str(exc)) from None
    try:
        if lease.took_over:
            print(f'note: {lease.took_over}', file=sys.stderr)
        return _convert(cfg, remote, split, inputs, lease, engine, t0)
    except LeaseError as exc:
        raise ConvertError(str(exc)) from None
    finally:
        lease.release()


@dataclass
class Engine:
    """How the parts are run: `run(tasks, workers, progress) -> results` and its slots."""
    name: str
    run: Callable[[list[PartTask], int, bool], list[PartResult]]
    workers: int                  # parts converted at once (pool processes, Spark task slots)
    per_machine: int              # of those, on one machine (they share its upload threads)
    check: Callable[[Remote, str, Lease, str], None] = lambda remote, split, lease, inp: None


def _engine(cfg: ConvertConfig) -> Engine:
    if cfg.engine == 'spark':
        from data_prep.pipeline import spark
        try:
            session = spark.session(cfg.spark_master, cfg.tmp_dir)
        except spark.SparkError as exc:
            raise ConvertError(str(exc)) from None
        slots, per_executor = spark.slots(session)
        return Engine('spark', spark.run_spark, slots, per_executor,
                      lambda *args: _spark_check(spark, *args))
    from data_prep.pipeline.pool import run_pool
    workers = cfg.workers or os.cpu_count() or 1
    return Engine('pool', run_pool, workers, workers)


def _spark_check(spark, remote: Remote, split: str, lease: Lease, first_input: str) -> None:
    try:
        spark.check_executors(remote.join(split), LOCK, lease.run_id, first_input)
    except spark.SparkError as exc:
        raise ConvertError(str(exc)) from None


def _unpublish(remote: Remote, split: str, listing: dict[str, int], lease: Lease) -> None:
    """Removes the root index, before anything it names is deleted or rewritten."""
    if f'{split}/{INDEX}' in listing:
        lease.check()
        remote.delete(f'{split}/{INDEX}')
        del listing[f'{split}/{INDEX}']


def _delete(remote: Remote, prefixes: list[str], names: list[str] = ()) -> None:
    """Deletes folders and objects, 16 at a time (a re-run after a kill may redo hundreds of
    parts)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(remote.delete_prefix, prefixes))
        list(pool.map(remote.delete, names))


def _sweep(remote: Remote, split: str, listing: dict[str, int],
           manifests: dict[str, dict]) -> int:
    """Deletes what attempts that did not commit left under the parts: whole attempt folders,
    and loose objects. Returns how many objects were deleted."""
    folders, loose, count = set(), [], 0
    for part in sorted(manifests):
        for name in strays(listing, split, part, manifests[part]):
            rest = name[len(f'{split}/{part}/'):]
            if '/' in rest:
                folders.add(f'{split}/{part}/{rest.split("/", 1)[0]}')
            else:
                loose.append(name)
            del listing[name]
            count += 1
    _delete(remote, sorted(folders), loose)
    return count


def _convert(cfg: ConvertConfig, remote: Remote, split: str, inputs: list[InputFile],
             lease: Lease, engine: Engine, t0: float) -> dict:
    cfg.compression = _normalize_compression(cfg.compression)  # imports streaming (seconds)
    tok, encoder = _check_tokenizer(cfg) if cfg.format == 'tokens' else (None, None)
    import datasets  # noqa: F401  (here, once: forked workers inherit it)
    # Spark: an executor imports our code, reaches the remote (sees the lease), reads inputs
    engine.check(remote, split, lease, inputs[0].url)
    t_work = time.perf_counter()  # speeds are of the work, not of importing torch & co.

    listing = remote.list(f'{split}/')  # taken under the lease: no other run changes it now
    p = plan(cfg, remote, split, inputs, listing)
    workers = max(1, min(engine.workers, len(p.todo) or 1))
    est = estimate([(p.parts[part].url, p.parts[part].identity.get('size') or 0,
                     p.parts[part].identity) for part in p.todo],
                   cfg.format, encoder.name if encoder else None, workers)
    if cfg.estimate_only:  # before anything in the remote changes
        return {'estimate': est, 'estimate_line': estimate_line(est)}
    if is_real_bucket(cfg.remote):
        print(estimate_line(est), file=sys.stderr, flush=True)
    if p.foreign and not cfg.replace:
        raise ConvertError(_refusal(remote, split, p.foreign, f'{split}/{INDEX}' in listing))
    if p.todo or p.removed:
        _unpublish(remote, split, listing, lease)
    # Whatever earlier runs left of the parts to redo (a manifest among it would stop this
    # run's attempts from committing), and the parts whose input is gone.
    present = parts_in(listing, split)
    _delete(remote, [f'{split}/{part}' for part in p.todo + p.removed if part in present])

    upload_threads = max(1, -(-cfg.upload_workers // min(engine.per_machine, workers)))
    staging = (_staging(cfg, remote, split, lease.run_id)
               if p.todo and remote.local_root is None and engine.name == 'pool' else None)
    tasks = [replace(p.parts[part], tmp_root=staging, upload_threads=upload_threads)
             for part in p.todo]
    try:
        results = engine.run(tasks, workers, cfg.progress)
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)

    # Publish only if every part is complete and verified; first delete what attempts that
    # did not commit left under the parts (failed, lost or speculative ones).
    lease.check()
    listing = remote.list(f'{split}/')
    manifests = {}
    for part, task in p.parts.items():
        manifest, why = part_problem(remote, split, part, listing, task.digest, task.identity,
                                     deep=True)
        if manifest is None:
            raise ConvertError(f'part {part} failed verification after conversion: {why}')
        manifests[part] = manifest
    stray = _sweep(remote, split, listing, manifests)
    skipped = _skipped(manifests)
    if not sum(m['samples'] for m in manifests.values()):
        _unpublish(remote, split, listing, lease)  # (one an earlier version published)
        why = ', '.join(f'{k} {v}' for k, v in skipped.items() if v) or 'nothing skipped'
        raise ConvertError(
            f'{len(p.parts)} input file(s) gave 0 samples '
            f'({sum(m["documents"] for m in manifests.values())} documents; skipped: {why}): '
            f'a dataset with no samples is not published')
    lease.check()
    # (the record's tokenizer facts here, not before the pool forks: `tokenizers` warns of a
    # fork after it has encoded anything)
    index_url = publish(remote, split, manifests, existing=f'{split}/{INDEX}' in listing,
                        record=_record(cfg, split, tok))
    listing = remote.list(f'{split}/')
    listing.pop(f'{split}/{LOCK}', None)  # the lease is not part of the dataset
    return run_summary(cfg, remote, split, p, manifests, results, listing, engine=engine.name,
                       workers=workers, upload_threads=upload_threads, stray=stray,
                       index_url=index_url, lease=lease, t0=t0, t_work=t_work)


def _refusal(remote: Remote, split: str, foreign: dict[str, dict], published: bool) -> str:
    """The one line that refuses to delete a dataset converted from other inputs."""
    samples = sum(m.get('samples', 0) for m in foreign.values())
    first = foreign[min(foreign)].get('input', '?')
    what = 'a published dataset' if published else 'parts'
    return (f'{remote.join(split)} holds {what} converted from other inputs (e.g. {first}): '
            f'this run would delete {len(foreign):,} of its parts ({samples:,} samples). '
            f'Nothing was changed; to replace that dataset, run again with --replace')


def _skipped(manifests: dict[str, dict]) -> dict[str, int]:
    """Records skipped, per reason, over the parts."""
    skipped = {r: 0 for r in REASONS}
    for m in manifests.values():
        for reason, n in m['skipped'].items():
            skipped[reason] = skipped.get(reason, 0) + n
    return skipped


def run_summary(cfg: ConvertConfig, remote: Remote, split: str, p: Plan,
                manifests: dict[str, dict], results: list[PartResult],
                listing: dict[str, int], *, engine: str, workers: int, upload_threads: int,
                stray: int, index_url: str, lease: Lease, t0: float, t_work: float) -> dict:
    """The summary of a published run (data_prep.convert.format_summary prints it): the
    dataset as it is now (`manifests`, `listing`) and what this run did (`results`)."""
    per_worker: dict[int, list[float]] = {}
    for r in results:
        acc = per_worker.setdefault(r.pid, [0.0, 0.0, 0.0])
        acc[0] += r.input_bytes
        acc[1] += r.seconds
        acc[2] += r.cpu_seconds
    run_bytes = sum(r.input_bytes for r in results)
    end = time.perf_counter()
    seconds = end - t_work
    return {
        'remote': cfg.remote, 'split': split, 'dataset': remote.join(split),
        'published': True, 'index': index_url, 'engine': engine,
        'format': cfg.format, 'compression': cfg.compression or 'none', 'workers': workers,
        # tokens: the encoder(s) this run's parts used (encoder.py), e.g. 'tiktoken 0.14.0 (...)'
        'encoder': '; '.join(sorted({r.encoder for r in results if r.encoder})) or None,
        'upload_threads_per_worker': upload_threads,
        'parts': len(p.parts), 'parts_converted': len(results),
        'parts_already_complete': len(p.done),
        'parts_redone': p.redone, 'parts_removed': p.removed,
        'stray_objects_removed': stray,
        'files_skipped': [x for part in sorted(manifests)
                          for x in manifests[part].get('problems', [])],
        'lease': {'run_id': lease.run_id, 'took_over': lease.took_over},
        'documents': sum(m['documents'] for m in manifests.values()),
        'samples': sum(m['samples'] for m in manifests.values()),
        'input_bytes': sum(m['input_bytes'] for m in manifests.values()),
        'skipped': _skipped(manifests),
        'run_documents': sum(r.documents for r in results),
        'run_samples': sum(r.samples for r in results),
        'run_input_bytes': run_bytes,
        'run_bytes_written': sum(r.stored_bytes for r in results),
        'run_objects_written': sum(r.objects for r in results),
        'bytes': sum(listing.values()), 'objects': len(listing),
        'seconds': seconds, 'startup_seconds': t_work - t0, 'total_seconds': end - t0,
        'mb_per_s': run_bytes / 1e6 / seconds if seconds else 0.0,
        # Per worker: input MB per second of its wall time on parts, and per CPU-second
        # (the latter does not drop when other programs share the cores).
        'worker_mb_per_s': sorted(b / 1e6 / s for b, s, _ in per_worker.values() if s > 0),
        'worker_mb_per_cpu_s': sorted(b / 1e6 / c for b, _, c in per_worker.values() if c > 0),
        # time.monotonic() (one clock for all processes of the machine): when the first record
        # of this run was read, and when its last part was done (start-up and end costs)
        'first_record_at': min((r.first_record_at for r in results
                                if r.first_record_at is not None), default=None),
        'parts_done_at': max((r.done_at for r in results if r.done_at is not None),
                             default=None),
    }
