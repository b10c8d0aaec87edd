"""A local Hugging Face Hub stand-in: dataset repositories over HTTP on 127.0.0.1.

`huggingface_hub` and `datasets` take the hub's address from HF_ENDPOINT, so with it pointed
here `python -m data_prep.convert --dataset allenai/c4 --subset en` runs its real code path,
unchanged: `load_dataset_builder` reads the README's `configs:`, lists the repository and
resolves the data files as hf:// URLs, and each file is then streamed with
`load_dataset('text', data_files=[hf://...], streaming=True)`. The server answers exactly
the requests huggingface_hub 0.33 and datasets 3.6 make for that (see server.py), serves
LFS files through a redirect and byte ranges as the hub and its CDN do, and has the local
OCI store's knobs: latency per request, bandwidth per connection, faults (5xx, 429, a
connection reset half-way through a file), all logged, one JSON line per request.

Why our own server: nothing maintained serves the Hub API from local files. olah 0.5.4 (a
caching mirror of the real hub, FastAPI) needs huggingface_hub >= 1.27, against our pinned
0.33.5 (datasets 3.6.0 is built on 0.x), about twenty other packages, and git repositories
to mirror; it has no latency, bandwidth or fault knobs. hf-local-hub 3.0.0 is a CLI around
a Go server that its wheel does not ship. huggingface_hub and datasets test against a
staging hub online. The subset used here is small (five endpoints), and the shaping, fault
injection, Range handling and request log are shared with the local OCI store
(local_services.shaped_http).

    python -m local_services.hf_hub {serve,start,stop,status} --help     (make hub)
    from local_services.hf_hub import start_hub                         (tests, bench)

Layout of the data folder:

    <data>/datasets/<org>/<name>/...   a repository's files (symlinks followed); allenai/c4
                                       is laid out from the sample by --sample / make_c4_repo
    <data>/run/{hub.json,hub.pid,requests.jsonl,hub.log}   the `start`ed server
    <data>/hf_home/                    HF_HOME for clients (see hub_env): own caches
"""
from local_services.hf_hub.cli import RunningHub, hub_env, start_hub  # noqa: F401
from local_services.hf_hub.repos import c4_name, make_c4_repo  # noqa: F401
from local_services.shaped_http import Knobs  # noqa: F401
