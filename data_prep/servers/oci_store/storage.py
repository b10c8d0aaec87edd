"""The local OCI store's storage: buckets, objects and multipart uploads as files on disk.

    <data>/buckets/<bucket>/<object name>    the bytes (object names map to paths)
    <data>/meta/<bucket>/<sha1(name)>.json   md5 / etag / multipart md5, written at upload
    <data>/uploads/<bucket>/<upload id>/     multipart parts until commit or abort
    <data>/tmp/                              bodies being received
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

NAMESPACE = 'local'
CHUNK = 1 << 20


class StoreError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _check_name(kind: str, name: str) -> None:
    """Refuse names that are not a plain relative path (escape, empty or dot segments)."""
    parts = name.split('/')
    if (not name or len(name) > 1024 or '\0' in name or name.startswith('/')
            or any(p in ('', '.', '..') for p in parts)):
        raise StoreError(400, 'InvalidParameter', f'{kind} name {name!r} is not allowed here')


class Storage:
    """The bucket/object/multipart operations, on files under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        for sub in ('buckets', 'meta', 'uploads', 'tmp'):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # guards commit/rename sequences, not data transfer

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
        _check_name('object', name)
        base = self.bucket_dir(bucket)
        path = (base / name).resolve()
        if base.resolve() not in path.parents:  # symlinks or anything else that escapes
            raise StoreError(400, 'InvalidParameter', f'object name {name!r} is not allowed here')
        return path

    def meta_path(self, bucket: str, name: str) -> Path:
        return self.root / 'meta' / bucket / (hashlib.sha1(name.encode()).hexdigest() + '.json')

    def tmp_file(self):
        return tempfile.NamedTemporaryFile(dir=self.root / 'tmp', delete=False)

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
                'createdBy': 'local', 'timeCreated': _iso(st.st_ctime),
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

    # objects --------------------------------------------------------------
    def commit_file(self, bucket: str, name: str, tmp: Path, meta: dict) -> dict:
        """Move a fully received temp file into place, atomically, with its metadata."""
        path = self.object_path(bucket, name)
        meta.update(name=name, size=tmp.stat().st_size, etag=uuid.uuid4().hex,
                    timeModified=time.time())
        with self.lock:
            if path.is_dir():
                raise StoreError(409, 'Conflict', f'{name!r} is a prefix of other objects')
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StoreError(409, 'Conflict', f'a parent of {name!r} is an object')
            mpath = self.meta_path(bucket, name)
            mpath.parent.mkdir(parents=True, exist_ok=True)
            mtmp = mpath.with_suffix('.tmp')
            mtmp.write_text(json.dumps(meta))
            os.replace(tmp, path)
            os.replace(mtmp, mpath)
        return meta

    def head_object(self, bucket: str, name: str) -> tuple[Path, dict]:
        path = self.object_path(bucket, name)
        if not path.is_file():
            raise StoreError(404, 'ObjectNotFound', f'The object {name!r} was not found '
                             f'in the bucket {bucket!r}')
        try:
            meta = json.loads(self.meta_path(bucket, name).read_text())
        except (OSError, ValueError):
            meta = {'etag': f'{int(path.stat().st_mtime_ns):x}'}
        # The size served is what is on disk; md5 is what was uploaded, so a file damaged
        # at rest is served as it is and the client can tell.
        meta['size'] = path.stat().st_size
        meta.setdefault('timeModified', path.stat().st_mtime)
        return path, meta

    def delete_object(self, bucket: str, name: str) -> None:
        path, _ = self.head_object(bucket, name)
        with self.lock:
            path.unlink(missing_ok=True)
            self.meta_path(bucket, name).unlink(missing_ok=True)
            base = self.bucket_dir(bucket)
            parent = path.parent
            while parent != base:  # prune empty prefixes so names can be reused as objects
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def list_objects(self, bucket: str, prefix: str = '', start: str = '', end: str = '',
                     start_after: str = '', limit: int = 1000, delimiter: str = '') -> dict:
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
            path, meta = self.head_object(bucket, name)
            out.append({'name': name, 'size': meta['size'], 'md5': meta.get('md5'),
                        'etag': meta.get('etag'), 'timeCreated': _iso(meta['timeModified']),
                        'timeModified': _iso(meta['timeModified']), 'storageTier': 'Standard'})
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

    def create_upload(self, bucket: str, name: str) -> dict:
        self.object_path(bucket, name)  # validates the name now, not at commit
        upload_id = uuid.uuid4().hex
        path = self.root / 'uploads' / bucket / upload_id
        path.mkdir(parents=True)
        (path / 'object').write_text(name)
        return {'namespace': NAMESPACE, 'bucket': bucket, 'object': name,
                'uploadId': upload_id, 'timeCreated': _iso(time.time()),
                'storageTier': 'Standard'}

    def list_uploads(self, bucket: str) -> list[dict]:
        self.bucket_dir(bucket)
        root = self.root / 'uploads' / bucket
        out = []
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            out.append({'namespace': NAMESPACE, 'bucket': bucket,
                        'object': (path / 'object').read_text(), 'uploadId': path.name,
                        'timeCreated': _iso(path.stat().st_ctime), 'storageTier': 'Standard'})
        return out

    def list_parts(self, bucket: str, name: str, upload_id: str) -> list[dict]:
        path = self.upload_dir(bucket, upload_id, name)
        out = []
        for meta in sorted(path.glob('*.json'), key=lambda p: int(p.stem)):
            m = json.loads(meta.read_text())
            out.append({'partNumber': m['part'], 'etag': m['etag'], 'md5': m['md5'],
                        'size': m['size']})
        return out

    def commit_upload(self, bucket: str, name: str, upload_id: str, parts: list[dict]) -> dict:
        path = self.upload_dir(bucket, upload_id, name)
        parts = sorted(parts, key=lambda p: int(p['partNum']))
        digests = []
        with self.tmp_file() as out:
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
        mp_md5 = base64.b64encode(hashlib.md5(b''.join(digests)).digest()).decode()
        meta = self.commit_file(bucket, name, Path(out.name),
                                {'multipartMd5': f'{mp_md5}-{len(parts)}'})
        shutil.rmtree(path, ignore_errors=True)
        return meta

    def abort_upload(self, bucket: str, name: str, upload_id: str) -> None:
        shutil.rmtree(self.upload_dir(bucket, upload_id, name))


def _iso(ts: float) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts)) + f'.{int(ts % 1 * 1000):03d}Z'
