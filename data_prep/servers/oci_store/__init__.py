"""A local OCI Object Storage-compatible server for offline runs and tests.

Nothing installable emulates OCI Object Storage, so we carry the part of its REST API
(20160918) that the oci SDK uses here: storage.py (objects as files on disk), handler.py (the
HTTP handler; its knobs for latency, bandwidth and faults are data_prep.servers.shaped_http's,
shared with the local hub), cli.py (`start_store` and the command line:
python -m data_prep.servers.oci_store {serve,start,stop,status}).
"""
from data_prep.servers.oci_store.cli import RunningStore, client_env, start_store
from data_prep.servers.oci_store.storage import NAMESPACE
from data_prep.servers.shaped_http import FAULT_KINDS, Knobs

__all__ = ['FAULT_KINDS', 'NAMESPACE', 'Knobs', 'RunningStore', 'client_env', 'start_store']
