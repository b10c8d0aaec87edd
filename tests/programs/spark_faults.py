"""Spark's Python daemon for the tests: the product's (data_prep.pipeline.spark_daemon), with
faults injected into chosen parts' first attempts. Faults are read from the JSON file named by
SPARK_FAULTS_FILE (set before the session starts; the test writes the file before a conversion
and removes it after): {"part-00001": [2, "exit"], "part-00002": [3, "raise"]} makes attempt 0
of part-00001 end its Python worker at once (os._exit, as a lost executor: nothing cleaned up)
once it has written 2 shards, and attempt 0 of part-00002 raise after 3.

    .config('spark.python.daemon.module', 'tests.programs.spark_faults')

The fault is the writer's: streaming's MDSWriter.flush_shard, wrapped. The part and attempt come
from the folder the writer writes into (<split>/<part>/a<attempt>-<hex>, data_prep's layout).
"""
import json
import os
import re
import runpy

FAULTS_ENV = 'SPARK_FAULTS_FILE'
ATTEMPT = re.compile(r'(part-\d+)[/-]a(\d+)-[0-9a-f]+')


def _fault(writer):
    """(shards, how) for this writer's part, if its attempt 0 is to fail."""
    path = os.environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        faults = json.load(f)
    for folder in (writer.local, writer.remote):
        m = ATTEMPT.search(folder or '')
        if m and m.group(2) == '0' and m.group(1) in faults:
            return faults[m.group(1)]
    return None


def install() -> None:
    from streaming.base.format.base.writer import JointWriter
    flush = JointWriter.flush_shard

    def flush_shard(self):
        flush(self)
        fault = _fault(self)
        if fault and len(self.shards) >= fault[0]:
            if fault[1] == 'exit':
                self.executor.shutdown(wait=True)  # its shards are in the remote
                os._exit(17)
            raise RuntimeError(f'attempt 0 fails after {fault[0]} shards (a test)')

    JointWriter.flush_shard = flush_shard


if __name__ == '__main__':
    install()
    runpy.run_module('data_prep.pipeline.spark_daemon', run_name='__main__')
