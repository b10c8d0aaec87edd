"""The identity of an input file: what a re-run compares to tell whether an input changed
since its part was converted (records.py finds the inputs and reads their records).

- Local gzip files (C4): the size and the gzip trailer, i.e. the CRC32 and the length
  (mod 2^32) of the uncompressed data, which gzip itself writes as the file's last 8 bytes.
  Cost: one stat and one 8-byte read, ~50 us per file here (0.05 s for C4's 1024 files),
  where hashing whole files (xxh3-64: ~0.8 s/GiB on one core here, from the page cache;
  sha256 ~2.5 s/GiB) would put ~4 min (C4: 305 GB) before any work of every resume, plus
  the disk reads. Any rewrite of the text changes the CRC32 (or the length) but with
  probability 2^-32; appending records (a new gzip member, or a recompressed file) changes
  the size and the trailer. It is the content's identity, not the file's: a copy
  (cp, a re-download) is not redone, so the modification time is left out.
  Not seen: an earlier member of a multi-member gzip rewritten to the same compressed size.
- Other local files (no trailer to read): the size and xxh3-64 of the whole file.
- Remote files (hf://, s3://, https://): fsspec's info(): the size and the store's content
  tags (ETag, the Hub's blob id and LFS sha256, MD5), or its modification time if it has
  no content tag.
"""
from __future__ import annotations

import os

from data_prep.errors import first_line
from data_prep.pipeline.records import InputError, is_local

_CONTENT_TAGS = ('ETag', 'etag', 'blob_id', 'Content-MD5', 'md5Hash', 'md5', 'VersionId')
_TIME_TAGS = ('LastModified', 'last_modified', 'mtime', 'updated', 'Last-Modified')


def _local_identity(path: str) -> dict:
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(2)
        if head == b'\x1f\x8b' and size >= 18:  # gzip: header (10 bytes) + trailer (8)
            f.seek(-8, os.SEEK_END)
            trailer = f.read(8)
            return {'size': size, 'gzip_crc32': trailer[:4][::-1].hex(),
                    'gzip_isize': int.from_bytes(trailer[4:], 'little')}
        import xxhash
        h = xxhash.xxh3_64(head)
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
        return {'size': size, 'xxh3_64': h.hexdigest()}


def _remote_identity(info: dict) -> dict:
    out: dict = {'size': info.get('size')}
    for key in _CONTENT_TAGS:
        if info.get(key):
            out[key.lower()] = str(info[key]).strip('"')
    lfs = info.get('lfs')
    if isinstance(lfs, dict) and lfs.get('sha256'):
        out['lfs_sha256'] = lfs['sha256']
    if len(out) == 1:  # no content tag: the modification time is the best there is
        for key in _TIME_TAGS:
            if info.get(key):
                out['modified'] = str(info[key])
                break
    return out


def input_identity(url: str) -> dict:
    """The identity of one input file (see above); InputError, one line, if it cannot be
    looked at."""
    try:
        return _identity(url)
    except Exception as exc:
        raise InputError(f'cannot look at input {url}: {first_line(exc)}') from None


def _identity(url: str) -> dict:
    if is_local(url):
        return _local_identity(url[len('file://'):] if url.startswith('file://') else url)
    import fsspec
    fs, path = fsspec.core.url_to_fs(url)
    return _remote_identity(fs.info(path))


def input_identities(urls: list[str]) -> dict[str, dict]:
    """url -> identity for every input. Remote files are looked up with one listing per
    folder where its entries carry sizes (a Hub dataset's 1024 files: one request, not 1024),
    else one info() each."""
    out: dict[str, dict] = {}
    folders: dict[str, list[str]] = {}
    for url in urls:
        if is_local(url):
            out[url] = input_identity(url)
        else:
            folders.setdefault(url.rsplit('/', 1)[0], []).append(url)
    for folder, members in folders.items():
        listed = _listing(folder)
        for url in members:
            info = listed.get(url.rsplit('/', 1)[1])
            out[url] = (_remote_identity(info) if info and info.get('size') is not None
                        else input_identity(url))
    return out


def _listing(folder: str) -> dict[str, dict]:
    """basename -> fsspec info of every entry of a remote folder; {} if it cannot be listed."""
    try:
        import fsspec
        fs, path = fsspec.core.url_to_fs(folder)
        return {i['name'].rstrip('/').rsplit('/', 1)[-1]: i for i in fs.ls(path, detail=True)}
    except Exception:
        return {}


def same_input(planned: dict, now: dict) -> bool:
    """Whether an identity taken now (one info() call) matches the one planned with (which
    may come from a folder listing, with other fields): every field both have is equal."""
    common = planned.keys() & now.keys()
    return bool(common) and all(planned[k] == now[k] for k in common)


def describe_change(old: dict | None, new: dict) -> str:
    """'size 1234 -> 1300, gzip_crc32 ... -> ...': what differs between two identities."""
    if not old:
        return 'not recorded'
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    return ', '.join(f'{k} {old.get(k)} -> {new.get(k)}' for k in keys)
