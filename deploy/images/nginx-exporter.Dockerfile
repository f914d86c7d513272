# The nginx exporter from Debian's `prometheus-nginx-exporter` package, on an empty base; it
# reads nginx's stub_status. Prepared by deploy/build-images.sh.
FROM scratch
COPY rootfs/ /
USER 65534:65534
EXPOSE 9113
ENTRYPOINT ["/usr/bin/nginx-prometheus-exporter"]
