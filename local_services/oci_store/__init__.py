"""A local OCI Object Storage-compatible server for offline runs and tests.

Nothing installable emulates OCI Object Storage, so we carry the part of its REST API
(20160918) that the oci SDK uses here: storage.py (objects as files on disk), handler.py (the
HTTP handler; its knobs for latency, bandwidth and faults are local_services.shaped_http's,
shared with the local hub), cli.py (`start_store` and the command line:
python -m local_services.oci_store {serve,start,stop,status}).
"""
from local_services.oci_store.cli import RunningStore, client_env, start_store
from local_services.oci_store.storage import NAMESPACE
from local_services.shaped_http import FAULT_KINDS, Knobs

__all__ = ['FAULT_KINDS', 'NAMESPACE', 'Knobs', 'RunningStore', 'client_env', 'start_store']
