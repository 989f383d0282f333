# syntax=docker/dockerfile:1
#
# Stages: base -> deps (CPU torch + the project with [dev]) -> jupyter -> test (default target, last).
#   docker compose run --rm test          # the test job, same as `python3 dev.py test`
#   docker build -t neural-memory .       # the test image alone
#   docker build --build-arg TORCH_INDEX_URL=... .   # another wheel index for torch
#
# The virtualenv lives at /opt/venv (NEURAL_MEMORY_VENV tells dev.py), not in /app, so mounting the
# source over /app (compose's dev, lint, format and jupyter services) keeps the installed environment.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEURAL_MEMORY_VENV=/opt/venv \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app

FROM base AS deps
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch alone first, from the CPU wheel index: the largest layer and the one that changes least.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md LICENSE dev.py ./
COPY src/ src/
# The same install procedure as on a workstation (torch is already satisfied). It writes dev.py's
# install stamp, so `python dev.py test` in the image does not reinstall.
RUN python dev.py install

FROM deps AS jupyter
RUN pip install --no-cache-dir jupyterlab==4.6.6
EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--allow-root", "--notebook-dir=/app/notebooks"]

FROM deps AS test
COPY . .
CMD ["python", "dev.py", "test"]
