import sys

from local_services.oci_store.cli import main

sys.exit(main())
