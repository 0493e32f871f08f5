"""The render stage: Dockerfiles and build contexts from images/<name>/ templates and one buildx bake
file (dockerfiles), and what lands on disk under build/ (output)."""
