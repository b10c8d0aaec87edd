"""Composer callbacks that record, for every fine-tuning run, how fast it went, how long the
accelerators waited for data and how much data came from the local shard cache, and that keep
the bucket's checkpoints.

Registered for llm-foundry as entry points (group ``llmfoundry_callbacks`` in setup.py), so a
yaml names them under ``callbacks:``:

    data_wait    callbacks/data_wait.py    per-rank time in the loader's next(), per step and run
    cache_stats  callbacks/cache_stats.py  shard cache hits/misses, bytes downloaded, evictions
    throughput   callbacks/throughput.py   samples/s, tokens/s (global, per device), MFU
    run_report   callbacks/run_report.py   rank 0 writes run_metrics.json + steps.jsonl
    bucket_keep  callbacks/bucket_keep.py  save_num_checkpoints_to_keep in the bucket, and how
                                           long each checkpoint took to become resumable
                                           (train.py adds it to runs that save to oci://)

Modules are imported by llm-foundry when a yaml names them; importing this package alone does
not import Composer.
"""
