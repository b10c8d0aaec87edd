"""`python -m data_prep.convert`: a Hugging Face text dataset (hub or local json.gz files) into
MDS shards in a bucket, parallel, resumable, verified before it is published.

    python -m data_prep.convert --data-files 'build/c4_sample/c4-train.*.json.gz' \
        --remote oci://bucket@namespace/c4_zstd --compression zstd

On more than one machine, Apache Spark runs the parts (one Spark task each; OCI Data Flow or any
Spark 3.5 cluster; docs/converting.md, "More than one machine"):

    python -m data_prep.convert ... --engine spark [--spark-master spark://host:7077]
    spark-submit data_prep/convert_spark.py ...     (the same flags; --engine spark implied)

The command line over data_prep.pipeline.convert (what it does and guarantees is there).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from data_prep.env import EnvError, env_value
from data_prep.fastexit import exit_now
from data_prep.pipeline.convert import ConvertConfig, ConvertError, convert
from data_prep.pipeline.records import (
    EMPTY_FILE,
    UNREADABLE_FILE,
    BadRecordError,
    InputError,
    ReadError,
)

LIST_MAX = 20  # parts redone / removed and files skipped named in the summary, then a count


def _listed(title: str, items: list[str]) -> list[str]:
    out = [f'  {title:<19}{item}' if i == 0 else f'  {"":<19}{item}'
           for i, item in enumerate(items[:LIST_MAX])]
    if len(items) > LIST_MAX:
        out.append(f'  {"":<19}... and {len(items) - LIST_MAX:,} more (see --json)')
    return out


def format_summary(s: dict) -> str:
    skipped = {k: v for k, v in s['skipped'].items() if v}
    skipped_txt = (', '.join(f'{k} {v:,}' for k, v in skipped.items()) if skipped else 'none')
    lines = [
        f'convert {s["format"]}/{s["compression"]} -> {s["dataset"]}',
        f'  parts              {s["parts"]} ({s["parts_converted"]} converted now, '
        f'{s["parts_already_complete"]} already complete)',
        f'  documents read     {s["documents"]:,}',
        f'  samples written    {s["samples"]:,}',
        f'  records skipped    {skipped_txt}',
        f'  in the remote      {s["bytes"]:,} bytes in {s["objects"]:,} objects '
        f'(this run wrote {s["run_bytes_written"]:,} bytes in {s["run_objects_written"]:,})',
    ]
    if s.get('encoder'):
        lines.append(f'  encoder            {s["encoder"]}')
    lines += [
        f'  seconds            {s["seconds"]:.2f} (+ {s.get("startup_seconds", 0):.1f} s starting '
        f'up: checks, imports)',
        f'  input              {s["run_input_bytes"] / 1e6:,.1f} MB of JSON this run, '
        f'{s["mb_per_s"]:.1f} MB/s with {s["workers"]} '
        f'{"Spark task slots" if s.get("engine") == "spark" else "workers"}',
    ]
    # (.get: summaries kept from before these keys, e.g. the bench's cache, still print)
    lines += _listed('parts redone', [f'{p}: {why}'
                                      for p, why in s.get('parts_redone', {}).items()])
    lines += _listed('parts removed', [f'{p}: its input file is gone'
                                       for p in s.get('parts_removed', [])])
    lines += _listed('files skipped', s.get('files_skipped', []))
    if s.get('stray_objects_removed'):
        lines.append(f'  removed            {s["stray_objects_removed"]:,} objects of attempts '
                     f'that did not commit (retried, lost or speculative tasks)')
    lines.append(f'  published          {s["index"]}')
    return '\n'.join(lines)


def build_parser(prog: str = 'python -m data_prep.convert',
                 engine: str = 'pool') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
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
    out.add_argument('--format', choices=['text', 'tokens'],
                     help='text: {"text": str}; tokens: concatenated token samples as '
                     '"tokens: ndarray:int32" like llm-foundry convert_dataset_hf (default '
                     'tokens with --tokenizer or --concat-tokens, else text)')
    out.add_argument('--tokenizer', help='tokenizer name or directory for --format tokens '
                     '(implies it)')
    out.add_argument('--concat-tokens', type=int,
                     help='tokens per sample for --format tokens (implies it; default 2048)')
    out.add_argument('--encoder', default='auto', choices=['auto', 'tiktoken', 'tokenizers'],
                     help='tokens: auto (default): tiktoken (several times faster) where it '
                     'gives the same ids as the tokenizer, checked when loading it, else '
                     'Hugging Face tokenizers, saying why; tiktoken: stop if it cannot; '
                     'tokenizers: always Hugging Face')
    out.add_argument('--bos-text', default='', help='text put before each document (tokens)')
    out.add_argument('--eos-text', default=None,
                     help="text put after each document (tokens; default the tokenizer's eos)")
    out.add_argument('--replace', action='store_true',
                     help='allow deleting parts of a dataset in --remote that was converted '
                     'from other inputs (without it such a run stops and deletes nothing)')
    out.add_argument('--size-limit', default=str(1 << 26),
                     help='shard size limit before compression, bytes or e.g. 64mb '
                     '(default 67108864, streaming\'s own)')
    out.add_argument('--hashes', default='xxh64',
                     help='hashes recorded per shard in the index, comma-separated '
                     '(default xxh64, fast; e.g. sha1,xxh64; "" for none)')
    run = p.add_argument_group('run')
    run.add_argument('--engine', default=engine, choices=['pool', 'spark'],
                     help='pool: worker processes on this machine; spark: one Spark task per '
                     'input file, on the active SparkSession or one started from --spark-master '
                     f'(several machines: OCI Data Flow, any Spark 3.5 cluster) (default {engine})')
    run.add_argument('--spark-master', default=None,
                     help="--engine spark: the Spark master, e.g. local[4] or spark://host:7077 "
                     "(default: spark-submit's, else local[*])")
    run.add_argument('--workers', type=int, default=0,
                     help=f'conversion processes (pool; default: the cores, {os.cpu_count()})')
    run.add_argument('--upload-workers', type=int, default=32,
                     help='upload threads per machine, shared by its workers or Spark tasks '
                     '(default 32)')
    run.add_argument('--max-docs', type=int, default=None,
                     help='convert at most N documents, spread evenly over the input files')
    run.add_argument('--on-bad-record', default='error', choices=['error', 'skip'],
                     help='bad JSON, invalid UTF-8, missing/non-string/empty text, an '
                     'unreadable or empty input file: stop with the file and line (error, '
                     'default) or skip and count each reason (skip; a truncated file keeps '
                     'its lines before the cut)')
    # Gone: the split of files between machines by rank. Parsed only to say so in one line.
    run.add_argument('--num-nodes', help=argparse.SUPPRESS)
    run.add_argument('--node-rank', help=argparse.SUPPRESS)
    run.add_argument('--tmp-dir', help='local staging for shards before upload '
                     '(default the system temp dir)')
    run.add_argument('--estimate-only', action='store_true',
                     help='print what the conversion would cost (input bytes, CPU-hours, wall '
                     'time on these workers, from measured per-core rates) and stop; a run '
                     'into an oci:// or s3:// bucket prints the same line before it starts')
    run.add_argument('--no-progress', action='store_true', help='no progress bar')
    run.add_argument('--json', action='store_true', help='print the summary as JSON')
    return p


MULTI_NODE_GONE = ('converting on several machines is `--engine spark` now (one Spark task '
                   'per input file, retried and verified; docs/converting.md); '
                   '{what} is no longer read')


def main(argv: list[str] | None = None, prog: str = 'python -m data_prep.convert',
         engine: str = 'pool') -> int:
    parser = build_parser(prog, engine)
    args = parser.parse_args(argv)
    if args.num_nodes is not None or args.node_rank is not None:
        print('error: ' + MULTI_NODE_GONE.format(what='--num-nodes/--node-rank'),
              file=sys.stderr)
        return 2
    try:
        world = env_value('WORLD_SIZE', 1, int)
    except EnvError:
        world = 2  # set, and not a number: someone meant something by it
    if world != 1 and args.engine == 'pool':
        print('error: ' + MULTI_NODE_GONE.format(what=f'WORLD_SIZE={os.environ["WORLD_SIZE"]}')
              + ' (unset it to convert on this machine)', file=sys.stderr)
        return 2
    if bool(args.dataset) == bool(args.data_files):
        parser.error('give exactly one of --dataset or --data-files')
    token_flags = [f for f, v in (('--tokenizer', args.tokenizer),
                                  ('--concat-tokens', args.concat_tokens)) if v is not None]
    if token_flags and args.format == 'text':
        verb = 'is' if len(token_flags) == 1 else 'are'
        print(f'error: {" and ".join(token_flags)} {verb} for --format tokens, and --format text '
              f'was given: drop {"it" if verb == "is" else "them"} to write text, or use '
              f'--format tokens', file=sys.stderr)
        return 2
    if args.format is None:
        args.format = 'tokens' if token_flags else 'text'
        if token_flags:  # one line, so that nobody gets text where they asked for tokens
            print(f'note: {" and ".join(token_flags)} given: writing --format tokens',
                  file=sys.stderr)
    size_limit: int | str = int(args.size_limit) if args.size_limit.isdigit() else args.size_limit
    cfg = ConvertConfig(
        remote=args.remote, data_files=args.data_files, dataset=args.dataset, subset=args.subset,
        split=args.split, out_split=args.out_split, compression=args.compression,
        format=args.format, tokenizer=args.tokenizer,
        concat_tokens=2048 if args.concat_tokens is None else args.concat_tokens,
        bos_text=args.bos_text, eos_text=args.eos_text, encoder=args.encoder,
        workers=args.workers,
        upload_workers=args.upload_workers, max_docs=args.max_docs, size_limit=size_limit,
        hashes=[h for h in args.hashes.split(',') if h], on_bad_record=args.on_bad_record,
        engine=args.engine, spark_master=args.spark_master, tmp_dir=args.tmp_dir,
        progress=not args.no_progress, replace=args.replace, estimate_only=args.estimate_only)
    logging.getLogger('streaming').setLevel(logging.ERROR)
    try:
        summary = convert(cfg)
    except BadRecordError as exc:
        if exc.reason == UNREADABLE_FILE:
            what = ('replace the file, or re-run with --on-bad-record skip to leave it out '
                    '(a truncated file keeps its lines before the cut) and count it')
        elif exc.reason == EMPTY_FILE:
            what = ('remove it from the input, or re-run with --on-bad-record skip to count it '
                    'as skipped')
        else:
            what = ('fix the input or re-run with --on-bad-record skip to skip and count such '
                    'records')
            exc = f'bad record at {exc}'
        print(f'error: {exc}. Nothing was published; {what}.', file=sys.stderr)
        return 1
    except (ConvertError, InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except ReadError as exc:  # a file that could not be read to its end, named
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
    if args.estimate_only:
        print(json.dumps(summary['estimate'], indent=1) if args.json else
              summary['estimate_line'])
        return 0
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == '__main__':
    exit_now(main())
