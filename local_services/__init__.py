"""Local stand-ins for the services the project talks to, used offline and by the tests:
oci_store/ (OCI Object Storage) and hf_hub/ (the Hugging Face Hub, serving allenai/c4 `en`
from the offline sample)."""
