# Every corral service in one image, as Argo CD ships one image for all its components: the role
# is the command (corral-gateway, corral-registry, ...; `corral` alone is the all-in-one).
# Built from scratch around the host's release binaries and the shared libraries they load, which
# scripts/build-image.sh stages as the build context: no base image is pulled.
FROM scratch
COPY root/ /
# Its one writable folder (a volume in a deployment), the user's.
COPY --chown=65532:65532 owned/ /
USER 65532:65532
WORKDIR /var/lib/corral
ENV PATH=/usr/local/bin
EXPOSE 8080 8083
CMD ["/usr/local/bin/corral", "--data-dir", "/var/lib/corral"]
