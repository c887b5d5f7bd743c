# The kit's programs, already built (build.sh --binaries DIR puts them in the build
# context), on the local Debian base: the image deploy/Dockerfile makes, without
# compiling again.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN useradd --system --no-create-home --shell /usr/sbin/nologin tspi
COPY bin/ /usr/local/bin/
RUN for b in producer receiver generator archiver replayer console player alarmer; do "$b" --version >/dev/null; done
USER tspi
ENTRYPOINT []
