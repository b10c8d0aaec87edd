"""Composer recipes for fine-tuning on OCI: C4 -> MDS -> Object Storage -> FSDP."""
from setuptools import find_packages, setup

# The stack that installs and runs together (docs/design.md); Composer 0.32.1 pins torch<2.7.1.
STACK = [
    'llm-foundry==0.22.0',
    'mosaicml==0.32.1',
    'mosaicml-streaming==0.12.0',
    'torch==2.7.0',
    'transformers==4.51.3',
    'datasets==3.6.0',
    'oci>=2.130',
    'tokenizers',
    # --format tokens: tiktoken encodes byte-level BPE several times faster per core, used only
    # where its ids are the tokenizer's (data_prep/pipeline/encoder.py checks at load)
    'tiktoken==0.14.0',
    'tqdm',
    'matplotlib',
    'zstandard',
    'orjson',  # conversion: parses each input line ~4x faster than json
    'isal',  # gunzip ~3x faster than zlib; fsspec (so datasets) uses it when installed
    'pyspark==3.5.0',  # --engine spark: the Spark OCI Data Flow runs (3.5.0, Python 3.11)
    'setuptools<81',  # llm-foundry 0.22 imports pkg_resources, removed in setuptools 81
    'psutil',  # the benchmarks' process-tree CPU and memory (Composer installs it too)
]

setup(
    name='oci-c4-recipes',
    version='0.1.0',
    description=__doc__,
    packages=find_packages(include=['callbacks', 'callbacks.*', 'data_prep', 'data_prep.*',
                                    'training', 'training.*', 'local_services',
                                    'local_services.*']),
    python_requires='>=3.10',
    install_requires=STACK,
    extras_require={'dev': ['pytest>=8', 'pytest-timeout', 'pytest-xdist', 'moto[server]>=5',
                            'boto3', 'ruff']},
    entry_points={
        'console_scripts': [
            'c4-sample=data_prep.sample:main',
            'c4-convert=data_prep.convert:main',
        ],
        # streaming's streams_registry: `stream_name: checked` in a recipe's dataset
        'streaming_streams_registry': [
            'checked=training.shards.stream:CheckedStream',
        ],
        # llm-foundry looks callbacks up here, so a yaml's `callbacks:` section can name them
        'llmfoundry_callbacks': [
            'data_wait=callbacks.data_wait:DataWait',
            'cache_stats=callbacks.cache_stats:CacheStats',
            'throughput=callbacks.throughput:Throughput',
            'run_report=callbacks.run_report:RunReport',
            # added by train.py to runs that save to oci:// (save_num_checkpoints_to_keep there)
            'bucket_keep=callbacks.bucket_keep:BucketKeep',
        ],
        # MPT's `attn_config: {attn_impl: sdpa}` (torch's fused attention; training/attention.py)
        'llmfoundry_attention_implementations': [
            'sdpa=training.attention:sdpa_attention',
        ],
    },
)
