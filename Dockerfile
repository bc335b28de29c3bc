# The reconciler's own image: what environments/reconciler/deployment.yaml runs (`reconciler run`).
#
#   docker build -t ghcr.io/<org>/model-gitops-reconciler:<version> .
#
# It holds the core install plus [canary] (the Mann-Whitney judge) and [report] (the rollout chart),
# installed from requirements/reconciler-image.lock so two builds of one commit get the same
# packages; kubectl (with kustomize) and sops come as wheels of that lock. The system packages are
# what the reconciler shells out to: git (the repository), gpg and ssh-keygen (commit signature
# verification, docs/trust.md). It runs as the non-root user 10001 the Deployment's
# securityContext names, with a read-only root filesystem: HOME and every cache live under /tmp
# and /work, the two emptyDir volumes of the Deployment.
FROM python:3.11.14-slim-bookworm

# Debian's security updates replace exact package versions, so apt pins would break rebuilds; the
# base image tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git gnupg openssh-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/reconciler
COPY requirements/reconciler-image.lock requirements/reconciler-image.lock
RUN pip install --no-cache-dir --no-deps -r requirements/reconciler-image.lock
# setuptools reads every extra's file (pyproject's dynamic optional-dependencies), so all are copied
COPY pyproject.toml README.md requirements-test.txt ./
COPY requirements/ requirements/
COPY pipelines/ pipelines/
COPY reconciler/ reconciler/
# --no-deps: everything came from the lock above; `pip check` fails the build if the lock misses one
RUN pip install --no-cache-dir --no-deps . && pip check && reconciler --version

RUN useradd --uid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reconciler
USER 10001
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /work
EXPOSE 8080
ENTRYPOINT ["reconciler"]
CMD ["run", "--help"]
