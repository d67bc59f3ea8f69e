# One image for all three services; docker-compose.yml picks the service with its command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install . && useradd --system --no-create-home tripwire

USER tripwire
EXPOSE 9400 9401 9402
CMD ["tripwire", "--help"]
