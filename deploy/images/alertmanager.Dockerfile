# Alertmanager from Debian's `prometheus-alertmanager` package, on an empty base.
# monitoring/alertmanager.yml is mounted at /etc/alertmanager. Prepared by deploy/build-images.sh.
FROM scratch
COPY rootfs/ /
COPY --chown=65534:65534 data/ /alertmanager/
VOLUME ["/alertmanager"]
USER 65534:65534
EXPOSE 9093
ENTRYPOINT ["/usr/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager", "--cluster.listen-address="]
