"""The Hugging Face export uploads from rank 0 alone (training/export.py): llm-foundry's
hf_checkpointer built as a recipe builds it, with save_folder in the local OCI store, gets
its 4 uploader workers on rank 0 and none on another rank."""
import pytest

from training import checkpoints, export


@pytest.mark.parametrize('rank, workers', [('0', 4), ('1', 0)])
def test_only_rank_0_starts_uploaders_for_the_export(rank, workers, oci_store, monkeypatch):
    from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
    monkeypatch.setenv('RANK', rank)
    monkeypatch.setenv('OCI_BUCKET_NAMESPACES', '')  # install() sets it: restored after
    checkpoints.install(['oci://c4-bench@local/ckpt'])
    export.upload_from_rank_0_only()
    callback = HuggingFaceCheckpointer(save_folder='oci://c4-bench@local/ckpt/run',
                                       save_interval='1dur', precision='float32')
    assert callback.remote_ud is not None
    assert callback.remote_ud._num_concurrent_uploads == workers
