"""The local OCI store's storage: buckets, objects and multipart uploads as files on disk.

    <data>/buckets/<bucket>/<object name>          the bytes (object names map to paths)
    <data>/meta/<bucket>/<sha1(name)>.<inode>.json  metadata of the version in that inode
    <data>/meta/<bucket>/.lock                     writers of the bucket hold it (flock)
    <data>/uploads/<bucket>/<upload id>/           multipart parts until commit or abort
    <data>/tmp/                                    bodies being received

Versions: a new version is written to tmp/, its metadata is written under its inode number,
then it is renamed over the old one. A reader opens the file and reads the metadata of the
inode it holds, so size, MD5, ETag and headers always belong to the bytes it serves, and a
reader that opened the old version keeps reading it whole. Writers of a bucket (put, commit,
delete) take the bucket's lock, across threads and store processes sharing the data dir, so
conditional writes (If-Match, If-None-Match) check and replace in one step.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from local_services.shaped_http import CHUNK, RequestError, iso_time

NAMESPACE = 'local'
MAX_NAME_BYTES = 1024          # OCI's limit on an object name
MAX_USER_METADATA_BYTES = 2000  # OCI's limit on opc-meta-* keys and values together
LIST_FIELDS = ('name', 'size', 'etag', 'md5', 'timeCreated', 'timeModified', 'storageTier',
               'archivalState')
# Headers kept with an object as OCI keeps them: metadata key -> HTTP header.
CONTENT_HEADERS = {'contentType': 'Content-Type', 'contentEncoding': 'Content-Encoding',
                   'contentLanguage': 'Content-Language',
                   'contentDisposition': 'Content-Disposition', 'cacheControl': 'Cache-Control'}


class StoreError(RequestError):
    """An error of the store, answered with OCI's status and code."""


def _check_name(kind: str, name: str, segment_max: int = 255) -> None:
    """Refuse names that are not a plain relative path (escape, empty or dot segments), and
    names the file system cannot hold (a segment longer than its NAME_MAX)."""
    parts = name.split('/')
    if (not name or len(name.encode()) > MAX_NAME_BYTES or '\0' in name or name.startswith('/')
            or any(p in ('', '.', '..') for p in parts)):
        raise StoreError(400, 'InvalidParameter', f'{kind} name {name!r} is not allowed here')
    long = next((p for p in parts if len(p.encode()) > segment_max), None)
    if long:
        raise StoreError(400, 'InvalidParameter',
                         f'{kind} name segment {long[:40]!r}... is {len(long.encode())} bytes: '
                         f'this store keeps objects as files, and a path segment may have at '
                         f'most {segment_max} bytes')


def etag_matches(header: str, etag: str | None) -> bool:
    """Whether an If-Match / If-None-Match header names `etag` ('*': any existing object)."""
    tags = [t.strip().removeprefix('W/').strip('"') for t in header.split(',')]
    return etag is not None and ('*' in tags or etag in tags)


def check_write(current: dict | None, if_match: str | None, if_none_match: str | None) -> None:
    """The preconditions of a write (PUT, multipart commit, DELETE), as OCI answers them."""
    if if_none_match is not None:
        if if_none_match.strip() != '*':
            raise StoreError(400, 'InvalidParameter', "If-None-Match on a write must be '*' "
                             "(create only), as OCI takes it")
        if current is not None:
            raise StoreError(412, 'IfNoneMatchFailed', f'the object {current["name"]!r} '
                             f'already exists (If-None-Match: *)')
    if if_match is not None and (current is None or not etag_matches(if_match,
                                                                    current['etag'])):
        raise StoreError(412, 'NoEtagMatch', f'If-Match {if_match!r} does not match the '
                         f'current ETag of the object' + ('' if current else ' (there is none)'))


class Storage:
    """The bucket/object/multipart operations, on files under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        for sub in ('buckets', 'meta', 'uploads', 'tmp'):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # guards bucket create/delete
        try:
            self.segment_max = os.pathconf(self.root, 'PC_NAME_MAX')
        except (OSError, ValueError):
            self.segment_max = 255

    # paths ----------------------------------------------------------------
    def bucket_dir(self, bucket: str, must_exist: bool = True) -> Path:
        if not bucket or '/' in bucket or bucket.startswith('.') or len(bucket) > 256:
            raise StoreError(400, 'InvalidParameter', f'bucket name {bucket!r} is not allowed')
        path = self.root / 'buckets' / bucket
        if must_exist and not path.is_dir():
            raise StoreError(404, 'BucketNotFound', f'Either the bucket named {bucket!r} '
                             f'does not exist in the namespace {NAMESPACE!r} or you are not '
                             f'authorized to access it')
        return path

    def object_path(self, bucket: str, name: str) -> Path:
        _check_name('object', name, self.segment_max)
        base = self.bucket_dir(bucket)
        path = (base / name).resolve()
        if base.resolve() not in path.parents:  # symlinks or anything else that escapes
            raise StoreError(400, 'InvalidParameter', f'object name {name!r} is not allowed here')
        return path

    def _meta_file(self, bucket: str, name: str, ino: int | None) -> Path:
        """Metadata of the version in inode `ino`; None: the one file per name that stores
        before versioned metadata kept (still read, for data dirs they wrote)."""
        digest = hashlib.sha1(name.encode()).hexdigest()
        return self.root / 'meta' / bucket / (f'{digest}.json' if ino is None
                                              else f'{digest}.{ino}.json')

    def tmp_file(self):
        return tempfile.NamedTemporaryFile(dir=self.root / 'tmp', delete=False)

    @contextlib.contextmanager
    def _writer(self, bucket: str):
        """The bucket's write lock: one writer at a time, in this process and any other."""
        lock = self.root / 'meta' / bucket / '.lock'
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # buckets --------------------------------------------------------------
    def create_bucket(self, name: str, compartment: str = 'local') -> dict:
        path = self.bucket_dir(name, must_exist=False)
        with self.lock:
            if path.exists():
                raise StoreError(409, 'BucketAlreadyExists', f'bucket {name!r} already exists')
            path.mkdir(parents=True)
            (self.root / 'meta' / name).mkdir(parents=True, exist_ok=True)
            (self.root / 'meta' / name / '.compartment').write_text(compartment)
        return self.bucket_info(name)

    def bucket_info(self, name: str) -> dict:
        path = self.bucket_dir(name)
        st = path.stat()
        cfile = self.root / 'meta' / name / '.compartment'
        return {'namespace': NAMESPACE, 'name': name,
                'compartmentId': cfile.read_text() if cfile.exists() else 'local',
                'createdBy': 'local', 'timeCreated': iso_time(st.st_ctime),
                'etag': f'{int(st.st_ctime * 1e6):x}', 'storageTier': 'Standard',
                'publicAccessType': 'NoPublicAccess', 'metadata': {}}

    def list_buckets(self) -> list[dict]:
        return [self.bucket_info(p.name) for p in sorted((self.root / 'buckets').iterdir())
                if p.is_dir()]

    def delete_bucket(self, name: str) -> None:
        path = self.bucket_dir(name)
        if any(path.iterdir()):
            raise StoreError(409, 'BucketNotEmpty', f'bucket {name!r} is not empty')
        path.rmdir()
        shutil.rmtree(self.root / 'meta' / name, ignore_errors=True)

    # object versions --------------------------------------------------------
    def _version_meta(self, bucket: str, name: str, st: os.stat_result) -> dict | None:
        """The metadata written with the version in this inode, None if there is none."""
        try:
            return json.loads(self._meta_file(bucket, name, st.st_ino).read_text())
        except (OSError, ValueError):
            return None

    def _complete(self, bucket: str, name: str, st: os.stat_result, meta: dict | None) -> dict:
        if meta is None:  # a file put there by hand (or by a store before versioned metadata)
            try:
                meta = json.loads(self._meta_file(bucket, name, None).read_text())
            except (OSError, ValueError):
                meta = {'etag': f'{st.st_mtime_ns:x}'}
        # The size served is what is on disk; md5 is what was uploaded, so a file damaged at
        # rest is served as it is and the client can tell.
        meta.update(name=name, size=st.st_size)
        meta.setdefault('timeModified', st.st_mtime)
        return meta

    def current(self, bucket: str, path: Path, name: str) -> dict | None:
        """The metadata of the version at `path` now, None if there is none (writers hold
        the bucket's lock while they act on it)."""
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return self._complete(bucket, name, st, self._version_meta(bucket, name, st))

    def open_object(self, bucket: str, name: str):
        """(open file, metadata) of one version: the bytes, size and metadata all belong to
        the version this file holds, whatever writers do meanwhile. The caller closes it."""
        path = self.object_path(bucket, name)
        for _ in range(100):
            try:
                f = open(path, 'rb')
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                break
            st = os.fstat(f.fileno())
            meta = self._version_meta(bucket, name, st)
            if meta is None:
                try:
                    replaced = os.stat(path).st_ino != st.st_ino
                except OSError:
                    replaced = True
                if replaced:  # replaced or deleted while we looked: its metadata is gone
                    f.close()
                    continue
            return f, self._complete(bucket, name, st, meta)
        raise StoreError(404, 'ObjectNotFound', f'The object {name!r} was not found in the '
                         f'bucket {bucket!r}')

    def head_object(self, bucket: str, name: str) -> dict:
        f, meta = self.open_object(bucket, name)
        f.close()
        return meta

    def commit_file(self, bucket: str, name: str, tmp: Path, meta: dict,
                    if_match: str | None = None, if_none_match: str | None = None) -> dict:
        """Make a fully received temp file the object's new version, with its metadata, if
        the preconditions hold; a reader sees the old version or the new one, whole."""
        path = self.object_path(bucket, name)
        st = tmp.stat()
        meta.update(name=name, size=st.st_size, etag=uuid.uuid4().hex, timeModified=time.time())
        with self._writer(bucket):
            old = self.current(bucket, path, name)
            check_write(old, if_match, if_none_match)
            if path.is_dir():
                raise StoreError(409, 'Conflict', f'{name!r} is a prefix of other objects')
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StoreError(409, 'Conflict', f'a parent of {name!r} is an object')
            mfile = self._meta_file(bucket, name, st.st_ino)
            mtmp = mfile.with_suffix('.tmp')
            mtmp.write_text(json.dumps(meta))
            os.replace(mtmp, mfile)  # the metadata first: it is there when the bytes are
            old_ino = path.stat().st_ino if old else None
            os.replace(tmp, path)
            if old_ino is not None and old_ino != st.st_ino:
                self._meta_file(bucket, name, old_ino).unlink(missing_ok=True)
            self._meta_file(bucket, name, None).unlink(missing_ok=True)
        return meta

    def delete_object(self, bucket: str, name: str, if_match: str | None = None) -> None:
        path = self.object_path(bucket, name)
        with self._writer(bucket):
            current = self.current(bucket, path, name)
            if current is None:
                raise StoreError(404, 'ObjectNotFound', f'The object {name!r} was not found '
                                 f'in the bucket {bucket!r}')
            check_write(current, if_match, None)
            ino = path.stat().st_ino
            path.unlink()
            self._meta_file(bucket, name, ino).unlink(missing_ok=True)
            self._meta_file(bucket, name, None).unlink(missing_ok=True)
            base = self.bucket_dir(bucket)
            parent = path.parent
            while parent != base:  # prune empty prefixes so names can be reused as objects
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def list_objects(self, bucket: str, prefix: str = '', start: str = '', end: str = '',
                     start_after: str = '', limit: int = 1000, delimiter: str = '',
                     fields: tuple = ('name',)) -> dict:
        if limit < 1:
            raise StoreError(400, 'InvalidParameter', f'limit must be at least 1, got {limit}')
        base = self.bucket_dir(bucket)
        # Walk only the deepest directory the prefix names, not the whole bucket.
        top = base / prefix.rsplit('/', 1)[0] if '/' in prefix else base
        names = []
        if top.resolve().is_dir() and (top.resolve() == base.resolve()
                                       or base.resolve() in top.resolve().parents):
            for dirpath, _, files in os.walk(top):
                rel = Path(dirpath).relative_to(base).as_posix()
                for f in files:
                    name = f if rel == '.' else f'{rel}/{f}'
                    if name.startswith(prefix):
                        names.append(name)
        names.sort()
        objects, prefixes, next_start = [], set(), None
        for name in names:
            if (start and name < start) or (end and name >= end) or \
                    (start_after and name <= start_after):
                continue
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    prefixes.add(name[:cut + 1])
                    continue
            if len(objects) == limit:
                next_start = name
                break
            objects.append(name)
        out = []
        for name in objects:
            entry = {'name': name}
            if set(fields) == {'name', 'size'}:  # what our transport asks: a stat is enough
                try:
                    entry['size'] = (base / name).stat().st_size
                except FileNotFoundError:  # deleted since the walk
                    continue
            elif set(fields) - {'name'}:
                try:
                    meta = self.head_object(bucket, name)
                except StoreError:  # deleted since the walk
                    continue
                when = iso_time(meta['timeModified'])
                every = {'size': meta['size'], 'md5': meta.get('md5'), 'etag': meta['etag'],
                         'timeCreated': when, 'timeModified': when, 'storageTier': 'Standard',
                         'archivalState': None}
                entry.update((k, every[k]) for k in fields if k in every)
            out.append(entry)
        result = {'objects': out, 'prefixes': sorted(prefixes)}
        if next_start:
            result['nextStartWith'] = next_start
        return result

    # multipart ------------------------------------------------------------
    def upload_dir(self, bucket: str, upload_id: str, name: str) -> Path:
        self.bucket_dir(bucket)
        path = self.root / 'uploads' / bucket / upload_id
        if not upload_id.isalnum() or not path.is_dir() or \
                (path / 'object').read_text() != name:
            raise StoreError(404, 'NoSuchUpload', f'upload {upload_id!r} of {name!r} not found')
        return path

    def create_upload(self, bucket: str, name: str, meta: dict | None = None) -> dict:
        """Start a multipart upload; `meta` (content headers, user metadata, preconditions)
        is applied when it is committed."""
        self.object_path(bucket, name)  # validates the name now, not at commit
        upload_id = uuid.uuid4().hex
        path = self.root / 'uploads' / bucket / upload_id
        path.mkdir(parents=True)
        (path / 'meta.json').write_text(json.dumps(meta or {}))
        (path / 'object').write_text(name)
        return {'namespace': NAMESPACE, 'bucket': bucket, 'object': name,
                'uploadId': upload_id, 'timeCreated': iso_time(time.time()),
                'storageTier': 'Standard'}

    def list_uploads(self, bucket: str) -> list[dict]:
        self.bucket_dir(bucket)
        root = self.root / 'uploads' / bucket
        out = []
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                name = (path / 'object').read_text()
            except FileNotFoundError:  # being created or aborted
                continue
            out.append({'namespace': NAMESPACE, 'bucket': bucket, 'object': name,
                        'uploadId': path.name, 'timeCreated': iso_time(path.stat().st_ctime),
                        'storageTier': 'Standard'})
        return out

    def put_part(self, bucket: str, name: str, upload_id: str, num: int, tmp: Path,
                 md5: str) -> str:
        """Make a fully received temp file part `num` of an upload (replacing one sent
        before); its new ETag."""
        path = self.upload_dir(bucket, upload_id, name)
        etag = uuid.uuid4().hex
        size = tmp.stat().st_size
        os.replace(tmp, path / f'{num}.part')
        (path / f'{num}.tmp').write_text(json.dumps(
            {'part': num, 'etag': etag, 'md5': md5, 'size': size}))
        os.replace(path / f'{num}.tmp', path / f'{num}.json')  # listings see it whole
        return etag

    def list_parts(self, bucket: str, name: str, upload_id: str) -> list[dict]:
        path = self.upload_dir(bucket, upload_id, name)
        out = []
        for meta in sorted(path.glob('[0-9]*.json'), key=lambda p: int(p.stem)):
            m = json.loads(meta.read_text())
            out.append({'partNumber': m['part'], 'etag': m['etag'], 'md5': m['md5'],
                        'size': m['size']})
        return out

    def commit_upload(self, bucket: str, name: str, upload_id: str, parts: list[dict],
                      if_match: str | None = None, if_none_match: str | None = None) -> dict:
        path = self.upload_dir(bucket, upload_id, name)
        created = json.loads((path / 'meta.json').read_text()) \
            if (path / 'meta.json').exists() else {}
        conditions = created.pop('conditions', {})
        parts = sorted(parts, key=lambda p: int(p['partNum']))
        digests = []
        with self.tmp_file() as out:
            try:
                for p in parts:
                    mfile = path / f'{int(p["partNum"])}.json'
                    if not mfile.exists():
                        raise StoreError(400, 'InvalidUploadPart', f'part {p["partNum"]} missing')
                    meta = json.loads(mfile.read_text())
                    if meta['etag'] != p.get('etag'):
                        raise StoreError(400, 'InvalidUploadPart', f'part {p["partNum"]} etag '
                                         f'does not match')
                    with open(path / f'{meta["part"]}.part', 'rb') as f:
                        shutil.copyfileobj(f, out, CHUNK)
                    digests.append(base64.b64decode(meta['md5']))
            except BaseException:
                os.unlink(out.name)
                raise
        mp_md5 = base64.b64encode(hashlib.md5(b''.join(digests)).digest()).decode()
        try:
            meta = self.commit_file(
                bucket, name, Path(out.name), {**created, 'multipartMd5': f'{mp_md5}-{len(parts)}'},
                if_match if if_match is not None else conditions.get('ifMatch'),
                if_none_match if if_none_match is not None else conditions.get('ifNoneMatch'))
        finally:
            Path(out.name).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        return meta

    def abort_upload(self, bucket: str, name: str, upload_id: str) -> None:
        shutil.rmtree(self.upload_dir(bucket, upload_id, name))

