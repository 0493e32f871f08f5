"""The image registry: the client behind a Protocol (client), its HTTP and credentials (http), and the
embedded registry:2 used when none is configured (local)."""
