# Placeholder until the packaging issue: installs the agent on a slim Python base and runs it as non-root.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home autopilot
USER 10001
ENTRYPOINT ["kafka-autopilot"]
