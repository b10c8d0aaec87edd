"""What the driver (convert.py) and the engines (pool.py, spark.py) hand each other: the run's
settings, one part to convert (PartTask) and what an attempt at it returns (PartResult).

Plain dataclasses, picklable: they cross the pool's process boundary and Spark's task
serialization. Here, not in convert.py, so that part.py and spark.py (run in workers and
executors) can import them without the driver.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConvertConfig:
    remote: str
    data_files: str | list[str] | None = None
    dataset: str | None = None
    subset: str | None = None
    split: str = 'train'
    out_split: str | None = None          # folder under remote; default: split
    compression: str | None = None        # None, 'zstd', 'zstd:7', any streaming compression
    format: str = 'text'                  # 'text' or 'tokens'
    tokenizer: str | None = None
    concat_tokens: int = 2048
    bos_text: str = ''
    eos_text: str | None = None           # None: the tokenizer's eos token
    encoder: str = 'auto'                 # tokens: auto (tiktoken where its ids are the
                                          # tokenizer's, else tokenizers), tiktoken, tokenizers
    workers: int = 0                      # 0: the cores
    upload_workers: int = 32              # upload threads in all, shared by the workers
    max_docs: int | None = None
    size_limit: int | str = 1 << 26       # shard size before compression (streaming default)
    hashes: list[str] = field(default_factory=lambda: ['xxh64'])
    on_bad_record: str = 'error'          # or 'skip'
    engine: str = 'pool'                  # 'pool' (one machine) or 'spark' (spark.py)
    spark_master: str | None = None       # --engine spark: None = the active session, or
                                          # spark-submit's, or local[*]
    tmp_dir: str | None = None            # local staging of shards for bucket remotes
    progress: bool = True
    replace: bool = False                 # may delete parts converted from other inputs
    estimate_only: bool = False           # plan and say what it would cost (estimate.py), stop


@dataclass(frozen=True)
class PartTask:
    """One input file to convert into REMOTE/SPLIT/PART/, as the driver planned it."""
    cfg: ConvertConfig
    part: str                             # part-00003: the input's place in the sorted inputs
    split: str                            # the folder under the remote
    url: str                              # the input file (local path or URL)
    limit: int | None                     # at most this many documents (--max-docs' share)
    digest: str                           # settings + input path; recorded in the manifest
    identity: dict                        # the input's identity when planned (identity.py)
    upload_threads: int = 1
    tmp_root: str | None = None           # local staging of shards for a bucket remote
    attempt_number: int = 0               # Spark's task attempt (0 for the pool)


@dataclass
class PartResult:
    """A committed part, as one attempt at it returns it: the part's manifest (this attempt's,
    or the one of the attempt that committed first) and this attempt's figures."""
    manifest: dict
    pid: int
    cpu_seconds: float
    committed: bool                       # whether this attempt's manifest is the part's
    first_record_at: float | None = None  # time.monotonic(), one clock for every process
    done_at: float | None = None          # of a machine (start-up and end costs)
    encoder: str | None = None            # tokens: the encoder this attempt used (describe())

    @property
    def part(self) -> str:
        return self.manifest['part']

    @property
    def documents(self) -> int:
        return self.manifest['documents']

    @property
    def samples(self) -> int:
        return self.manifest['samples']

    @property
    def input_bytes(self) -> int:
        return self.manifest['input_bytes']

    @property
    def seconds(self) -> float:
        return self.manifest['seconds']

    @property
    def stored_bytes(self) -> int:
        return sum(self.manifest['shards'].values()) + self.manifest['index_bytes']

    @property
    def objects(self) -> int:
        return len(self.manifest['shards']) + 2  # the shards, the part index, the manifest
