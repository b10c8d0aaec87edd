import sys

from data_prep.servers.oci_store.cli import main

sys.exit(main())
