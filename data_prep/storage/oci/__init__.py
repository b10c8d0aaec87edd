"""OCI Object Storage through the native SDK: auth.py (credentials as the OCI CLI picks
them), client.py (one client per process, retries, whole-object transfers), remote.py
(`OCIRemote`). streaming's oci:// plugs are in data_prep.streaming_ext.oci; Composer's in
training.checkpoints."""
