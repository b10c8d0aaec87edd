"""Spark's Python daemon (pyspark.daemon), with what converting a part imports done once,
before it forks the Python workers that run the tasks: they inherit it, as the pool's forked
workers do, so a new worker (after a failed or killed attempt) starts converting at once
instead of importing streaming again (seconds each).

    --conf spark.python.daemon.module=data_prep.pipeline.spark_daemon

The driver sets it for the local[N] sessions it starts; on a cluster, set it with the other
Spark settings (docs/converting.md). Only imports here: no threads, no I/O, and
nothing on stdout, where the daemon reports its port to the executor.
"""
if __name__ == '__main__':
    import contextlib
    import sys

    from pyspark import daemon

    with contextlib.redirect_stdout(sys.stderr):
        try:
            import datasets  # noqa: F401
            import streaming  # noqa: F401

            import data_prep.pipeline.part  # noqa: F401
            import data_prep.pipeline.spark  # noqa: F401
        except Exception as exc:  # the workers import what they need and say what fails
            print(f'c4-convert spark daemon: preloading failed: {exc!r}', file=sys.stderr)
    daemon.manager()
