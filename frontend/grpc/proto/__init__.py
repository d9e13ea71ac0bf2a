"""``kserve.proto`` and the modules grpcio-tools generated from it (``scripts/gen-grpc``; do not edit them)."""
