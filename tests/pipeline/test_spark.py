"""--engine spark: one Spark task per part, exactly once under Spark's retries; real Spark in
local mode (local[2,3]: 2 task slots, up to 3 attempts per task), one session for the module,
its UI off and its folders under the test's tmp dir. The failures are real: the session's
Python daemon is the product's with faults injected (tests/programs/spark_faults.py), which
make attempt 0 of a part raise, or its Python worker die (os._exit, as with a lost executor),
after it has written shards."""
import json
import os
import shutil
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from data_prep.convert import main as convert_main
from data_prep.pipeline import spark as spark_engine
from data_prep.pipeline.convert import ConvertConfig, convert
from data_prep.pipeline.layout import INDEX, MANIFEST, shard_files
from data_prep.pipeline.part import convert_part
from data_prep.pipeline.record import RECORD
from data_prep.pipeline.records import BadRecordError
from data_prep.pipeline.task import PartTask
from data_prep.pipeline.verify import verify
from tests.helpers import expected_digest, one_error_line, sample_texts
from tests.mds import sample_digest
from tests.programs.spark_faults import FAULTS_ENV

SMALL = '64kb'  # several shards per part on the 3 MB sample


@pytest.fixture(scope='module')
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession
    tmp = tmp_path_factory.mktemp('spark')
    os.environ.setdefault('PYSPARK_PYTHON', sys.executable)
    os.environ[FAULTS_ENV] = str(tmp / 'faults.json')  # the daemon inherits it
    java_opts = (f'-Djava.io.tmpdir={tmp} '
                 f'-Dlog4j2.configurationFile=file:{spark_engine._log_config()}')
    session = (SparkSession.builder.master('local[2,3]').appName('test-c4-convert')
               .config('spark.ui.enabled', 'false')
               .config('spark.ui.showConsoleProgress', 'false')
               .config('spark.sql.shuffle.partitions', '2')
               .config('spark.python.daemon.module', 'tests.programs.spark_faults')
               .config('spark.local.dir', str(tmp / 'local'))
               .config('spark.sql.warehouse.dir', str(tmp / 'warehouse'))
               .config('spark.driver.extraJavaOptions', java_opts)
               .getOrCreate())
    yield session
    session.stop()


def _cfg(sample_dir, remote, **kw) -> ConvertConfig:
    kw.setdefault('size_limit', SMALL)
    return ConvertConfig(remote=str(remote), data_files=str(sample_dir / 'c4-train.*.json.gz'),
                         compression='zstd', progress=False, **kw)


def _files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file()}


def _named(root, split='train') -> set[str]:
    """What the published dataset consists of: its root index and record, and per part its
    manifest, its index and the shards it names (in the committed attempt's folder)."""
    names = {f'{split}/{INDEX}', f'{split}/{RECORD}'}
    for manifest in (root / split).glob(f'part-*/{MANIFEST}'):
        m = json.loads(manifest.read_text())
        folder = f'{split}/{m["part"]}/{m["attempt"]}'
        names |= {f'{split}/{m["part"]}/{MANIFEST}', f'{folder}/{INDEX}'}
        names |= {f'{folder}/{name}' for name in m['shards']}
    return names


def test_retried_and_lost_attempts_leave_the_pools_dataset_exactly(spark, sample_dir, tmp_path):
    # Attempt 0 of part 1 dies with its Python worker after 2 shards (nothing cleans up);
    # attempt 0 of part 2 raises after 3 shards (it deletes what it wrote). Spark retries both.
    faults = Path(os.environ[FAULTS_ENV])
    faults.write_text(json.dumps({'part-00001': [2, 'exit'], 'part-00002': [3, 'raise']}))
    out = tmp_path / 'spark'
    try:
        s = convert(_cfg(sample_dir, out, engine='spark'))
    finally:
        faults.unlink()
    pool = convert(_cfg(sample_dir, tmp_path / 'pool', workers=2))
    texts = sample_texts(sample_dir)
    assert s['published'] and s['engine'] == 'spark' and s['workers'] == 2
    assert s['documents'] == s['samples'] == len(texts) and s['parts_converted'] == 4
    assert sample_digest(str(out), 'train') == sample_digest(str(tmp_path / 'pool'), 'train') \
        == expected_digest(texts)
    report = verify(str(out))
    assert report['ok'], report['problems']
    attempts = {p.parent.name: json.loads(p.read_text())['attempt']
                for p in (out / 'train').glob(f'part-*/{MANIFEST}')}
    assert attempts['part-00001'].startswith('a1-') and attempts['part-00002'].startswith('a1-')
    assert attempts['part-00000'].startswith('a0-') and attempts['part-00003'].startswith('a0-')
    # The dead attempt's shards were deleted by the driver; nothing else is left anywhere.
    assert s['stray_objects_removed'] >= 2
    assert _files(out) == _named(out)
    assert sorted(d.name for d in (out / 'train' / 'part-00001').iterdir()) == \
        sorted([MANIFEST, attempts['part-00001']])
    assert s['objects'] == len(_files(out)) == pool['objects']


def test_two_attempts_at_a_part_commit_once_and_strays_are_swept(sample_dir, tmp_path):
    """What speculative execution does (Spark never speculates in local mode): two attempts
    at one part at once. One commits; the other deletes its folder and reports the winner."""
    out = tmp_path / 'out'
    convert(_cfg(sample_dir, out, workers=2))
    manifest = json.loads((out / 'train' / 'part-00002' / MANIFEST).read_text())
    task = PartTask(_cfg(sample_dir, out), 'part-00002', 'train', manifest['input'], limit=None,
                    digest=manifest['digest'], identity=manifest['input_identity'],
                    tmp_root=str(tmp_path), upload_threads=2)
    (out / 'train' / INDEX).unlink()
    shutil.rmtree(out / 'train' / 'part-00002')  # (as the driver does before a redo)
    results = [None, None]

    def attempt(i):
        results[i] = convert_part(replace(task, attempt_number=i))
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.committed for r in results) == [False, True]
    # both report the committed one
    assert results[0].manifest['attempt'] == results[1].manifest['attempt']
    folders = [d for d in (out / 'train' / 'part-00002').iterdir() if d.is_dir()]
    assert [d.name for d in folders] == [results[0].manifest['attempt']]
    assert set(shard_files(json.loads((folders[0] / INDEX).read_text()))) == \
        set(results[0].manifest['shards'])

    # A lost attempt's leftovers (a machine that kept writing after its task was given up):
    # the next run deletes them and publishes the same samples.
    stray = out / 'train' / 'part-00001' / 'a0-deadbeef' / 'shard.00000.mds.zstd'
    stray.parent.mkdir()
    stray.write_bytes(b'not part of the dataset')
    again = convert(_cfg(sample_dir, out, workers=2))
    assert again['parts_converted'] == 0 and again['stray_objects_removed'] == 1
    assert not stray.parent.exists() and _files(out) == _named(out)
    assert sample_digest(str(out), 'train') == expected_digest(sample_texts(sample_dir))


def test_bad_input_stops_the_job_like_the_pool_in_one_line(spark, tmp_path, capsys):
    import gzip
    data = tmp_path / 'in'
    data.mkdir()
    good = json.dumps({'text': 'A good document.'}).encode()
    for i, lines in enumerate([[good] * 5, [good, good, b'{"text": 42}', good]]):
        with gzip.open(data / f'c4-train.{i:05d}-of-00002.json.gz', 'wb') as f:
            f.write(b'\n'.join(lines) + b'\n')
    cfg = ConvertConfig(remote=str(tmp_path / 'out'), data_files=str(data / '*.json.gz'),
                        progress=False, engine='spark')
    with pytest.raises(BadRecordError) as err:  # not retried: the same on every attempt
        convert(cfg)
    assert err.value.line == 3 and err.value.reason == 'non_string_text'
    assert not (tmp_path / 'out' / 'train' / INDEX).exists()
    rc = convert_main(['--data-files', str(data / '*.json.gz'), '--remote',
                       str(tmp_path / 'out'), '--engine', 'spark', '--no-progress'])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and 'c4-train.00001-of-00002.json.gz:3: ' in line


def test_executors_get_the_storage_settings(spark, sample_dir, oci_store):
    # The session (and its executors' Python workers) started before oci_store set OCI_*:
    # the executors reach the store only through what the driver ships in each task.
    probe = spark.sparkContext.parallelize([0], 1).map(
        lambda _: os.environ.get('OCI_OBJECT_STORAGE_ENDPOINT'))
    assert probe.collect() == [None]
    url = 'oci://c4-bench@local/spark'
    s = convert(_cfg(sample_dir, url, engine='spark', max_docs=200, upload_workers=4))
    assert s['published'] and s['samples'] == 200
    report = verify(url)
    assert report['ok'], report['problems']


def test_executors_that_see_other_storage_or_no_inputs_stop_the_run_first(spark, tmp_path):
    # (local mode shares this machine's disk: here the driver's lease is simply not there)
    with pytest.raises(spark_engine.SparkError, match=r'^Spark executors find no lease '
                       r'\.lock\.json in .*: they see other storage than the driver'):
        spark_engine.check_executors(str(tmp_path), '.lock.json', 'run-1')
    (tmp_path / '.lock.json').write_text(json.dumps({'run_id': 'run-1'}))
    spark_engine.check_executors(str(tmp_path), '.lock.json', 'run-1')
    with pytest.raises(spark_engine.SparkError, match='see no input file /nowhere/c4.json.gz: '
                       '--data-files must be on a file system every executor mounts'):
        spark_engine.check_executors(str(tmp_path), '.lock.json', 'run-1', '/nowhere/c4.json.gz')


def test_a_part_that_fails_every_attempt_is_one_line(spark):
    sc = spark.sparkContext
    with pytest.raises(Exception) as err:
        sc.parallelize([0], 1).map(lambda x: 1 // x).collect()
    line = spark_engine._failure_line(err.value, ['part-00000'])
    assert line == ('part part-00000 failed 3 times (spark.task.maxFailures): '
                    'ZeroDivisionError: integer division or modulo by zero')


def test_missing_java_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv('JAVA_HOME', raising=False)
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(spark_engine.SparkError, match='needs Java 17.*no `java` on PATH'):
        spark_engine.check_java()
    monkeypatch.setenv('JAVA_HOME', str(tmp_path / 'jdk'))
    with pytest.raises(spark_engine.SparkError, match=r'JAVA_HOME=\S+jdk has no bin/java'):
        spark_engine.check_java()


def test_the_old_multi_node_flags_point_to_spark(sample_dir, tmp_path, capsys, monkeypatch):
    args = ['--data-files', str(sample_dir / '*.json.gz'), '--remote', str(tmp_path / 'o')]
    assert convert_main(args + ['--num-nodes', '2', '--node-rank', '1']) == 2
    assert '--engine spark' in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv('WORLD_SIZE', '4')
    assert convert_main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert '--engine spark' in line and 'WORLD_SIZE=4' in line
    assert not (tmp_path / 'o').exists()
