"""The hub's HTTP side: the requests huggingface_hub 0.33 and datasets 3.6 make to read a dataset.

    GET  /api/datasets/{org}/{name}[/revision/{rev}]      repo info (sha, siblings)
    GET  /api/datasets/{org}/{name}/tree/{rev}[/{path}]   listing; ?recursive, ?expand, paged
                                                          with a Link: <...cursor=N>; rel="next"
    POST /api/datasets/{org}/{name}/paths-info/{rev}      paths=...&expand=... (form body)
    GET  /api/datasets/{org}/{name}/commits/{rev}         the one commit
    HEAD|GET /datasets/{org}/{name}/resolve/{rev}/{path}  a git file: 200, ETag = blob id;
                                                          an LFS file: 302 to /_lfs/..., with
                                                          X-Linked-Size and X-Linked-Etag
    HEAD|GET /_lfs/{org}/{name}/{sha256}/{path}           the bytes (the CDN), Range supported

Every answer about a repository carries X-Repo-Commit; errors carry X-Error-Code
(RepoNotFound, RevisionNotFound, EntryNotFound), which is how huggingface_hub tells them
apart. The shaping (latency, bandwidth per connection, faults), the Range parser, the
sendfile/throttled body writer and the JSON request log are the local OCI store's
(data_prep.servers.oci_store.handler), reused by subclassing.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from email.utils import formatdate
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from data_prep.servers.hf_hub.repos import Entry, Repos, Snapshot
from data_prep.servers.oci_store.handler import (
    SETTLE_PATH,
    Handler,
    Knobs,
    StoreServer,
    _Buffer,
    _parse_range,
    _Reset,
)
from data_prep.servers.oci_store.storage import StoreError, _iso

DEFAULT_PAGE_SIZE = 1000  # the hub's page for tree listings without expand


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _repo_not_found(repo_id: str) -> HubError:
    # The hub answers 401 for a repository that does not exist (or that one may not see).
    return HubError(401, 'RepoNotFound', f'Repository not found: {repo_id}')


def _flag(value: str | None) -> bool:
    return str(value).lower() in ('1', 'true', 'yes')


class HubHandler(Handler):
    server_version = 'local-hf-hub'

    def _dispatch(self):
        self.t0, self.sent, self.received, self.fault = time.monotonic(), 0, 0, None
        self.status, self.shaped, self.repo_commit = 0, 0, None
        # the store handler's body pacing reads the request's rate (its _dispatch sets it)
        self.rate = self.server.knobs.bandwidth_mbps * 1e6  # bytes/s, 0 = unshaped
        server: HubServer = self.server
        if self.path == SETTLE_PATH:  # not a hub request: see RunningHub.requests
            server.settle()
            return self._empty(204)
        with server.busy:
            server.inflight += 1
        try:
            split = urlsplit(self.path)
            self.query = {k: v[0] for k, v in parse_qs(split.query).items()}
            self.route = split.path
            if server.knobs.latency_ms:
                time.sleep(server.knobs.latency_ms / 1000)
            self.fault = server.draw_fault(f'{self.command} {unquote(split.path)}')
            if self.fault in ('503', '500', '429'):
                self.close_connection = True
                raise HubError(int(self.fault), None, f'injected fault {self.fault}')
            if self.fault == 'reset' and not (self.command == 'GET' and (
                    split.path.startswith('/_lfs/') or '/resolve/' in split.path)):
                raise _Reset()  # no file body to cut half-way: drop the connection now
            self._route(split.path)
        except StoreError as e:  # from the reused Range parser
            self._error(HubError(e.status, None, e.message))
        except HubError as e:
            self._error(e)
        except _Reset:
            self._reset()
        except (ConnectionError, BrokenPipeError, TimeoutError):
            self.close_connection = True
            self.status = self.status or 499
        except Exception as e:  # a bug here must not look like a network fault
            self._error(HubError(500, None, repr(e)))
        finally:
            server.log_request_line(self)
            with server.busy:
                server.inflight -= 1
                server.busy.notify_all()

    do_GET = do_HEAD = do_POST = _dispatch

    # responses ------------------------------------------------------------
    def _start(self, status: int, headers: dict, length: int):
        self.status = status
        self.send_response(status)
        self.send_header('X-Request-Id', uuid.uuid4().hex)
        if self.repo_commit:
            self.send_header('X-Repo-Commit', self.repo_commit)
        for k, v in headers.items():
            if v is not None:
                self.send_header(k, str(v))
        self.send_header('Content-Length', str(length))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()

    def _error(self, e: HubError):
        self._json(e.status, {'error': e.message},
                   {'X-Error-Code': e.code, 'X-Error-Message': e.message})

    # routing --------------------------------------------------------------
    def _route(self, raw: str):
        seg = [unquote(s) for s in raw.split('/')][1:]  # each segment was quoted on its own
        m = self.command
        if seg[:1] == ['api'] and len(seg) >= 4 and seg[1] in ('datasets', 'models', 'spaces'):
            repo_id, rest = f'{seg[2]}/{seg[3]}', seg[4:]
            if seg[1] != 'datasets':
                raise _repo_not_found(repo_id)  # this hub serves datasets only
            snap = self._repo(repo_id)
            if not rest and m == 'GET':
                return self._json(200, self._info(repo_id, snap))
            if len(rest) == 2 and rest[0] == 'revision' and m == 'GET':
                self._revision(snap, rest[1])
                return self._json(200, self._info(repo_id, snap))
            if len(rest) >= 2 and rest[0] == 'tree' and m == 'GET':
                self._revision(snap, rest[1])
                return self._tree(raw, snap, '/'.join(rest[2:]).strip('/'))
            if len(rest) == 2 and rest[0] == 'paths-info' and m == 'POST':
                self._revision(snap, rest[1])
                return self._paths_info(snap)
            if len(rest) == 2 and rest[0] == 'commits' and m == 'GET':
                self._revision(snap, rest[1])
                return self._json(200, [{'id': snap.sha, 'title': 'Local stand-in',
                                         'message': '', 'authors': [],
                                         'date': _iso(snap.modified)}])
        elif len(seg) >= 6 and seg[0] == 'datasets' and seg[3] == 'resolve' and m in ('GET',
                                                                                       'HEAD'):
            snap = self._repo(f'{seg[1]}/{seg[2]}')
            self._revision(snap, seg[4])
            return self._resolve(snap, '/'.join(seg[5:]))
        elif len(seg) >= 5 and seg[0] == '_lfs' and m in ('GET', 'HEAD'):
            snap = self._repo(f'{seg[1]}/{seg[2]}')
            entry = snap.by_lfs.get(seg[3])
            if entry is None or entry.path != '/'.join(seg[4:]):
                raise HubError(404, None, 'no such LFS object (the file changed?)')
            return self._body(entry, {'ETag': f'"{entry.lfs_sha256}"'})
        elif len(seg) >= 4 and seg[2] == 'resolve':
            raise _repo_not_found(f'{seg[0]}/{seg[1]}')  # a model repository
        raise HubError(404, None, f'{m} {unquote(raw)} is not served here')

    def _repo(self, repo_id: str) -> Snapshot:
        repo = self.server.repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(repo_id)
        snap = repo.snapshot()
        self.repo_commit = snap.sha
        return snap

    @staticmethod
    def _revision(snap: Snapshot, rev: str) -> None:
        if rev not in ('main', snap.sha):  # one branch, one commit
            raise HubError(404, 'RevisionNotFound', f'Invalid rev id: {rev}')

    # endpoints ------------------------------------------------------------
    @staticmethod
    def _info(repo_id: str, snap: Snapshot) -> dict:
        return {'_id': snap.sha[:24], 'id': repo_id, 'author': repo_id.split('/')[0],
                'sha': snap.sha, 'lastModified': _iso(snap.modified),
                'createdAt': _iso(snap.modified), 'private': False, 'gated': False,
                'disabled': False, 'downloads': 0, 'likes': 0, 'tags': [],
                'siblings': [{'rfilename': p} for p in sorted(snap.entries)],
                'usedStorage': sum(e.size for e in snap.entries.values())}

    @staticmethod
    def _item(snap: Snapshot, path: str, expand: bool) -> dict:
        e = snap.entries.get(path)
        if e is None:
            item = {'type': 'directory', 'oid': snap.dirs[path], 'size': 0, 'path': path}
        else:
            item = {'type': 'file', 'oid': e.oid, 'size': e.size, 'path': path}
            if e.lfs_sha256:
                item['lfs'] = {'oid': e.lfs_sha256, 'size': e.size,
                               'pointerSize': e.pointer_size}
        if expand:
            item['lastCommit'] = {'id': snap.sha, 'title': 'Local stand-in',
                                  'date': _iso(snap.modified)}
        return item

    def _tree(self, raw: str, snap: Snapshot, path: str):
        if path and path not in snap.dirs:  # a file or nothing: the client then lists the parent
            raise HubError(404, 'EntryNotFound', f'Entry not found: {path}')
        recursive, expand = _flag(self.query.get('recursive')), _flag(self.query.get('expand'))
        prefix = f'{path}/' if path else ''
        names = [p for p in [*snap.dirs, *snap.entries] if p.startswith(prefix) and
                 (recursive or '/' not in p[len(prefix):])]
        names.sort()
        start = int(self.query.get('cursor') or 0)
        page = self.server.page_size
        headers = {}
        if start + page < len(names):
            query = {**self.query, 'cursor': str(start + page)}
            nxt = (f'http://{self.headers.get("Host")}{raw}?' +
                   '&'.join(f'{k}={quote(str(v), safe="")}' for k, v in query.items()))
            headers['Link'] = f'<{nxt}>; rel="next"'
        return self._json(200, [self._item(snap, p, expand) for p in names[start:start + page]],
                          headers)

    def _paths_info(self, snap: Snapshot):
        buf = _Buffer()
        self._receive(buf, check=False)  # the hub's requests are not signed
        form = parse_qs(buf.data.decode())
        expand = _flag((form.get('expand') or ['false'])[0])
        found = [p.strip('/') for p in form.get('paths', [])]
        return self._json(200, [self._item(snap, p, expand) for p in found
                                if p in snap.entries or p in snap.dirs])

    def _resolve(self, snap: Snapshot, path: str):
        e = snap.entries.get(path)
        if e is None:
            raise HubError(404, 'EntryNotFound', f'Entry not found: {path}')
        if e.lfs_sha256 is None:  # kept in git: served here
            return self._body(e, {'ETag': f'"{e.oid}"'})
        # LFS: a redirect to the content store (the CDN), which the clients follow.
        if self.fault == 'reset':
            raise _Reset()
        repo_id = '/'.join(quote(p, safe='') for p in self.route.split('/')[2:4])
        location = (f'http://{self.headers.get("Host")}/_lfs/{repo_id}/{e.lfs_sha256}/'
                    f'{quote(e.path)}')
        self._start(302, {'Location': location, 'ETag': f'"{e.oid}"',
                          'X-Linked-Etag': f'"{e.lfs_sha256}"', 'X-Linked-Size': e.size}, 0)

    def _body(self, e: Entry, headers: dict):
        size = e.size
        headers = {**headers, 'Content-Type': 'application/octet-stream',
                   'Accept-Ranges': 'bytes',
                   'Last-Modified': formatdate(e.file.stat().st_mtime, usegmt=True)}
        start, end, status = 0, size - 1, 200
        rng = self.headers.get('Range')
        if rng and size:
            start, end = _parse_range(rng, size)
            status = 206
            headers['Content-Range'] = f'bytes {start}-{end}/{size}'
        length = max(end - start + 1, 0)
        self._start(status, headers, length)
        if self.command == 'GET' and length:
            with open(e.file, 'rb') as f:
                self._send_file(f, start, length)


class HubServer(StoreServer):
    """The store's server machinery (shaping, faults, log, settle) over dataset repositories."""

    def __init__(self, data_dir, port: int, knobs: Knobs, log_path=None,
                 page_size: int = DEFAULT_PAGE_SIZE):
        # Not StoreServer.__init__: that one sets up bucket storage, which the hub has none of.
        ThreadingHTTPServer.__init__(self, ('127.0.0.1', port), HubHandler)  # loopback only
        self.repos = Repos(Path(data_dir))
        self.page_size = max(1, int(page_size))
        self.knobs = knobs.check()
        self.rng = random.Random(knobs.seed)
        self.rng_lock = threading.Lock()
        self.log_file = open(log_path, 'a', buffering=1) if log_path else None
        self.log_lock = threading.Lock()
        self.busy, self.inflight = threading.Condition(), 0
