# worker-embed-runpod-torch211-cu130: RunPod serverless worker (worker-embed) on runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel.
# Rendered by buildtool from images/worker-embed/Dockerfile.j2; edit the template, not this file.
ARG BASE_IMAGE=runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel
FROM ${BASE_IMAGE}
# Every RUN below gives the same layer on every rebuild: it runs with SOURCE_DATE_EPOCH set (pip
# writes .pyc files keyed by the source's hash), and what it wrote gets that time (1980-01-01: the
# earliest a zip, or a wheel, holds). The builder pushes the layers as built, so a one-line change
# moves one layer. Pair with plain_shell() at the end; the reproducible-layers rule checks the shapes.
SHELL ["/bin/sh", "-c", "touch /.buildtool-step && SOURCE_DATE_EPOCH=315532800 /bin/sh -c \"$1\" && { find / -xdev -newer /.buildtool-step -exec touch -h -d @315532800 {} + 2>/dev/null; rm -f /.buildtool-step; touch -h -d @315532800 /; }", "buildtool-run"]

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0" \
    MODEL_VOLUME_PATH=/runpod-volume/models/all-MiniLM-L6-v2
# The base ships /usr/local/cuda/compat, whose libcuda.so shadows the host driver's: put the host's
# library directory first (seed bug 2, CUDA 13.0 images on driver 580 hosts).
ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH}

# The directories the steps below copy into and work in, made by a RUN (whose file times the shell
# above sets): a WORKDIR or COPY that makes one gives it the build's time, another layer each build.
RUN mkdir -p /app /opt/smoke/smoke
WORKDIR /app
# Dependencies first, the worker's own code last: a handler change rebuilds only the last layer.
# Exactly the locked packages, hash-checked (buildtool lock-deps), and nothing resolved against the
# index: --no-deps, so a release published after the lock was written can neither enter the image
# nor stop the install (Debian 12's pip 23.0 looks a locked package up again when another one asks for
# it with an extra, and refuses the newer release it finds there as unpinned). smoke/lockcheck.py then fails
# the build naming any dependency the lock lacks. The lock is mounted, not copied: the layer holds
# what pip installed, and a change of the lock still rebuilds it.
RUN --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    --mount=type=bind,source=smoke/lockcheck.py,target=/tmp/lockcheck.py \
    python3 -m pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements.lock \
 && python3 /tmp/lockcheck.py /tmp/requirements.lock

LABEL org.runpod-images.archs="sm_80,sm_86,sm_89,sm_90" \
      org.runpod-images.cuda="13.0" \
      org.runpod-images.cudnn="9.19" \
      org.runpod-images.driver-floor="580.65" \
      org.runpod-images.flash-attention="" \
      org.runpod-images.gpus="A100,H100,H200,A40,RTX4090" \
      org.runpod-images.image="worker-embed" \
      org.runpod-images.python="3.11" \
      org.runpod-images.torch="2.11.0+cu130" \
      org.runpod-images.variant="worker-embed-runpod-torch211-cu130"

# The smoke suite (python -m smoke, with PYTHONPATH=/opt/smoke) and what it expects of this image.
# Onto /opt/smoke/smoke, which directories() made.
COPY smoke/ /opt/smoke/smoke/
ENV SMOKE_HANDLER="/app/handler.py" \
    SMOKE_CUDA="13.0" \
    SMOKE_CUDNN="9.19" \
    SMOKE_DRIVER_FLOOR="580.65" \
    SMOKE_FLASH_ATTENTION="" \
    SMOKE_INPUT="{\"texts\": [\"RunPod serverless worker\", \"hello world\"]}" \
    SMOKE_OUTPUT="embeddings" \
    SMOKE_OUTPUT_SHAPE="2,384" \
    SMOKE_TORCH="2.11.0+cu130" \
    SMOKE_VARIANT="worker-embed-runpod-torch211-cu130"

# The worker's own code: app/ of the template, copied whole onto /app.
COPY app/ /app/
# Images built FROM this one get the usual shell back.
SHELL ["/bin/sh", "-c"]
CMD ["python", "-u", "/app/handler.py"]
