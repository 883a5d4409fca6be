# edgead runtime for x86-64 CPUs (ONNX Runtime + OpenVINO CPU/iGPU), no torch.
# UNTESTED: no Docker daemon where this was written (see docs/INSTALL.md).
#
# Build, from the repository root, after making the wheel (python -m build --wheel):
#   docker build -f docker/x86-cpu.Dockerfile -t edgead:x86-cpu .
# Run (bundle and images in ./models):
#   docker run --rm -v "$PWD/models:/models" edgead:x86-cpu predict /models/m.edgead /models/parts --json
# Intel iGPU: add --device /dev/dri (and install intel-opencl-icd in the image).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY dist/edgead-*-py3-none-any.whl /tmp/
RUN EDGEAD_WHEEL="$(ls /tmp/edgead-*-py3-none-any.whl)" \
    && pip install --no-cache-dir "${EDGEAD_WHEEL}[openvino]" \
    && rm /tmp/edgead-*.whl \
    && python -c "import importlib.util as u; assert u.find_spec('torch') is None"
RUN useradd --create-home edgead
USER edgead
ENTRYPOINT ["edgead"]
CMD ["devices"]
