"""What a conversion costs before its first record and after its last part, checked by what
the processes do, not by timing them (machines are noisy): see scripts/bench/convert.py for
the seconds."""
import json
import re
import subprocess

from tests.helpers import PY, ROOT, sample_texts

HEAVY = ('transformers', 'sklearn', 'torchvision', 'streaming.base.dataset',
         'streaming.base.dataloader', 'streaming.text')


def _convert(sample_dir, out) -> tuple[dict, set[str]]:
    proc = subprocess.run(
        [PY, '-X', 'importtime', '-m', 'data_prep.convert', '--data-files',
         str(sample_dir / 'c4-train.*.json.gz'), '--remote', str(out), '--compression', 'zstd',
         '--max-docs', '40', '--workers', '2', '--no-progress', '--json'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = set(re.findall(r'^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$', proc.stderr, re.M))
    heavy = sorted(m for m in imported if any(m == h or m.startswith(h + '.') for h in HEAVY))
    assert not heavy, heavy[:20]
    return json.loads(proc.stdout), imported


def test_convert_imports_streamings_writer_not_its_datasets(sample_dir, tmp_path):
    """`python -X importtime` lists every module the command's processes import (the forked
    workers write to the same stderr): streaming's writer and datasets, none of what
    streaming's package __init__s would add (transformers, scikit-learn, torchvision...);
    also when nothing is left to convert and the run only publishes (reads the part indexes)."""
    summary, imported = _convert(sample_dir, tmp_path / 'out')
    assert summary['published'] and summary['samples'] == 40
    assert {'datasets', 'streaming.base.format.mds.writer', 'streaming.base.util'} <= imported
    # the summary says when the first record was read and the last part done
    assert summary['first_record_at'] < summary['parts_done_at']
    again, imported = _convert(sample_dir, tmp_path / 'out')
    assert again['published'] and again['parts_converted'] == 0 and again['samples'] == 40
    assert again['first_record_at'] is None  # (and _convert found nothing heavy imported)


def test_the_pool_path_reads_records_it_should(sample_dir, tmp_path):
    """Reading the first lines in the parent before forking (to import once what datasets
    imports on its first read) leaves every record to the workers: nothing lost or doubled."""
    from data_prep.pipeline.convert import ConvertConfig, convert
    s = convert(ConvertConfig(remote=str(tmp_path / 'out'), compression='zstd', workers=2,
                              data_files=str(sample_dir / 'c4-train.*.json.gz'), progress=False))
    assert s['published'] and s['documents'] == s['samples'] == len(sample_texts(sample_dir))
