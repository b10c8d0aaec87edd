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
sendfile/throttled body writer and the JSON request log are shared with the local OCI store
(local_services.shaped_http).
"""
from __future__ import annotations

from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

from local_services.hf_hub.repos import Entry, Repos, Snapshot
from local_services.shaped_http import (
    Buffer,
    Knobs,
    RequestError,
    Reset,
    ShapedHandler,
    ShapedServer,
    iso_time,
)

DEFAULT_PAGE_SIZE = 1000  # the hub's page for tree listings without expand


class HubError(RequestError):
    """An error the hub answers; `code` goes out as X-Error-Code (None: none)."""


def _repo_not_found(repo_id: str) -> HubError:
    # The hub answers 401 for a repository that does not exist (or that one may not see).
    return HubError(401, 'RepoNotFound', f'Repository not found: {repo_id}')


def _flag(value: str | None) -> bool:
    return str(value).lower() in ('1', 'true', 'yes')


class HubHandler(ShapedHandler):
    server_version = 'local-hf-hub'

    def _begin(self):
        self.repo_commit = None

    def _answer_headers(self) -> dict:
        return {'X-Repo-Commit': self.repo_commit}

    def _cuts_body(self) -> bool:  # a file body (a resolve in git, or an LFS object)
        return self.command == 'GET' and (self.route.startswith('/_lfs/') or
                                          '/resolve/' in self.route)

    def _injected(self, status: int) -> Exception:
        self.close_connection = True
        return HubError(status, None, f'injected fault {status}')

    def _answer_error(self, e: Exception):
        if isinstance(e, HubError):
            self._error(e)
        elif isinstance(e, RequestError):  # from the Range parser
            self._error(HubError(e.status, None, e.message))
        else:  # a bug here must not look like a network fault
            self._error(HubError(500, None, repr(e)))

    do_GET = do_HEAD = do_POST = ShapedHandler._dispatch

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
                                         'date': iso_time(snap.modified)}])
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
                'sha': snap.sha, 'lastModified': iso_time(snap.modified),
                'createdAt': iso_time(snap.modified), 'private': False, 'gated': False,
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
                                  'date': iso_time(snap.modified)}
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
        buf = Buffer()
        self._read_body(buf)
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
            raise Reset()
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
        start, length, status = self._byte_range(size, headers) if size else (0, 0, 200)
        self._start(status, headers, length)
        if self.command == 'GET' and length:
            with open(e.file, 'rb') as f:
                self._send_file(f, start, length)


class HubServer(ShapedServer):
    """The shared server machinery (shaping, faults, log, settle) over dataset repositories."""

    def __init__(self, data_dir, port: int, knobs: Knobs, log_path=None,
                 page_size: int = DEFAULT_PAGE_SIZE):
        super().__init__(port, HubHandler, knobs, log_path)
        self.repos = Repos(Path(data_dir))
        self.page_size = max(1, int(page_size))
