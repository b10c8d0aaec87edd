"""Every check train.py runs before training starts, on every rank, before any model,
tokenizer, dataloader worker or download: each mistake is one line naming the recipe and the
key (ConfigError; Missing for what is not installed or reachable here), not a traceback from
deep inside llm-foundry, Composer or streaming after every rank has started. In the order
training/run.py runs them:

- recipe.py    what the recipe alone tells (FSDP version and keys, llm-foundry's schema, dataset
               keys it would drop, the export folder);
- remotes.py   every remote's credentials (and, once our extensions are installed, no other
               live run on the same shard cache);
- machine.py   what this machine has for it (CUDA GPUs, folders, packages, the tokenizer and
               model sources, TMPDIR);
- datasets.py  the datasets as their records say they were made, against the recipe (tokenizer,
               sample length, vocabulary).
"""
from training.checks.datasets import check_datasets
from training.checks.machine import (
    TMPDIR_MAX,
    Missing,
    check_machine,
    check_packages,
    check_temp_dir,
    quiet_known_warnings,
)
from training.checks.recipe import check_fsdp, check_recipe
from training.checks.remotes import check_cache_free, check_remotes

__all__ = ['TMPDIR_MAX', 'Missing', 'check_cache_free', 'check_datasets', 'check_fsdp',
           'check_machine', 'check_packages', 'check_recipe', 'check_remotes',
           'check_temp_dir', 'quiet_known_warnings']
