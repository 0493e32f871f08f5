"""The build stage: bake, push the immutable tag, verify (stage); the container engine behind a
Protocol (engine); the built image as an OCI layout (oci); what a build reports (result); a commit
the registry already holds (earlier); building again to compare digests (reproduce)."""
