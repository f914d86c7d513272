# nginx from Debian's `nginx` package, on an empty base: the binary, the libraries `ldd` names,
# /etc/passwd and /etc/group (the `nginx` worker user), and the folders nginx writes
# (/var/lib/nginx, /var/log/nginx, /run). The config and the TLS files are mounted at run time
# (docker-compose.prod.yml). Prepared by deploy/build-images.sh; nothing is pulled.
FROM scratch
COPY rootfs/ /
EXPOSE 80 443
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/sbin/nginx", "-g", "daemon off;"]
