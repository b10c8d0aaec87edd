"""`composer train.py yamls/<recipe>.yaml [key=value ...]`: llm-foundry's trainer plus our layer.

Before llm-foundry builds anything, this registers our OCI transport in streaming and checks
the config, so a typo or missing credentials fail in one line instead of after worker start-up.
"""
import sys

from llmfoundry.command_utils import train_from_yaml


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    train_from_yaml(argv[0], argv[1:])


if __name__ == '__main__':
    main(sys.argv[1:])
