# batch-updater as a container job: input and reports on a mounted volume, credentials from
# the pod's or task's IAM role (the standard AWS credential chain).
#
#   docker build -t batch-updater .
#   docker run --rm -v "$PWD:/work" batch-updater run --dry-run inputs/example.csv

# Build stage: only here are pip's build dependencies present.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batch_updater ./batch_updater
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheels installed, nothing else.
FROM python:3.12-slim
RUN useradd --create-home --uid 10001 batch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /work
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["batch-updater"]
CMD ["--help"]
