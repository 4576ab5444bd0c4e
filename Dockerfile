# The hpo image: the project with its PostgreSQL driver, run as a non-root user.
# Fashion-MNIST comes from Debian's package inside the image (30 MB), at the
# path the study files expect; mount another folder over it to use other data.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 hpo
WORKDIR /app
# The user may write the default SQLite file (hpo.db) here when HPO_STORAGE is unset.
RUN chown hpo:hpo /app
# Mount point of the compose volume of trial weights; a new named volume takes this owner.
RUN mkdir /artifacts && chown hpo:hpo /artifacts
COPY pyproject.toml README.md ./
COPY models ./models
COPY hpo ./hpo
COPY studies ./studies
RUN pip install --no-cache-dir '.[postgres,dashboard]'

USER hpo
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["hpo"]
CMD ["--help"]
