"""Telephony: AMI connections, AMI frames to typed events, the pure call model, the simulator."""
