# HCE container image: one static hce binary on a distroless base, run as
# an unprivileged user. Build and run steps: docs/docker.md.
#
#   docker build -t hce --build-arg VERSION=$(git describe --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) .
#   docker run --rm -p 8080:8080 -v hce-data:/data hce
#
# The default command is `hce serve` on 0.0.0.0:8080 with its data in
# /data; give `directory ...` or `node ...` as the command for the other
# processes. Every flag can come from HCE_<NAME> variables or a TOML file
# (--config), see README.md.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so source edits do not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG COMMIT=""
ARG BUILD_TIME=""
# CGO_ENABLED=0: a static binary that needs no libc in the final image.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.buildVersion=${VERSION} -X main.buildCommit=${COMMIT} -X main.buildTime=${BUILD_TIME}" \
      -o /out/hce ./cmd/hce \
 && /out/hce version \
 && mkdir -p /out/data /out/tls

# distroless/static: CA certificates, tzdata, /etc/passwd with the
# nonroot user (65532) and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hce /usr/local/bin/hce
# Mount points owned by the unprivileged user, so named volumes created
# from them are writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/tls /tls
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
ENV HCE_DATA=/data
EXPOSE 8080
# /__lbheartbeat__ answers 200 while the process takes work and 503 while
# it drains or is saturated. For HTTPS or another port set
# HCE_HEALTHCHECK_URL (and HCE_TLS_CA for a private CA).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/hce", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/hce"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
