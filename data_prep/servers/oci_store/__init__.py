"""A local OCI Object Storage-compatible server for offline runs and tests.

Nothing installable emulates OCI Object Storage, so we carry the part of its REST API
(20160918) that the oci SDK uses here: storage.py (objects as files on disk), handler.py (the
HTTP handler, knobs for latency, bandwidth and faults), cli.py (`start_store` and the command
line: python -m data_prep.servers.oci_store {serve,start,stop,status}).
"""
from data_prep.servers.oci_store.cli import RunningStore, client_env, start_store
from data_prep.servers.oci_store.handler import FAULT_KINDS, Knobs
from data_prep.servers.oci_store.storage import NAMESPACE

__all__ = ['FAULT_KINDS', 'NAMESPACE', 'Knobs', 'RunningStore', 'client_env', 'start_store']
