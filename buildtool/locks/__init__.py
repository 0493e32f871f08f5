"""Locks: `buildtool lock` and `lock-deps` (commands), each image's Python dependency lock (deps), and
the Hugging Face Hub's kernel revisions (hub). Base digests live in matrix.lock (config.lock)."""
