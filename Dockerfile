# The clothes-search image: the API (`clothes-search serve`) and the Celery workers (`clothes-search worker`).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clothes_search clothes_search
COPY ingestion ingestion
COPY search search
COPY workers workers
COPY db db
COPY migrations migrations
# model files in the image, beside the code; the embedded defaults' files (if used) in /app/data
ENV CLOTHES_SEARCH_MODELS_DIR=/app/models CLOTHES_SEARCH_DATA_DIR=/app/data
RUN pip install --no-cache-dir . && clothes-search models fetch-mediapipe
EXPOSE 8000
CMD ["clothes-search", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
