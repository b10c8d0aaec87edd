import sys

from local_services.hf_hub.cli import main

sys.exit(main())
