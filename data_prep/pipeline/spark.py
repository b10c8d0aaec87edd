"""The Spark engine: one Spark task per part, on OCI Data Flow, any Spark 3.5 cluster, or
local[N] on one machine. `run_spark(tasks, workers, progress)` has run_pool's signature; the
driver (convert.py) plans, verifies and publishes exactly as with the pool.

    tasks -> sc.parallelize(tasks, numSlices=len(tasks))     one partition, one task per part
          -> each task attempt: part.convert_part (its own attempt folder, commits by creating
             the part's manifest) -> the committed manifest, collected by the driver

Under Spark's own failure handling (spark.task.maxFailures retries, a lost executor's tasks
run again, spark.speculation's second copies) every attempt writes only into its own attempt
folder, and the first to create the manifest wins (layout.py). So no record is ever written
twice or lost, whatever attempts fail, die or run at once; the driver deletes what attempts
that did not commit left, after the job, once no attempt of it is still running.

A task that meets a bad record or input (the same on every attempt) returns the error instead
of raising it, and the driver stops the job and raises it, as the pool does; other failures
(network, a lost machine) raise, and Spark retries the part.

Executors get the driver's storage settings (OCI_*, AWS_*, S3_ENDPOINT_URL, HF_*) in each task
(never in Spark's configuration or logs); OCI_RESOURCE_PRINCIPAL_* only where the executor has
none of its own. On OCI Data Flow, with no OCI_CLI_AUTH given, the run's own credentials are
used: its resource principal (DATAFLOW_AUTH=resource_principal) or the delegation token Data
Flow gives every run (spark.hadoop.fs.oci.client.auth.delegationTokenPath). Before any part
starts, one task checks that an executor can import this code and read the run's lease.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace

from data_prep.errors import first_line
from data_prep.pipeline.task import PartResult, PartTask

SHIPPED_PREFIXES = ('OCI_', 'AWS_', 'HF_')
SHIPPED_NAMES = ('S3_ENDPOINT_URL',)
EXECUTOR_OWN = 'OCI_RESOURCE_PRINCIPAL_'  # node-local on Data Flow: the executor's value wins
DATAFLOW_TOKEN_CONF = 'spark.hadoop.fs.oci.client.auth.delegationTokenPath'
DAEMON = 'data_prep.pipeline.spark_daemon'  # workers forked with the imports done (spark_daemon)
SETTLE_S = 60.0  # after the job: at most this long for killed (speculative) attempts to end
CANCEL_WAIT_S = 30.0  # a cancelled job (bad input found) must end within this; else an error


class SparkError(RuntimeError):
    """Spark cannot run the conversion (no Java, no pyspark, executors that cannot reach the
    remote, a part that failed every attempt). One line."""


# ----------------------------------------------------------------------------- the driver side

def check_java() -> str:
    """The java that Spark will start, or SparkError naming what is missing."""
    home = os.environ.get('JAVA_HOME')
    java = os.path.join(home, 'bin', 'java') if home else shutil.which('java')
    if not java or not os.access(java, os.X_OK):
        where = f'JAVA_HOME={home} has no bin/java' if home else 'no `java` on PATH'
        raise SparkError(f'--engine spark needs Java 17 (Spark 3.5 runs on the JVM): {where}; '
                         f'install a JDK or JRE 17 (e.g. apt-get install openjdk-17-jre-headless)')
    return java


def session(master: str | None = None, tmp_dir: str | None = None):
    """The active SparkSession; else one started by spark-submit's settings (under
    spark-submit or OCI Data Flow), or from `master` (default local[*]) with the UI off."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkError('--engine spark needs pyspark 3.5 (pip install pyspark==3.5.0)') \
            from None
    active = SparkSession.getActiveSession()
    if active is None:
        submitted = 'PYSPARK_GATEWAY_PORT' in os.environ  # spark-submit started our python
        if not submitted:
            check_java()
        builder = SparkSession.builder.appName('c4-convert')
        if master or not submitted:
            master = master or 'local[*]'
            builder = builder.master(master)
            if master.startswith('local'):
                # This machine's python for the workers, no hostname warning, no UI, and
                # Spark's own log at ERROR from the start (the driver reports failures).
                os.environ.setdefault('PYSPARK_PYTHON', sys.executable)
                os.environ.setdefault('SPARK_LOCAL_IP', '127.0.0.1')
                builder = (builder.config('spark.ui.enabled', 'false')
                           .config('spark.ui.showConsoleProgress', 'false')
                           .config('spark.python.daemon.module', DAEMON)
                           .config('spark.driver.extraJavaOptions',
                                   f'-Dlog4j2.configurationFile=file:{_log_config()}'))
                if tmp_dir:
                    builder = builder.config('spark.local.dir', tmp_dir)
        try:
            active = builder.getOrCreate()
        except Exception as exc:
            raise SparkError(f'cannot start Spark ({master or "spark-submit"}): '
                             f'{first_line(exc, with_type=False)}') from None
    _dataflow_credentials(active)
    return active


LOG4J2 = '\n'.join([
    # (Spark's shell start-up compares the root level with org.apache.spark's: both FATAL)
    'rootLogger.level = fatal', 'rootLogger.appenderRef.stderr.ref = console',
    'logger.spark.name = org.apache.spark', 'logger.spark.level = fatal',
    'logger.hadoop.name = org.apache.hadoop', 'logger.hadoop.level = fatal',
    'logger.jetty.name = org.sparkproject', 'logger.jetty.level = fatal',
    'appender.console.type = Console', 'appender.console.name = console',
    'appender.console.target = SYSTEM_ERR', 'appender.console.layout.type = PatternLayout',
    'appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n', ''])


def _log_config() -> str:
    """A log4j2 configuration that logs only Spark's fatal errors: the driver says in one
    line why a part or the job failed."""
    path = os.path.join(tempfile.gettempdir(), f'c4-convert-log4j2-{os.getuid()}.properties')
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        f.write(LOG4J2)
    os.replace(tmp, path)
    return path


def _dataflow_credentials(spark) -> None:
    """On OCI Data Flow with no OCI_CLI_AUTH: the run's resource principal, or the delegation
    token Data Flow gives every run (on every node, at the path in its Spark config)."""
    if os.environ.get('OCI_CLI_AUTH'):
        return
    if os.environ.get('DATAFLOW_AUTH') == 'resource_principal':
        os.environ['OCI_CLI_AUTH'] = 'resource_principal'
        return
    from data_prep.storage.oci.auth import TOKEN_FILE_ENV
    token = (spark.sparkContext.getConf().get(DATAFLOW_TOKEN_CONF)
             or os.environ.get('SPARK_HADOOP_FS_DELEGATION_TOKEN_PATH'))
    if token:
        os.environ['OCI_CLI_AUTH'] = 'instance_obo_user'
        os.environ[TOKEN_FILE_ENV] = token


def slots(spark) -> tuple[int, int]:
    """(task slots in all, slots per executor): parts converted at once, and how many share
    one machine's upload threads."""
    sc = spark.sparkContext
    total = max(1, sc.defaultParallelism)
    per_executor = sc.getConf().get('spark.executor.cores')
    if sc.master.startswith('local') or not per_executor:
        return total, total
    return total, max(1, int(per_executor))


def shipped_env() -> dict[str, str]:
    """The storage settings the executors need from the driver's environment."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(SHIPPED_PREFIXES) or k in SHIPPED_NAMES}


def _active():
    from pyspark.sql import SparkSession
    spark = SparkSession.getActiveSession()
    if spark is None:
        raise SparkError('no active SparkSession (the driver starts one with --engine spark)')
    return spark


def _failure_line(exc: BaseException, parts: list[str]) -> str:
    """One line from a failed Spark job: the part, and the Python exception of its last
    attempt (or Spark's reason when there is none: a worker that died, a lost executor)."""
    text = str(exc)
    task = re.search(r'Task (\d+) in stage [\d.]+ failed (\d+) times', text)
    where = ''
    if task and int(task.group(1)) < len(parts):
        where = f'part {parts[int(task.group(1))]} failed {task.group(2)} times ' \
                f'(spark.task.maxFailures): '
    _, _, tb = text.partition('PythonException: Traceback (most recent call last):')
    for line in tb.splitlines()[1:]:
        if line and not line.startswith((' ', '\t')):
            return where + line.strip()
    reason = re.search(r'most recent failure: Lost task [^:]*: ([^\n]+)', text)
    if reason:
        return where + reason.group(1).strip()
    return where + first_line(exc, with_type=False)


def _collect(spark, rdd, desc: str, parts: list[str], on_poll=None):
    """rdd.collect() in a job group, from a thread, so the driver can show progress and stop
    it; returns (results, stage ids)."""
    sc = spark.sparkContext
    group = f'c4-convert-{uuid.uuid4().hex[:8]}'
    out: dict = {}

    def run():
        try:
            sc.setJobGroup(group, desc, interruptOnCancel=True)
            out['results'] = rdd.collect()
        except BaseException as exc:  # noqa: B036 (handed to the driver's thread)
            out['error'] = exc

    thread = threading.Thread(target=run, name='spark-collect', daemon=True)
    thread.start()
    cancelled = None
    try:
        while thread.is_alive():
            thread.join(0.5)
            if cancelled is None and on_poll is not None and on_poll(_stages(sc, group)):
                sc.cancelJobGroup(group)
                cancelled = time.monotonic()
            if cancelled is not None and time.monotonic() - cancelled > CANCEL_WAIT_S:
                raise SparkError(f'Spark did not stop the job {CANCEL_WAIT_S:.0f} s after '
                                 f'it was cancelled (a bad input was found)')
    except BaseException:
        sc.cancelJobGroup(group)
        thread.join(CANCEL_WAIT_S)  # bounded: the thread is a daemon, the error matters more
        raise
    stages = _stages(sc, group)
    if 'error' in out:
        exc = out['error']
        if type(exc).__name__ == 'Py4JJavaError' or 'SparkException' in str(exc)[:300]:
            raise SparkError(_failure_line(exc, parts)) from None
        raise exc
    return out['results'], stages


def _stages(sc, group: str) -> list:
    tracker = sc.statusTracker()
    infos = []
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage in (info.stageIds if info else []):
            s = tracker.getStageInfo(stage)
            if s is not None:
                infos.append(s)
    return infos


def _settle(sc, stage_ids: list[int]) -> None:
    """Waits until no attempt of the job is running any more (speculative copies that lost
    are killed after the job ends): only then may the driver delete what they wrote."""
    tracker = sc.statusTracker()
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        infos = [tracker.getStageInfo(s) for s in stage_ids]
        if not any(i is not None and i.numActiveTasks > 0 for i in infos):
            return
        time.sleep(0.2)
    print(f'note: attempts of the Spark job still ran {SETTLE_S:.0f} s after it ended; if '
          f'they write after the driver cleaned up, `python -m data_prep.verify` names their '
          f'shards and the next run removes them', file=sys.stderr)


def check_executors(url: str, lock: str, run_id: str, first_input: str = '') -> None:
    """One task on an executor opens the remote at `url` and reads this run's lease `lock`,
    and finds the first input file if it is a local path: the executors import our code, have
    credentials, and see the same storage and inputs as the driver."""
    spark = _active()
    item = (url, lock, run_id, first_input, shipped_env())
    rdd = spark.sparkContext.parallelize([item], 1)
    try:
        found, _ = _collect(spark, rdd.map(_executor_check), 'c4-convert: executor check',
                            ['(executor check)'])
    except SparkError as exc:
        raise SparkError(f'Spark executors cannot run the conversion: {exc}') from None
    if found[0]:
        raise SparkError(f'Spark executors {found[0]}')


def run_spark(tasks: list[PartTask], workers: int, progress: bool) -> list[PartResult]:
    """Runs `convert_part` on every task, one Spark task each, with a progress bar; returns
    the committed manifests with each attempt's figures. A bad record or input stops the job
    and is raised as the pool raises it; a part whose every attempt failed is a SparkError."""
    if not tasks:
        return []
    spark = _active()
    sc = spark.sparkContext
    env = shipped_env()
    parts = [t.part for t in tasks]
    done = sc.accumulator([0, 0, 0], _Sum())  # parts, documents, input bytes (as tasks end)
    errors = sc.accumulator([], _Concat())    # (part, exception) of bad input
    rdd = sc.parallelize([(t, env) for t in tasks], numSlices=len(tasks))
    rdd = rdd.mapPartitions(lambda items: _run_tasks(items, done, errors))
    bar, t0 = None, time.perf_counter()
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), unit='part', desc='convert (spark)', dynamic_ncols=True,
                   file=sys.stderr)

    def poll(stages) -> bool:
        if bar is not None:
            n, docs, nbytes = done.value
            dt = max(time.perf_counter() - t0, 1e-9)
            running = sum(s.numActiveTasks for s in stages)
            failed = sum(s.numFailedTasks for s in stages)
            bar.update(n - bar.n)
            bar.set_postfix_str(f'{running} running, {failed} failed attempts, '
                                f'{docs / dt:,.0f} docs/s {nbytes / 1e6 / dt:.1f} MB/s',
                                refresh=False)
        return bool(errors.value)  # bad input: stop the job, as the pool does

    try:
        try:
            results, stages = _collect(spark, rdd, f'c4-convert: {len(tasks)} parts', parts,
                                       poll)
        except SparkError:
            if errors.value:
                raise errors.value[0][1] from None
            raise
        if errors.value:
            raise errors.value[0][1]
        poll(stages)
    finally:
        if bar is not None:
            bar.close()
    _settle(sc, [s.stageId for s in stages])
    return results


# ----------------------------------------------------------------------------- accumulators

class _Sum:
    """Element-wise sum of [parts, documents, bytes] (an AccumulatorParam)."""

    def zero(self, value):
        return [0] * len(value)

    def addInPlace(self, a, b):  # noqa: N802 (Spark's name)
        return [x + y for x, y in zip(a, b)]


class _Concat:
    """List concatenation (an AccumulatorParam)."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):  # noqa: N802 (Spark's name)
        return a + b


# ----------------------------------------------------------------------------- the executor side

_ready = False
_applied: dict[str, str | None] = {}  # what the last task changed: name -> value before it


def _apply_env(env: dict[str, str]) -> None:
    """The driver's settings for this task (Python workers are reused across tasks: first
    undo what the previous task set)."""
    for key, value in _applied.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _applied.clear()
    for key, value in env.items():
        if key.startswith(EXECUTOR_OWN) and key in os.environ:
            continue
        _applied[key] = os.environ.get(key)
        os.environ[key] = value


def _init_executor() -> None:
    """Once per Python worker: what part.init_worker does for a pool worker."""
    global _ready
    if not _ready:
        from data_prep.pipeline.part import init_worker
        init_worker(None)
        _ready = True


def _executor_check(item) -> str:
    url, lock, run_id, first_input, env = item
    import json

    from data_prep.storage import open_remote
    _apply_env(env)
    if first_input and '://' not in first_input and not os.path.isfile(first_input):
        return (f'see no input file {first_input}: --data-files must be on a file system '
                f'every executor mounts (or use --dataset)')
    try:
        _init_executor()
        holder = json.loads(open_remote(url).read(lock))
    except FileNotFoundError:
        return (f'find no lease {lock} in {url}: they see other storage than the driver (a '
                f'local path not shared between machines?)')
    except Exception as exc:
        return f'cannot use {url}: {first_line(exc)}'
    if holder.get('run_id') != run_id:
        return f'find a lease {lock} in {url} that is not this run\'s'
    return ''


def _committed(task: PartTask) -> PartResult | None:
    """The part's manifest if an earlier attempt committed it for this very plan (it
    committed, then its success was lost with its executor): nothing to do again."""
    import json

    from data_prep.pipeline.layout import MANIFEST
    from data_prep.storage import open_remote
    remote = open_remote(task.cfg.remote)
    try:
        manifest = json.loads(remote.read(f'{task.split}/{task.part}/{MANIFEST}'))
    except FileNotFoundError:
        return None
    if manifest.get('digest') != task.digest or not manifest.get('attempt'):
        return None
    return PartResult(manifest, pid=os.getpid(), cpu_seconds=0.0, committed=False)


def _run_tasks(items, done, errors):
    from pyspark import TaskContext

    from data_prep.pipeline.part import convert_part
    from data_prep.pipeline.records import BadRecordError, InputError
    ctx = TaskContext.get()
    for task, env in items:
        _apply_env(env)
        _init_executor()
        task = replace(task, attempt_number=ctx.attemptNumber() if ctx is not None else 0)
        base = task.cfg.tmp_dir or (os.environ.get('SPARK_LOCAL_DIRS') or '') \
            .split(',')[0] or None
        staging = tempfile.mkdtemp(prefix=f'c4-convert-{task.part}-', dir=base)
        try:
            result = _committed(task) if task.attempt_number else None
            result = result or convert_part(replace(task, tmp_root=staging))
        except (BadRecordError, InputError) as exc:  # the same on every attempt: no retry
            errors.add([(task.part, exc)])
            yield None  # the driver raises it (the errors accumulator) and returns nothing
            continue
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        done.add([1, result.documents, result.input_bytes])
        yield result
