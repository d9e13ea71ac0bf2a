"""The registry process: worker registration, leases and snapshots for the gateways."""
