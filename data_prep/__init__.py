"""C4 -> MDS in a bucket: the conversion, and the storage layer both halves use.

Commands (thin command lines, `python -m data_prep.X --help`): convert, verify, stats,
sample, tokenizer; convert_spark.py for spark-submit. The code behind them:

    pipeline/       the conversion pipeline (records, parts, resume, verify, publish)
    storage/        where datasets and checkpoints live: the Remote contract, one module per
                    backend, our OCI client (training/checkpoints uses it too)
    streaming_ext/  streaming's oci:// transport (ours) and its writer imported lean

Leaf modules any layer may use: env.py, errors.py, versions.py.
"""
