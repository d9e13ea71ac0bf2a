"""KServe v2 / Triton gRPC front door: ``inference.GRPCInferenceService`` on the same pipeline as HTTP.

``launch`` is what the daemon imports to start the server processes (settings, entry point; no grpc),
``server`` runs one of them, ``service`` implements the RPCs, ``stream`` runs ModelStreamInfer,
``inference`` takes one request through the shared generation pipeline, ``tensors`` converts KServe tensors,
``schema`` declares the tensors a model takes and returns, ``metadata`` describes the models, ``proto`` holds
the .proto and its generated modules.
"""
