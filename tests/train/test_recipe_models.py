"""The hf_causal_lm recipes' model sections build on the stock install: each
recipe's `model:` as written, only its weights swapped for a tiny Qwen2 made from
tests/data/qwen2_tiny/config.json, through llm-foundry's own steps (its config transforms,
process_init_device with the recipe's fsdp_config as on 8 GPUs, build_tokenizer,
build_composer_model), with flash_attn made unimportable. Before: `use_flash_attention_2: true`
raised "flash-attention 2 is not installed" here, after every rank had started."""
import copy
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from training import checks
from training.config import load_config

HF_RECIPES = ['yamls/c4_zstd.yaml', 'yamls/c4_uncompressed.yaml', 'yamls/gpu_check/qwen2_fsdp.yaml']
TINY = ROOT / 'tests' / 'data' / 'qwen2_tiny'


@pytest.fixture(scope='module')
def tiny_qwen2(tmp_path_factory) -> Path:
    """A Hugging Face checkpoint folder (config + random weights) of the tiny Qwen2."""
    from transformers import AutoConfig, AutoModelForCausalLM
    out = tmp_path_factory.mktemp('qwen2_tiny')
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY)).save_pretrained(out)
    return out


def build(recipe: str, overrides: list[str]):
    """The model as llm-foundry's train() builds it from this recipe (command_utils/train.py)."""
    from llmfoundry.command_utils.train import TRAIN_CONFIG_KEYS, TrainConfig
    from llmfoundry.utils.builders import build_composer_model, build_tokenizer
    from llmfoundry.utils.config_utils import make_dataclass_and_log_config, process_init_device
    cfg = load_config(str(ROOT / recipe), overrides)
    _, train_cfg = make_dataclass_and_log_config(cfg, TrainConfig, TRAIN_CONFIG_KEYS,
                                                 transforms='all')
    model_cfg = copy.deepcopy(train_cfg.model)
    init_context = process_init_device(model_cfg, copy.deepcopy(train_cfg.fsdp_config), None)
    tokenizer = build_tokenizer(train_cfg.tokenizer['name'], train_cfg.tokenizer.get('kwargs', {}))
    name = model_cfg.pop('name')
    return build_composer_model(name=name, tokenizer=tokenizer, init_context=init_context,
                                master_weights_dtype=model_cfg.pop('master_weights_dtype', None),
                                cfg=model_cfg)


@pytest.mark.parametrize('recipe', HF_RECIPES)
def test_recipe_model_builds_on_the_stock_install_with_sdpa(recipe, tiny_qwen2, tokenizer_dir,
                                                            monkeypatch):
    as_written = load_config(str(ROOT / recipe), [])
    assert as_written.model.init_device == 'mixed' and 'fsdp_config' in as_written
    checks.check_packages(as_written, recipe)  # asks for nothing that is not installed
    monkeypatch.setitem(sys.modules, 'flash_attn', None)  # `import flash_attn` raises
    overrides = [f'model.pretrained_model_name_or_path={tiny_qwen2}',
                 f'tokenizer.name={tokenizer_dir}']

    # rank 0 of a node (init_device mixed): built on the CPU, with the weights when pretrained
    model = build(recipe, overrides).model
    assert model.config._attn_implementation == 'sdpa'
    assert model.config.num_hidden_layers == 2 and model.device.type == 'cpu'
    if as_written.model.pretrained:
        from safetensors.torch import load_file  # rank 0 loaded the saved weights
        saved = load_file(str(tiny_qwen2 / 'model.safetensors'))
        assert torch.equal(model.model.embed_tokens.weight, saved['model.embed_tokens.weight'])
    ids = torch.randint(0, 4096, (2, 16))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 16, 4096) and torch.isfinite(logits).all()

    # the other ranks (mixed: meta device, no weights; FSDP's sync_module_states fills them)
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    model = build(recipe, overrides).model
    assert model.config._attn_implementation == 'sdpa' and model.device.type == 'meta'
