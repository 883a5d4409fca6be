# edgead runtime for x86-64 + NVIDIA GPU: native TensorRT (>= 10) + cuda-python, no torch.
# UNTESTED: no Docker daemon and no GPU where this was written (see docs/INSTALL.md).
#
# Build, from the repository root, after making the wheel (python -m build --wheel):
#   docker build -f docker/x86-nvidia.Dockerfile -t edgead:x86-nvidia .
# Run (NVIDIA Container Toolkit; engines are cached next to the bundle, so mount it writable):
#   docker run --rm --gpus all -v "$PWD/models:/models" edgead:x86-nvidia build-engine /models/m.edgead
FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-pip libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/edgead
ENV PATH=/opt/edgead/bin:$PATH
COPY dist/edgead-*-py3-none-any.whl /tmp/
RUN EDGEAD_WHEEL="$(ls /tmp/edgead-*-py3-none-any.whl)" \
    && pip install --no-cache-dir "${EDGEAD_WHEEL}[tensorrt]" "cuda-python>=12,<13" \
    && rm /tmp/edgead-*.whl
ENTRYPOINT ["edgead"]
CMD ["devices"]
