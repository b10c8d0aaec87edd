"""Bad configuration fails in one line before any work: a bucket typo in the data remote (no
object read, no cache folder made) and download_retry=0 (streaming counts tries)."""
from tests.helpers import train_main

RECIPE = 'yamls/cpu/c4_zstd.yaml'


def test_bucket_typo_fails_in_one_line_before_any_work(oci_store, tmp_path):
    cache = tmp_path / 'cache'
    rc, lines = train_main([RECIPE, 'variables.data_remote=oci://c4-bnech@local/c4',
                            f'variables.data_local={cache}'])
    assert rc == 2 and len(lines) == 1, lines
    assert "bucket 'c4-bnech' not found" in lines[0] and lines[0].startswith(f'error: {RECIPE}:')
    assert not cache.exists()
    assert all('/o/' not in r['path'] for r in oci_store.requests())  # no object was read
    # download_retry counts tries in streaming: 0 would fail deep inside dataset setup
    rc, lines = train_main([RECIPE, 'train_loader.dataset.download_retry=0'])
    assert rc == 2 and len(lines) == 1 and 'download_retry must be an integer >= 1' in lines[0]
