# The pinned nats-server (the official binary), from scratch, with corral-healthcheck so that a
# container health check can ask the monitoring endpoint; staged by scripts/build-image.sh.
FROM scratch
COPY root/ /
# Its one writable folder (a volume in a deployment), the user's.
COPY --chown=65532:65532 owned/ /
USER 65532:65532
ENV PATH=/usr/local/bin
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
