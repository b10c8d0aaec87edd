"""What a conversion will cost, said before it starts: the input's bytes, CPU-hours and wall
time on this run's workers, from per-core rates measured by `make bench-convert`.

Printed by the driver (convert.py) before a run into a real bucket (oci:// or s3:// not on
this machine's loopback: the local store and test servers are stand-ins), and by
`--estimate-only` for any remote. The rates are one worker's MB of input JSON per CPU-second,
whole worker (read, parse, tokenize, concatenate, write, upload), as docs/benchmarks.md
records them; a part is one input file, so the wall time is also at least the largest file's.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

# MB of input JSON per CPU-second of one worker. Source: docs/benchmarks.md, "make
# bench-convert" and "Tokens: the recipes' format", on the 2-core x86_64 development machine
# (no GPU, shared): text 2026-11-26 at 862cae7 (row (a)); tokens 2026-12-06 (rows (t0): the
# pool's workers, tiktoken; (t1): one worker, tokenizers), with the Qwen2.5-like tokenizer of
# `python -m data_prep.tokenizer --like qwen2.5`, 2048-token samples, zstd.
MB_PER_CPU_S = {
    'text': 44.1,
    'tokens/tiktoken': 9.12,     # (an earlier run of the same code: 12.4; this machine is shared)
    'tokens/tokenizers': 2.17,
}
RATES_MEASURED = '2026-12-06, docs/benchmarks.md'
JSON_PER_GZ = 897.0 / 305.0  # C4 en: 897 GB of JSON lines, 305 GB as json.gz
LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def json_bytes(size: int, url: str, identity: dict | None = None) -> int:
    """An input file's bytes of JSON: a local gzip's own length field (ISIZE, the length mod
    2**32: right below 4 GiB), else its stored size, times C4's ratio if it is gzipped."""
    isize = (identity or {}).get('gzip_isize')
    if isize is not None and isize >= size:
        return isize
    return int(size * JSON_PER_GZ) if url.endswith('.gz') else size


def rate_key(fmt: str, encoder: str | None) -> str:
    return 'text' if fmt == 'text' else f'tokens/{encoder or "tokenizers"}'


def estimate(files: list[tuple[str, int, dict | None]], fmt: str, encoder: str | None,
             workers: int) -> dict:
    """files: (url, stored size, identity) of the parts to convert. The figures of the line."""
    sizes = [json_bytes(size, url, ident) for url, size, ident in files]
    rate = MB_PER_CPU_S[rate_key(fmt, encoder)]
    cpu_s = sum(sizes) / 1e6 / rate
    wall_s = max(cpu_s / max(workers, 1), (max(sizes, default=0) / 1e6 / rate))
    return {'files': len(files), 'stored_bytes': sum(s for _, s, _ in files),
            'json_bytes': sum(sizes), 'format': fmt, 'encoder': encoder,
            'mb_per_cpu_s': rate, 'cpu_hours': cpu_s / 3600, 'workers': workers,
            'wall_hours': wall_s / 3600}


def _duration(hours: float) -> str:
    if hours >= 1:
        return f'{hours:,.1f} h'
    return f'{hours * 60:.1f} min' if hours * 60 >= 1 else f'{hours * 3600:.0f} s'


def _size(n: float) -> str:
    return f'{n / 1e9:,.1f} GB' if n >= 1e9 else f'{n / 1e6:,.1f} MB'


def estimate_line(e: dict) -> str:
    """One line: input bytes, format, projected CPU-hours and wall time, the rate's source."""
    what = 'text' if e['format'] == 'text' else \
        f'tokens with {e["encoder"] or "tokenizers"} (rate of a Qwen2.5-like tokenizer)'
    return (f'estimate: {e["files"]:,} files, {_size(e["stored_bytes"])} as stored '
            f'(~{_size(e["json_bytes"])} of JSON), {what}: ~{e["cpu_hours"]:,.2f} CPU-hours, '
            f'~{_duration(e["wall_hours"])} on {e["workers"]} workers, at '
            f'{e["mb_per_cpu_s"]:g} MB of JSON per CPU-second per worker ({RATES_MEASURED})')


def is_real_bucket(remote: str, env: dict | None = None) -> bool:
    """oci:// or s3:// whose endpoint is not this machine's loopback (the local store, moto)."""
    env = os.environ if env is None else env
    scheme = urlparse(remote).scheme
    if scheme not in ('oci', 's3'):
        return False
    endpoint = env.get('OCI_OBJECT_STORAGE_ENDPOINT' if scheme == 'oci' else 'S3_ENDPOINT_URL')
    return not endpoint or urlparse(endpoint).hostname not in LOOPBACK
