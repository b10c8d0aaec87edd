"""Fine-tune with a recipe: `composer train.py yamls/<recipe>.yaml [key=value ...]`.

llm-foundry's trainer after our checks and extensions, on every rank: training/run.py.
Overrides are llm-foundry's: `max_duration=10ba`, `run_name=try2`,
`variables.data_remote=oci://bucket@namespace/c4/zstd`. docs/training.md has the rest.
"""
import sys

from training.run import main

if __name__ == '__mp_main__':
    # A process Composer spawns to upload checkpoints imports this file under this name before
    # it builds its object store: ours must be there too (the namespaces come in the env).
    from training import checkpoints
    checkpoints.install()

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
