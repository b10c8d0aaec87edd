"""Local stand-ins for the services the project talks to, used offline and by the tests:
oci_store/ (OCI Object Storage)."""
