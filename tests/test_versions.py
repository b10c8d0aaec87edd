"""The modules that reach into streaming's, Composer's and llm-foundry's internals are pinned,
through one check (data_prep/versions.py), to the versions they were read from: the installed
ones, and the ones setup.py pins; another version fails in one line before anything is
patched."""
import importlib
import re

import pytest

from data_prep import versions
from tests.helpers import ROOT

PINS = (versions.STREAMING, versions.COMPOSER, versions.LLMFOUNDRY)


@pytest.mark.parametrize('pin', PINS, ids=lambda p: p[0])
def test_pinned_to_the_installed_version_and_to_setup_py(pin):
    dist, module, supported = pin
    assert importlib.import_module(module).__version__ == supported
    assert f"'{dist}=={supported}'" in (ROOT / 'setup.py').read_text()
    versions.require(pin, 'hooks.py')


def test_every_module_that_patches_a_library_checks_its_version():
    """A module that assigns into streaming's, Composer's or llm-foundry's modules or classes
    names the version check (the hooks are listed in data_prep/versions.py's docstring)."""
    patching = re.compile(r'^\s*(StreamingDataset|Trainer|config_cls|dataset_module|'
                          r'prefix_module|utils|file_helpers|train)\.[\w.\[\]\']+ = ', re.M)
    offenders = []
    for path in [*ROOT.glob('training/**/*.py'), *ROOT.glob('data_prep/**/*.py')]:
        text = path.read_text()
        if patching.search(text) and 'versions.require(' not in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_another_version_fails_in_one_line_before_patching(monkeypatch):
    import streaming
    from streaming import StreamingDataset

    from training.shards import shard_errors
    monkeypatch.setattr(streaming, '__version__', '0.13.0')
    before = StreamingDataset.__dict__.get('prepare_shard')
    monkeypatch.delattr(StreamingDataset, '_loud_shard_errors', raising=False)
    with pytest.raises(versions.UnsupportedVersion) as err:
        shard_errors.patch_dataset()
    message = str(err.value)
    assert '\n' not in message and '0.13.0' in message and '0.12.0' in message
    assert 'training/shards/shard_errors.py' in message
    assert StreamingDataset.__dict__.get('prepare_shard') is before
