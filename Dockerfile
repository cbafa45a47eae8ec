# One image for every production service; docker-compose.yml picks the command:
#   ohlcv init | ohlcv run ingest | ohlcv run candles | ohlcv run features | ohlcv run scoring | ohlcv run api
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from pyproject alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/ohlcv --create-home ohlcv

USER ohlcv
WORKDIR /var/lib/ohlcv
# DATA_DIR holds local stream-processing state; API_HOST must listen beyond loopback in a container.
ENV DATA_DIR=/var/lib/ohlcv \
    API_HOST=0.0.0.0 \
    API_PORT=8000
EXPOSE 8000 9100

ENTRYPOINT ["ohlcv"]
CMD ["--help"]
