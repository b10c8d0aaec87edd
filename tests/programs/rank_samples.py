"""Launched by `composer -n 2`: iterates one epoch of the recipe's train loader on this rank
and writes a digest of every sample it saw, so a test can check the ranks are disjoint."""
import hashlib
import json
import sys

from composer.utils import dist
from llmfoundry.data.text_data import build_text_dataloader
from omegaconf import OmegaConf as om
from transformers import AutoTokenizer

yaml_path, out_prefix, *overrides = sys.argv[1:]
cfg = om.merge(om.load(yaml_path), om.from_cli(overrides))
om.resolve(cfg)
dist.initialize_dist('cpu')
tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer.name)
loader_cfg = om.to_container(cfg.train_loader)
loader_cfg.pop('name')
loader = build_text_dataloader(tokenizer=tokenizer, device_batch_size=4, **loader_cfg).dataloader
seen = [
    hashlib.sha1(row.numpy().tobytes()).hexdigest()
    for batch in loader
    for row in batch['input_ids']
]
with open(f'{out_prefix}.{dist.get_global_rank()}.json', 'w') as f:
    json.dump(seen, f)
