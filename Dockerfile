FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
ENV ATALAIA_DATA_DIR=/var/lib/atalaia
CMD ["atalaia", "worker"]
