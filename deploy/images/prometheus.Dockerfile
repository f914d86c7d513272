# Prometheus from Debian's `prometheus` package, on an empty base. The config
# folder (monitoring/) is mounted at /etc/prometheus. Prepared by deploy/build-images.sh.
FROM scratch
COPY rootfs/ /
COPY --chown=65534:65534 data/ /prometheus/
VOLUME ["/prometheus"]
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
