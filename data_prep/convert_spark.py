"""The application's main file for spark-submit and OCI Data Flow: `data_prep.convert` with
--engine spark by default, on the session spark-submit (or Data Flow) starts.

    spark-submit --conf spark.task.maxFailures=4 data_prep/convert_spark.py \
        --data-files 'oci://in@ns/c4/en/c4-train.*.json.gz' --remote oci://out@ns/c4/zstd \
        --compression zstd --no-progress

The same flags as `python -m data_prep.convert` (docs/converting.md, "More than one machine").
"""
import os
import sys

if __name__ == '__main__':
    # Run as a script, this file's folder would come first on sys.path, where our modules
    # (e.g. `tokenizer`, `sample`) would shadow top-level ones: import the package instead.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != here]
    from data_prep.convert import main
    sys.exit(main(prog='convert_spark.py', engine='spark'))
