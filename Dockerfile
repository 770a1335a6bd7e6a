# syntax=docker/dockerfile:1
# driftline in one image: the worker (`driftline run`, the default), and, built with EXTRAS=build, the
# one-shot commands the compose stack runs with it (`driftline package`, `driftline produce`).
# Build: docker build . (a lean worker), or docker compose build (EXTRAS=build, see docker-compose.yml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# The dependencies first, pinned by constraints.txt, in their own layer: a code change does not
# reinstall them. The list is read from pyproject.toml so that it cannot drift from the package's.
# By default the image is a lean worker (`driftline run`: no scikit-learn, skl2onnx, onnx or
# matplotlib); EXTRAS adds optional extras, e.g. --build-arg EXTRAS=build for `driftline package`
# and `driftline produce scenario` (the compose stack's one-shot services run those).
ARG EXTRAS=""
COPY pyproject.toml constraints.txt ./
RUN python - > /tmp/requirements.txt <<'PY'
import os
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [e.strip() for e in os.environ.get("EXTRAS", "").split(",") if e.strip()]
requirements, seen = list(project["dependencies"]), set()
while wanted:
    extra = wanted.pop()
    if extra in seen:
        continue
    seen.add(extra)
    for requirement in project["optional-dependencies"][extra]:
        if requirement.startswith("driftline["):
            wanted.extend(requirement[len("driftline[") : -1].split(","))
        else:
            requirements.append(requirement)
print("\n".join(requirements))
PY
RUN pip install -c constraints.txt -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY README.md ./
COPY agent ./agent
COPY producers ./producers
COPY schemas ./schemas
RUN pip install --no-deps . && rm -rf build *.egg-info

# Not root: the worker only needs its model repository (read) and its data directory (write). Both
# exist in the image, owned by the user, so that named volumes mounted there start out writable.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin driftline \
    && mkdir -p /models /data \
    && chown driftline:driftline /models /data
USER driftline
WORKDIR /data

ENV DRIFTLINE_SERVING__MODEL_REPOSITORY=/models \
    DRIFTLINE_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib

EXPOSE 6066
ENTRYPOINT ["driftline"]
CMD ["run"]
