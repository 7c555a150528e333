"""Core's gRPC links to gateways: desired state, revision push, stats intake, link state."""
