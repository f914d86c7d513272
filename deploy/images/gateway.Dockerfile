# openclaw-node: the binary and the shared libraries `ldd` names, on an empty base, plus a static
# busybox used only to probe /ready (`busybox wget`: docker-compose.prod.yml's health check and
# deploy/rolling-update.sh); no shell links are installed.
# The context is prepared by deploy/build-images.sh; nothing is pulled.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
ENV OPENCLAW_DATA_DIR=/data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3000 7000 7001
ENTRYPOINT ["/usr/local/bin/openclaw-node"]
