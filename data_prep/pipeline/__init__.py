"""The conversion pipeline: HF dataset -> MDS parts in a remote -> verified root index.

records.py (input files and their records), part.py (one file -> one part), convert.py (the
pool of workers, resume, verify, publish), layout.py (what lies where in the remote),
verify.py and stats.py (check and measure a dataset), sample.py and tokenizer.py (the offline
C4-format sample and a small tokenizer trained on it).
"""
