"""The Hugging Face export (llm-foundry's `hf_checkpointer`) uploads from rank 0 alone: the model
is gathered there and written there. llm-foundry 0.22 gives every rank's uploader 4 worker
processes, spawned when the run starts, each importing the whole stack (~1 GB, ~10 CPU-seconds:
32 of them on an 8-GPU node), which on ranks 1-N never upload anything. Here those ranks start
none; rank 0 keeps its 4. (A hook into llm-foundry 0.22.0's HuggingFaceCheckpointer, behind
data_prep.versions: its `remote_ud` and that uploader's `_num_concurrent_uploads`.)
"""
from __future__ import annotations

import functools

from data_prep import versions


def upload_from_rank_0_only() -> None:
    """Ranks other than 0 start no export uploader process. Idempotent."""
    versions.require(versions.LLMFOUNDRY, 'training/export.py')
    from composer.utils import dist
    from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
    if getattr(HuggingFaceCheckpointer.__init__, '_rank_0_uploads', False):
        return
    init = HuggingFaceCheckpointer.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if self.remote_ud is not None and dist.get_global_rank() != 0:
            self.remote_ud._num_concurrent_uploads = 0  # no upload is ever enqueued here

    __init__._rank_0_uploads = True
    HuggingFaceCheckpointer.__init__ = __init__
