"""The conversion pipeline: HF dataset -> MDS parts in a remote -> verified root index.

records.py (input files and their records), identity.py (an input's identity: changed or not),
task.py (what the driver and the engines hand each other), part.py (one file -> one part),
convert.py (plan, run, verify, publish), pool.py (the local engine: a pool of worker processes),
spark.py (the Spark engine),
lease.py (one conversion at a time per dataset), layout.py (what lies where in the remote),
verify.py and stats.py (check and measure a dataset), sample.py and tokenizer.py (the offline
C4-format sample and a small tokenizer trained on it).
"""
