# pesflow image: one image for the API/dashboard and the worker (docker-compose.yml).
# Prefect 3.8.8 everywhere: this image pins it (constraints.txt) and the prefect-server service
# runs the official prefecthq/prefect:3.8.8 image, so client and server versions match.
#
# torch: the CPU build comes from the PyTorch CPU index (--extra-index-url below). The local
# wheel directory some development machines use does not exist inside Docker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    PESFLOW_DATA_DIR=/data

# pg_isready / psql for health checks and waiting on the database; curl for HTTP checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY mlip_core/ mlip_core/
COPY dft_adapters/ dft_adapters/
COPY database/ database/
COPY workflows/ workflows/
COPY api/ api/
COPY structure_checks/ structure_checks/
COPY pesflow/ pesflow/
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt '.[cluster]' \
    && python -c "import prefect, sys; sys.exit(prefect.__version__ != '3.8.8')"

# Non-root user; /data holds checkpoints, scratch and (without PostgreSQL) the SQLite file.
RUN useradd --create-home --uid 10001 pesflow && mkdir -p /data && chown pesflow:pesflow /data
USER pesflow
VOLUME ["/data"]

# The `pesflow` command line (`python -m pesflow`, with `serve` and `token`).
ENTRYPOINT ["python", "-m", "pesflow"]
CMD ["--help"]
