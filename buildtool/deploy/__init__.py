"""The deploy stage: RunPod API v2 request bodies for a built image (specs), RunPod's GPU catalog
against a spec (catalog), and the REST client that sends them (runpod_api)."""
