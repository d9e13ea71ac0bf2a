"""The per-HTTP-process state: settings, the model table (discovery), the engine client, the gateway."""
