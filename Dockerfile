# Production image for the web server and the RQ workers (CPU-only torch).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    STATIC_ROOT=/app/staticfiles MEDIA_ROOT=/data/media HF_HOME=/models

WORKDIR /app
# CPU wheels of torch/torchvision first, so resolving the project does not pull CUDA builds.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision
COPY pyproject.toml README.md ./
COPY searchsite ./searchsite
COPY gallery ./gallery
# rapidocr-onnxruntime requires opencv-python, which needs X11 and OpenGL libraries this slim
# image lacks; the headless build is the same cv2 module without them (35 MB smaller installed).
RUN pip install . \
    && OPENCV=$(pip show opencv-python | sed -n 's/^Version: //p') \
    && pip uninstall -y opencv-python && pip install "opencv-python-headless==$OPENCV"
COPY manage.py ./
COPY templates ./templates
COPY static ./static
# collectstatic needs settings but no servers: placeholder URLs start nothing.
RUN SECRET_KEY=build DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    python -m searchsite collectstatic --noinput

RUN useradd --create-home --uid 1000 app && mkdir -p /data/media /models && chown -R app /data /models
USER app
EXPOSE 8000
CMD ["gunicorn", "searchsite.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
