# node_exporter from Debian's `prometheus-node-exporter` package, on an empty base: the host's
# CPU, memory, disk and network (the host's /proc, /sys and / are mounted read-only by
# docker-compose.prod.yml). Prepared by deploy/build-images.sh.
FROM scratch
COPY rootfs/ /
USER 65534:65534
EXPOSE 9100
ENTRYPOINT ["/usr/bin/node_exporter"]
