"""The local OCI store's credentials: the key pair it makes for its clients, and the check of
the OCI request signature every request must carry.

OCI signs requests with HTTP signatures (draft-cavage): an `Authorization: Signature ...`
header with keyId, algorithm="rsa-sha256", the list of signed headers and an RSA-SHA256
signature over "name: value" lines of those headers ("(request-target): get /n/..."). The SDK
and the OCI CLI sign date, (request-target) and host, plus content-length, content-type and
x-content-sha256 for requests with a JSON body (PUT of an object or part leaves the body out).

The store accepts a request only if its signature verifies with the public half of the key
pair it generated (`client_config`):
- keyId "tenancy/user/fingerprint" (api_key auth): the fingerprint must be that key's;
- keyId "ST$<token>" (security_token auth): the token itself is not inspected (nothing here
  issues real ones), but the request must be signed with the store's key pair; so a session
  config that reuses the store's key works, and any other key is refused.
A missing, malformed, wrongly signed or stale (date more than 5 minutes off, as OCI) request
gets 401 NotAuthenticated.
"""
from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import os
import re
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from local_services.oci_store.storage import StoreError

MAX_SKEW_S = 300
_PARAM = re.compile(r'(\w+)="([^"]*)"')


# ----------------------------------------------------------------------------- the key pair

def client_config(data_dir) -> Path:
    """A throwaway API key and an OCI config file for this store, made once per data dir.

    The SDK and the OCI CLI sign every request with it (api_key auth) and the store verifies
    the signature with its public half. It is not a secret: it opens nothing but this local
    store. Both files are 0600 (the OCI CLI warns about a config file others can read).
    """
    cdir = Path(data_dir) / 'client'
    config, key = cdir / 'config', cdir / 'key.pem'
    cdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cdir / '.lock', os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two stores starting on one data dir make one key
        if config.exists() and key.exists():
            if config.stat().st_mode & 0o077:  # made 0644 by an older store
                config.chmod(0o600)
            return config
        _make_key_and_config(config, key)
    finally:
        os.close(fd)
    return config


def _make_key_and_config(config: Path, key: Path) -> None:
    pk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())
    _write_private(key, pem)
    _write_private(config, (
        '[DEFAULT]\n'
        'user=ocid1.user.oc1..localstore\n'
        'tenancy=ocid1.tenancy.oc1..localstore\n'
        f'fingerprint={fingerprint(pk.public_key())}\n'
        f'key_file={key.resolve()}\n'
        'region=us-ashburn-1\n').encode())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix('.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def fingerprint(public_key) -> str:
    """OCI's key fingerprint: MD5 of the DER public key, as aa:bb:..."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return ':'.join(f'{b:02x}' for b in hashlib.md5(der).digest())


def load_public_key(data_dir):
    """(public key, fingerprint) of the store's key pair, made first if needed."""
    client_config(data_dir)
    pem = (Path(data_dir) / 'client' / 'key.pem').read_bytes()
    public = serialization.load_pem_private_key(pem, None).public_key()
    return public, fingerprint(public)


# ----------------------------------------------------------------------------- verification

def _refuse(why: str) -> StoreError:
    return StoreError(401, 'NotAuthenticated', 'The required information to complete '
                      f'authentication was not provided or was incorrect: {why}')


def verify(method: str, target: str, headers, public_key, key_fingerprint: str,
           now: float | None = None) -> str | None:
    """Check the request's OCI signature; raises StoreError 401 if it does not hold.

    `target` is the request target as received (path?query), `headers` the request headers.
    Returns the signed x-content-sha256 (base64) the body must then match, or None.
    """
    auth = headers.get('Authorization') or ''
    if not auth:
        raise _refuse('no Authorization header')
    scheme, _, rest = auth.partition(' ')
    params = dict(_PARAM.findall(rest))
    if scheme != 'Signature' or not {'keyId', 'signature', 'headers'} <= set(params):
        raise _refuse('the Authorization header is not an OCI request signature')
    if params.get('algorithm', 'rsa-sha256') != 'rsa-sha256' or params.get('version', '1') != '1':
        raise _refuse(f'unsupported signature algorithm {params.get("algorithm")!r}')
    key_id = params['keyId']
    if not key_id.startswith('ST$'):
        parts = key_id.split('/')
        if len(parts) != 3 or parts[2] != key_fingerprint:
            raise _refuse(f'key {parts[-1]!r} is not the key of this store (its fingerprint '
                          f'is {key_fingerprint})')
    signed = params['headers'].lower().split()
    required = {'(request-target)', 'host'}
    if method == 'POST':  # a JSON body: signed, as the SDK and OCI do
        required |= {'content-length', 'content-type', 'x-content-sha256'}
    missing = sorted(required - set(signed)) + ([] if {'date', 'x-date'} & set(signed)
                                                else ['date'])
    if missing:
        raise _refuse(f'{", ".join(missing)} not signed')
    lines = []
    for name in signed:
        if name == '(request-target)':
            lines.append(f'(request-target): {method.lower()} {target}')
            continue
        value = headers.get(name)
        if value is None:
            raise _refuse(f'signed header {name} missing')
        lines.append(f'{name}: {value}')
    try:
        signature = base64.b64decode(params['signature'], validate=True)
        public_key.verify(signature, '\n'.join(lines).encode(), padding.PKCS1v15(),
                          hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise _refuse('the signature does not verify with the key of this store') from None
    date = headers.get('x-date') if 'x-date' in signed else headers.get('date')
    try:
        skew = abs((now or time.time()) - parsedate_to_datetime(date).timestamp())
    except (TypeError, ValueError):
        raise _refuse(f'bad date {date!r}') from None
    if skew > MAX_SKEW_S:
        raise _refuse(f'the request date {date!r} is {skew:.0f} s from the clock of the '
                      f'store (at most {MAX_SKEW_S} s)')
    return headers.get('x-content-sha256') if 'x-content-sha256' in signed else None


@functools.lru_cache(maxsize=8)
def _signer(config_file: str):
    import oci
    return oci.signer.Signer.from_config(oci.config.from_file(config_file))


def sign(config_file, method: str, endpoint: str, target: str, body: bytes = b'',
         headers: dict | None = None) -> dict:
    """Headers (with Authorization) for a raw HTTP request to `endpoint` + `target`, signed
    by the oci SDK's own signer with the key of an OCI config file, for the target exactly as
    given (no URL normalisation): for tests and benchmarks that speak HTTP directly."""
    from types import SimpleNamespace

    from oci._vendor.requests.structures import CaseInsensitiveDict
    signer = _signer(str(config_file))
    req = SimpleNamespace(method=method, url=endpoint + target, path_url=target, body=body,
                          headers=CaseInsensitiveDict({**(headers or {}),
                                                       'content-length': str(len(body))}))
    # As the SDK does: PUT bodies (objects, parts) are not signed, JSON bodies are.
    signer(req, enforce_content_headers=method != 'PUT')
    return dict(req.headers)
