FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY mappers ./mappers
COPY streams ./streams
COPY hub ./hub
RUN pip install --no-cache-dir '.[rocksdb]'
USER 10001
ENTRYPOINT ["hub"]
