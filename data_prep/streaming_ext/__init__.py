"""Our extensions of mosaicml-streaming that converting needs (training's are in
training/shards):

- oci.py     our oci:// downloader and uploader, in streaming's DOWNLOADER_MAPPINGS/UPLOADERS
- writer.py  streaming's writer modules imported without its package __init__s (a converter's
             start-up)

`install_transport()` registers the transport (idempotent); training.shards.install() calls it
too, so a run reads oci:// through the same client the converter wrote with.
"""
from __future__ import annotations

from data_prep import versions

_installed = False


def install_transport() -> None:
    """Only our oci:// downloader and uploader, in streaming's maps: what MDSWriter and
    merge_index need (a converter). Imports streaming's storage modules, not its datasets."""
    global _installed
    if _installed:
        return
    from data_prep.streaming_ext import oci
    versions.require(versions.STREAMING, 'data_prep/streaming_ext/oci.py')
    oci.register()
    _installed = True
