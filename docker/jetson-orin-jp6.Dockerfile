# edgead runtime for Jetson Orin (Nano, NX, AGX) on JetPack 6 (L4T R36.4: Python 3.10,
# CUDA 12.6, TensorRT 10.3 from the base image), no torch.
# UNTESTED: no Jetson and no Docker daemon where this was written (see docs/INSTALL.md).
#
# Build on the Jetson, from the repository root, after making the wheel (on any machine:
# python -m build --wheel; the wheel is pure Python):
#   docker build -f docker/jetson-orin-jp6.Dockerfile -t edgead:jp6 .
# Run (NVIDIA container runtime; engines are cached next to the bundle, so mount it writable):
#   docker run --rm --runtime nvidia -v "$PWD/models:/models" edgead:jp6 build-engine /models/m.edgead
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
# --system-site-packages: TensorRT's Python module comes from JetPack, not from PyPI
RUN python3 -m venv --system-site-packages /opt/edgead
ENV PATH=/opt/edgead/bin:$PATH
COPY dist/edgead-*-py3-none-any.whl /tmp/
RUN EDGEAD_WHEEL="$(ls /tmp/edgead-*-py3-none-any.whl)" \
    && pip install --no-cache-dir onnxruntime-gpu --extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126 \
    && pip install --no-cache-dir "cuda-python>=12.2,<13" numpy faiss-cpu opencv-python-headless pillow typer rich \
    && pip install --no-cache-dir --no-deps "$EDGEAD_WHEEL" \
    && rm /tmp/edgead-*.whl
ENTRYPOINT ["edgead"]
CMD ["devices"]
