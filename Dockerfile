# Builds the recept binary; used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin recept

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 recept
COPY --from=build /src/target/release/recept /usr/local/bin/recept
USER recept
EXPOSE 8080 8081
ENTRYPOINT ["recept"]
CMD ["serve"]
