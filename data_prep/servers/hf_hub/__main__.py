import sys

from data_prep.servers.hf_hub.cli import main

sys.exit(main())
