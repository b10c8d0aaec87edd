"""The HTTP side both local servers (oci_store, hf_hub) share: their knobs (latency, bandwidth,
faults), the request prologue (timing, settle, shaping, latency, fault draw) and epilogue (one
JSON log line per request), throttled or sendfile transfer, byte ranges, body draining and
connection resets. A server subclasses ShapedHandler (its routes and error answers) and
ShapedServer (what it serves)."""
from __future__ import annotations

import argparse
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

FAULT_KINDS = ('503', '500', '429', 'reset')
SETTLE_PATH = '/_local/settle'  # not a served request: see background.RunningServer.requests
CHUNK = 1 << 20
# A body left unread by an early answer is read off the connection up to this size (so it is
# not parsed as the next request); a larger one closes the connection instead.
DRAIN_LIMIT = 1 << 30


# ----------------------------------------------------------------------------- knobs

@dataclass
class Knobs:
    """Network shaping and faults."""
    latency_ms: float = 0.0       # added before every response (a server far away)
    bandwidth_mbps: float = 0.0   # MB/s per connection, both directions; 0 = unlimited
    fault_rate: float = 0.0       # fraction of requests that fail
    fault_kinds: tuple = FAULT_KINDS
    seed: int | None = None       # makes the fault sequence repeatable
    fault_match: str = ''         # regex on "METHOD /path": only matching requests may fail
    idle_timeout_s: float = 60.0  # a client silent this long is dropped (its temp file too)
    shape_match: str = ''         # regex on "METHOD /path": only matching requests are shaped

    def check(self) -> 'Knobs':
        if self.latency_ms < 0 or self.bandwidth_mbps < 0:
            raise ValueError('latency and bandwidth must be >= 0')
        if self.idle_timeout_s <= 0:
            raise ValueError(f'idle timeout must be > 0 seconds, got {self.idle_timeout_s}')
        if not 0 <= self.fault_rate <= 1:
            raise ValueError(f'fault rate must be between 0 and 1, got {self.fault_rate}')
        self.fault_kinds = fault_kinds(self.fault_kinds)
        for what, pattern in (('fault', self.fault_match), ('shape', self.shape_match)):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f'{what} match {pattern!r} is not a regex: {e}')
        return self

    def argv(self) -> list[str]:
        """The shaping and fault flags both servers' `serve` take."""
        return ['--latency-ms', str(self.latency_ms), '--bandwidth-mbps', str(self.bandwidth_mbps),
                '--fault-rate', str(self.fault_rate), '--fault-kinds', ','.join(self.fault_kinds),
                '--fault-match', self.fault_match,
                *(['--seed', str(self.seed)] if self.seed is not None else [])]


def fault_kinds(value) -> tuple:
    """A comma list (or sequence) of FAULT_KINDS, checked."""
    kinds = tuple(k.strip() for k in (value.split(',') if isinstance(value, str) else value)
                  if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise ValueError(f'fault kinds must be a comma list of {",".join(FAULT_KINDS)}, '
                         f'got {",".join(kinds) or "nothing"}')
    return kinds


def fault_kinds_arg(value: str) -> tuple:
    """fault_kinds as an argparse type."""
    try:
        return fault_kinds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def iso_time(ts: float) -> str:
    """A timestamp as OCI and the hub write it: 2026-01-02T03:04:05.678Z."""
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts)) + f'.{int(ts % 1 * 1000):03d}Z'


# ----------------------------------------------------------------------------- HTTP

class RequestError(Exception):
    """An error answered to the client: HTTP status, the server's error code, a message."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Reset(Exception):
    """Raised inside a handler to drop the connection with a TCP reset."""


class _TooBig(Exception):
    pass


class _Discard:
    """A sink that drops what it is given, up to DRAIN_LIMIT bytes."""

    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
        if self.n > DRAIN_LIMIT:
            raise _TooBig()


class Buffer:
    """A sink that keeps a (small) body in memory."""

    def __init__(self):
        self.data = b''

    def write(self, b):
        self.data += b


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(first, last) byte of a `Range: bytes=...` header (its first range) on `size` bytes."""
    try:
        unit, spec = header.split('=', 1)
        first, last = spec.split(',')[0].strip().split('-')
        if unit.strip() != 'bytes':
            raise ValueError
        if first == '':
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        raise RequestError(400, 'InvalidRange', f'bad Range header {header!r}')
    if start >= size or start > end:
        raise RequestError(416, 'InvalidRange', f'range {header!r} outside 0..{size}')
    return start, end


class ShapedHandler(BaseHTTPRequestHandler):
    """One request: the shared prologue and epilogue around the subclass's `_route`.

    Subclasses give `_route(path)`, `_answer_error(exc)` (any exception a route raises, or the
    one `_injected` returns), `_injected(status)` (the error an injected 5xx/429 fault is
    answered with) and, where they differ, `_begin` (per-request state), `_admit` (after the
    latency, before the fault draw: e.g. the signature check), `_cuts_body` (whether a reset
    fault waits to cut a body half-way) and `_answer_headers` (sent on every answer); and
    `do_<METHOD> = _dispatch` for the methods they serve."""
    protocol_version = 'HTTP/1.1'  # keep-alive, as the clients' connection pools expect
    request_id_header = 'X-Request-Id'
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers, ~40 ms on every small answer.
    disable_nagle_algorithm = True

    def setup(self):
        # Socket timeout: a client that stops sending (or reading) is dropped, not waited on.
        self.timeout = self.server.knobs.idle_timeout_s
        super().setup()

    def log_message(self, fmt, *args):  # the JSON request log replaces stderr noise
        pass

    # hooks ----------------------------------------------------------------
    def _begin(self) -> None:
        pass

    def _admit(self) -> None:
        pass

    def _cuts_body(self) -> bool:
        return self.command == 'GET'

    def _answer_headers(self) -> dict:
        return {}

    def _injected(self, status: int) -> Exception:
        raise NotImplementedError

    def _route(self, path: str) -> None:
        raise NotImplementedError

    def _answer_error(self, e: Exception) -> None:
        raise NotImplementedError

    # the request ----------------------------------------------------------
    def _dispatch(self):
        self.t0, self.sent, self.received, self.fault = time.monotonic(), 0, 0, None
        self.status, self.shaped, self.started = 0, 0, False
        self.body_started, self.body_done = False, False
        self.body_length, self.logged = 0, False
        server: ShapedServer = self.server
        knobs = server.knobs
        self.rate = knobs.bandwidth_mbps * 1e6  # bytes/s, 0 = unshaped
        self._begin()
        if self.path == SETTLE_PATH:
            server.settle()
            self.logged = True  # not a served request: never in the log
            return self._empty(204)
        with server.busy:
            server.inflight += 1
        try:
            split = urlsplit(self.path)
            self.query = {k: v[0] for k, v in parse_qs(split.query).items()}
            self.route = split.path
            request = f'{self.command} {unquote(split.path)}'
            if knobs.shape_match and not re.search(knobs.shape_match, request):
                self.rate = 0
            if knobs.latency_ms:
                time.sleep(knobs.latency_ms / 1000)
            self._admit()
            self.fault = server.draw_fault(request)
            if self.fault in ('503', '500', '429'):
                raise self._injected(int(self.fault))
            if self.fault == 'reset' and not self._cuts_body():
                raise Reset()  # no body to cut half-way: drop the connection now
            self._route(split.path)
        except Reset:
            self._reset()
        except (ConnectionError, TimeoutError):  # the client went away or fell silent
            self.close_connection = True
            self.status = self.status or 499
        except Exception as e:  # the subclass's errors, and its bugs (not as network faults)
            self._answer_error(e)
        finally:
            self._log_once()  # an answer cut short, or none: logged here
            with server.busy:
                server.inflight -= 1
                server.busy.notify_all()

    # answers --------------------------------------------------------------
    def _log_once(self):
        """The request's log line. A complete answer logs it before its last byte goes out,
        so a client that has its response finds the line in the log (tests read the log as
        the witness of what a client did, right after the client's call returns)."""
        if not self.logged:
            self.logged = True
            self.server.log_request_line(self)

    def _start(self, status: int, headers: dict, length: int):
        self.status, self.started = status, True
        self.body_length = 0 if self.command == 'HEAD' else length
        self.send_response(status)
        self.send_header(self.request_id_header, uuid.uuid4().hex)
        for k, v in {**self._answer_headers(), **headers}.items():
            if v is not None:
                self.send_header(k, str(v))
        self.send_header('Content-Length', str(length))
        if self.close_connection:
            self.send_header('Connection', 'close')
        if not self.body_length:
            self._log_once()  # the headers are the whole answer
        self.end_headers()

    def _json(self, status: int, obj, headers: dict | None = None):
        body = json.dumps(obj).encode()
        self._start(status, {'Content-Type': 'application/json', **(headers or {})}, len(body))
        if self.command != 'HEAD':
            self._send_bytes(body)

    def _empty(self, status: int, headers: dict | None = None):
        self._start(status, headers or {}, 0)

    def _reset(self):
        self.status = self.status or 0
        self.close_connection = True
        try:  # SO_LINGER 0 makes close() send RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _byte_range(self, size: int, headers: dict) -> tuple[int, int, int]:
        """(start, length, status) of the answer to a GET or HEAD of `size` bytes: the
        request's Range (206, Content-Range added to `headers`) or the whole (200)."""
        start, end, status = 0, size - 1, 200
        rng = self.headers.get('Range')
        if rng:
            start, end = parse_range(rng, size)
            status = 206
            headers['Content-Range'] = f'bytes {start}-{end}/{size}'
        return start, max(end - start + 1, 0), status

    # transfer -------------------------------------------------------------
    def _throttle(self, nbytes: int):
        """Sleep so this connection stays under the configured MB/s."""
        rate = self.rate
        if rate:  # the clock starts with the body, so latency does not count as transfer
            if not self.shaped:
                self.shape_t0 = time.monotonic()
            self.shaped += nbytes
            ahead = self.shaped / rate - (time.monotonic() - self.shape_t0)
            if ahead > 0:
                time.sleep(ahead)

    def _step(self) -> int:
        """Write size: about 10 ms of transfer when shaped, so sleeps stay coarse."""
        rate = self.rate
        return CHUNK if not rate else int(min(max(rate / 100, 16 << 10), CHUNK))

    def _write(self, piece: bytes):
        """A piece of the body; the request is logged before the body's last byte."""
        last = piece and self.sent + len(piece) == self.body_length
        self.wfile.write(piece[:-1] if last else piece)
        self.sent += len(piece)
        self._throttle(len(piece))
        if last:
            self._log_once()
            self.wfile.write(piece[-1:])

    def _send_bytes(self, data: bytes):
        step = self._step()
        for i in range(0, len(data), step):
            self._write(data[i:i + step])

    def _send_file(self, f, offset: int, count: int):
        """`count` bytes from `offset` of an open file (the version whose size was sent)."""
        if self.fault == 'reset':  # half the body, then a reset: a truncated transfer
            count = count // 2
        if not self.rate:
            # sendfile: the server must not be the bottleneck. The body's last byte is held
            # back until the request is logged (see _log_once).
            hold = int(self.sent + count == self.body_length)
            while count > hold:
                n = self.connection.sendfile(f, offset, count - hold)
                if not n:
                    break
                offset, count, self.sent = offset + n, count - n, self.sent + n
            if hold and count == 1:
                self.sent += 1
                self._log_once()
                if self.connection.sendfile(f, offset, 1) == 1:
                    count = 0
                else:
                    self.sent -= 1
        else:
            f.seek(offset)
            while count > 0:
                chunk = f.read(min(self._step(), count))
                if not chunk:
                    break
                self._write(chunk)
                count -= len(chunk)
        if self.fault == 'reset':
            raise Reset()
        if count:  # cannot happen with one open version; never send less than announced
            raise ConnectionError(f'{count} bytes short')

    def _read_body(self, sink, *digests) -> int:
        """Copy the request body (Content-Length or chunked) to `sink`, updating `digests`
        (hashlib objects) on the way; the bytes read so far."""
        self.body_started = True

        def take(n):
            data = self.rfile.read(n)
            if len(data) < n:
                raise ConnectionError('client went away mid-body')
            self.received += n
            sink.write(data)
            for d in digests:
                d.update(data)
            self._throttle(n)

        if 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower():
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                while size:
                    n = min(size, CHUNK)
                    take(n)
                    size -= n
                self.rfile.readline()
        else:
            left = int(self.headers.get('Content-Length') or 0)
            while left:
                n = min(left, CHUNK)
                take(n)
                left -= n
        self.body_done = True
        return self.received

    def _discard_body(self):
        """An answer given before the body was read: read the body off the connection first,
        so that it is not taken for the next request, or close the connection."""
        if self.body_done:
            return
        length = self.headers.get('Content-Length')
        chunked = 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower()
        if not chunked and (length is None or length.strip() == '0'):
            return
        if self.body_started or (not chunked and not (length.strip().isdigit()
                                                      and int(length) <= DRAIN_LIMIT)):
            self.close_connection = True  # part read, unreadable length, or too big
            return
        try:
            self._read_body(_Discard())
        except (OSError, ValueError, _TooBig):
            self.close_connection = True


class ShapedServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 (only) with the knobs, the fault draw, the request log
    and `settle`."""
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, handler: type[ShapedHandler], knobs: Knobs, log_path=None):
        super().__init__(('127.0.0.1', port), handler)  # loopback only, always
        self.knobs = knobs.check()
        self.rng = random.Random(knobs.seed)
        self.rng_lock = threading.Lock()
        self.log_file = open(log_path, 'a', buffering=1) if log_path else None
        self.log_lock = threading.Lock()
        self.busy, self.inflight = threading.Condition(), 0

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled, so each one answered is also logged."""
        with self.busy:
            self.busy.wait_for(lambda: self.inflight == 0, timeout)

    def draw_fault(self, request: str):
        k = self.knobs
        if not k.fault_rate or (k.fault_match and not re.search(k.fault_match, request)):
            return None
        with self.rng_lock:
            if self.rng.random() < k.fault_rate:
                return self.rng.choice(k.fault_kinds)
        return None

    def log_request_line(self, h: ShapedHandler):
        if not self.log_file:
            return
        line = json.dumps({'t': round(time.time(), 6), 'method': h.command,
                           'path': unquote(getattr(h, 'route', h.path)),
                           'query': getattr(h, 'query', {}), 'status': h.status,
                           'bytes': h.sent, 'in': h.received, 'fault': h.fault,
                           'ms': round((time.monotonic() - h.t0) * 1000, 2)})
        with self.log_lock:
            self.log_file.write(line + '\n')
