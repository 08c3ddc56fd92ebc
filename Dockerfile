# syntax=docker/dockerfile:1

# llmproxy: a static binary on distroless, run as a non-root user, with the
# SQLite database (and, without ENCRYPTION_KEY, its key file) in the /data volume.
#   docker build -t llmproxy .
#   docker run -p 8080:8080 -v llmproxy-data:/data llmproxy
# deploy/deploy_test.go runs the build stage's commands and checks the result.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change reuses the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo (the SQLite driver is pure Go), so the binary runs without a libc.
ENV CGO_ENABLED=0 OUT=/out
RUN go build -trimpath -ldflags="-s -w" -o "$OUT/llmproxy" ./cmd/llmproxy
# The volume's mount point, created here because distroless has no mkdir;
# owned by the runtime user so that a fresh named volume is writable.
RUN mkdir -p "$OUT/data"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/llmproxy /llmproxy
COPY --from=build --chown=65532:65532 /out/data /data
# distroless's "nonroot" user, numeric so that runAsNonRoot can verify it.
USER 65532:65532
ENV DATABASE_PATH=/data/llmproxy.db LISTEN_ADDR=:8080
VOLUME /data
EXPOSE 8080
# No HEALTHCHECK: the image has no shell or HTTP client. Probe GET /health
# (process up) and GET /ready (database reachable) from the orchestrator.
ENTRYPOINT ["/llmproxy"]
CMD ["serve"]
